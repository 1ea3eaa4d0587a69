//! Owns `WatchIds` and `AutoWatchIds`: a stream's watch id allocation (etcd `watcher.go
//! watchStream.Watch`, docs/etcd-semantics.md §6.2 step 3).

use std::collections::HashSet;

use super::watcher::WatchId;
use crate::error::{Error, Result};

/// The auto-id counter of a stream, for a stream that already keeps its live ids elsewhere (a
/// map of its watchers), so it does not pay for a second set of them. Auto ids start at 0,
/// skip ids in use, and are never reused while the stream lives (etcd case B2).
#[derive(Debug, Default, Clone, Copy)]
pub struct AutoWatchIds {
    next: WatchId,
}

impl AutoWatchIds {
    /// Returns a counter that starts at 0.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Picks `requested`, or the next free auto id when `requested` is 0 (etcd `AutoWatchID`);
    /// `in_use` says which ids the stream holds. The caller records the id as in use.
    ///
    /// Deliberate difference (docs/etcd-semantics.md §10 quirk 8): etcd accepts negative explicit
    /// ids, and -1 would collide with stream-wide progress responses; we reject them.
    ///
    /// # Errors
    /// `DuplicateWatchId` if the id is in use, `NegativeWatchId` if it is below 0.
    pub fn allocate(&mut self, requested: WatchId, in_use: impl Fn(WatchId) -> bool) -> Result<WatchId> {
        if requested < 0 {
            return Err(Error::NegativeWatchId);
        }
        if requested == 0 {
            while in_use(self.next) {
                self.next += 1;
            }
            let id = self.next;
            self.next += 1;
            return Ok(id);
        }
        if in_use(requested) {
            return Err(Error::DuplicateWatchId);
        }
        Ok(requested)
    }
}

/// The ids a stream has handed out: an [`AutoWatchIds`] counter with its own set of live ids.
#[derive(Debug, Default)]
pub struct WatchIds {
    auto: AutoWatchIds,
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
    /// Deliberate difference (docs/etcd-semantics.md §10 quirk 8): etcd accepts negative explicit
    /// ids, and -1 would collide with stream-wide progress responses; we reject them.
    ///
    /// # Errors
    /// `DuplicateWatchId` if the id is in use, `NegativeWatchId` if it is below 0.
    pub fn allocate(&mut self, requested: WatchId) -> Result<WatchId> {
        let id = self.auto.allocate(requested, |id| self.used.contains(&id))?;
        self.used.insert(id);
        Ok(id)
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

    #[test]
    fn auto_ids_against_an_outside_set() {
        let mut used = HashSet::new();
        let mut auto = AutoWatchIds::new();
        for requested in [1, 0, 0, 1, 0] {
            if let Ok(id) = auto.allocate(requested, |id| used.contains(&id)) {
                assert!(used.insert(id));
            }
        }
        let mut got: Vec<WatchId> = used.iter().copied().collect();
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3], "auto ids skip the explicit 1; the duplicate 1 is refused");
        used.remove(&0);
        assert_eq!(auto.allocate(0, |id| used.contains(&id)).ok(), Some(4), "never reused");
        assert!(matches!(auto.allocate(-1, |_| false), Err(Error::NegativeWatchId)));
    }
}
