//! Owns `EventBatch`: the events one watcher is owed in one response, at most
//! `watch_batch_max_revs` distinct revisions and never a split revision (etcd
//! `watcher_group.go eventBatch`, docs/etcd-semantics.md §6.7).

use std::sync::Arc;

use crate::kv::Event;

/// Events for one watcher, in revision order, holding whole revisions only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    /// The events, shared with every other watcher that received them.
    pub events: Vec<Arc<Event>>,
    /// Distinct revisions in `events`.
    revs: usize,
    /// First revision that did not fit (0 = everything fitted); the watcher continues there.
    pub more_rev: i64,
}

impl EventBatch {
    /// Returns an empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `event` unless the batch already holds `max_revs` revisions and `event` starts a
    /// new one; then records `more_rev` and ignores it and everything after (etcd
    /// `eventBatch.add`). Returns whether the event was taken.
    pub fn add(&mut self, event: Arc<Event>, max_revs: usize) -> bool {
        if self.more_rev != 0 {
            return false;
        }
        let rev = event.revision();
        match self.events.last() {
            Some(last) if rev <= last.revision() => {}
            _ => {
                if self.revs >= max_revs {
                    self.more_rev = rev;
                    return false;
                }
                self.revs += 1;
            }
        }
        self.events.push(event);
        true
    }

    /// Returns whether the batch has no event.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Returns the number of distinct revisions.
    #[must_use]
    pub fn revisions(&self) -> usize {
        self.revs
    }

    /// Returns whether events were left out (`more_rev != 0`).
    #[must_use]
    pub fn is_truncated(&self) -> bool {
        self.more_rev != 0
    }

    /// Returns an approximation of the bytes the batch's events hold.
    #[must_use]
    pub fn approx_size(&self) -> usize {
        self.events.iter().map(|e| e.approx_size()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{EventKind, KeyValue};

    fn ev(rev: i64) -> Arc<Event> {
        Arc::new(Event::new(
            EventKind::Put,
            KeyValue { key: b"foo".to_vec(), mod_revision: rev, create_revision: 2, version: 1, ..KeyValue::default() },
            None,
        ))
    }

    #[test]
    fn never_splits_a_revision_and_records_more_rev() {
        let mut b = EventBatch::new();
        for rev in [2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6] {
            b.add(ev(rev), 4);
        }
        let revs: Vec<i64> = b.events.iter().map(|e| e.revision()).collect();
        assert_eq!(revs, vec![2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]);
        assert_eq!((b.revisions(), b.more_rev), (4, 6));
        assert!(!b.add(ev(7), 4), "a full batch takes nothing more");
    }
}
