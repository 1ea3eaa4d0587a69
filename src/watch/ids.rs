//! Owns `WatchIds`: a stream's watch id allocation (etcd `watcher.go watchStream.Watch`,
//! spec §6.2 step 3).

use std::collections::HashSet;

use super::watcher::WatchId;
use crate::error::{Error, Result};

/// The ids a stream has handed out. Auto ids start at 0, skip ids in use, and are never
/// reused while the stream lives (etcd case B2).
#[derive(Debug, Default)]
pub struct WatchIds {
    next: WatchId,
    used: HashSet<WatchId>,
}

impl WatchIds {
    /// Returns an allocator with no id in use.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `requested`, or the next free auto id when `requested` is 0 (etcd `AutoWatchID`).
    ///
    /// Deliberate difference (spec §10 quirk 8): etcd accepts negative explicit ids, and -1
    /// would collide with stream-wide progress responses; we reject them.
    ///
    /// # Errors
    /// `DuplicateWatchId` if the id is in use, `NegativeWatchId` if it is below 0.
    pub fn allocate(&mut self, requested: WatchId) -> Result<WatchId> {
        if requested < 0 {
            return Err(Error::NegativeWatchId);
        }
        if requested == 0 {
            while self.used.contains(&self.next) {
                self.next += 1;
            }
            let id = self.next;
            self.next += 1;
            self.used.insert(id);
            return Ok(id);
        }
        if !self.used.insert(requested) {
            return Err(Error::DuplicateWatchId);
        }
        Ok(requested)
    }

    /// Frees `id` for explicit reuse; returns whether it was in use.
    pub fn release(&mut self, id: WatchId) -> bool {
        self.used.remove(&id)
    }

    /// Returns whether `id` is in use.
    #[must_use]
    pub fn contains(&self, id: WatchId) -> bool {
        self.used.contains(&id)
    }

    /// Returns how many ids are in use.
    #[must_use]
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Returns whether no id is in use.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // B2 TestWatcherRequestsCustomID.
    #[test]
    fn b2_watcher_requests_custom_id() {
        let mut ids = WatchIds::new();
        assert_eq!(ids.allocate(1).ok(), Some(1));
        assert!(matches!(ids.allocate(1), Err(Error::DuplicateWatchId)));
        assert_eq!(ids.allocate(0).ok(), Some(0));
        assert_eq!(ids.allocate(0).ok(), Some(2), "auto ids skip ids taken explicitly");
    }

    #[test]
    fn auto_ids_are_never_reused_and_negative_ids_are_rejected() {
        let mut ids = WatchIds::new();
        let a = ids.allocate(0).expect("id");
        assert!(ids.release(a));
        assert_ne!(ids.allocate(0).expect("id"), a);
        assert!(matches!(ids.allocate(-1), Err(Error::NegativeWatchId)));
        assert!(!ids.release(42));
    }
}
