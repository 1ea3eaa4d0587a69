//! Owns `EventBatch`: the events one watcher is owed in one response, at most
//! `watch_batch_max_revs` distinct revisions and `max_batch_bytes` of events, never a split
//! revision (etcd `watcher_group.go eventBatch`, docs/etcd-semantics.md §6.7).

use std::sync::Arc;

use crate::kv::Event;

/// How much one response may join: at most `max_revs` distinct revisions (etcd
/// `watchBatchMaxRevs`) and `max_bytes` of encoded events. A single revision larger than
/// `max_bytes` still goes whole: a revision is never split (a `fragment` watcher's transport
/// splits it into fragments instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most distinct revisions.
    pub max_revs: usize,
    /// Most bytes of events, as protobuf `WatchResponse` fields ([`Event::field_len`]).
    pub max_bytes: usize,
}

/// Events for one watcher, in revision order, holding whole revisions only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    /// The events, shared with every other watcher that received them.
    pub events: Vec<Arc<Event>>,
    /// Distinct revisions in `events`.
    revs: usize,
    /// Bytes of `events` as response fields.
    bytes: usize,
    /// Where the last revision's events start in `events`, and the bytes before them: a
    /// revision that outgrows the byte limit is taken back whole.
    last_rev_start: (usize, usize),
    /// First revision that did not fit (0 = everything fitted); the watcher continues there.
    pub more_rev: i64,
}

impl EventBatch {
    /// Returns an empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `event`, encoded with its `prev_kv` if `with_prev_kv`, unless the batch is full:
    /// it holds `limits.max_revs` revisions and `event` starts a new one (etcd
    /// `eventBatch.add`), or `event` would take the batch beyond `limits.max_bytes` and the
    /// batch holds an earlier revision. Then it records `more_rev`, ignores this event and
    /// everything after, and returns false; when `event` belongs to a revision already begun,
    /// that revision's events are taken back, so the batch ends on a whole revision and the
    /// watcher continues at that revision. The first revision is always taken whole, however
    /// large.
    pub fn add(&mut self, event: Arc<Event>, with_prev_kv: bool, limits: BatchLimits) -> bool {
        if self.more_rev != 0 {
            return false;
        }
        let rev = event.revision();
        let len = event.field_len(with_prev_kv);
        let fits = self.bytes.saturating_add(len) <= limits.max_bytes;
        match self.events.last() {
            Some(last) if rev <= last.revision() => {
                if !fits && self.revs > 1 {
                    let (start, bytes) = self.last_rev_start;
                    self.events.truncate(start);
                    self.bytes = bytes;
                    self.revs -= 1;
                    self.more_rev = rev;
                    return false;
                }
            }
            _ => {
                if self.revs >= limits.max_revs || (!fits && self.revs > 0) {
                    self.more_rev = rev;
                    return false;
                }
                self.revs += 1;
                self.last_rev_start = (self.events.len(), self.bytes);
            }
        }
        self.events.push(event);
        self.bytes += len;
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

    /// Returns the bytes the batch's events take as response fields (with or without `prev_kv`
    /// as they were added).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
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

    /// An event at `rev` with a value of `value_len` bytes and a previous value of the same size.
    fn event(rev: i64, value_len: usize) -> Arc<Event> {
        let kv = |rev: i64| KeyValue {
            key: b"foo".to_vec(),
            value: vec![b'v'; value_len],
            mod_revision: rev,
            create_revision: 2,
            version: 1,
            ..KeyValue::default()
        };
        Arc::new(Event::new(EventKind::Put, kv(rev), Some(kv(rev - 1))))
    }

    fn ev(rev: i64) -> Arc<Event> {
        event(rev, 0)
    }

    const UNLIMITED: usize = usize::MAX;

    fn revs(b: &EventBatch) -> Vec<i64> {
        b.events.iter().map(|e| e.revision()).collect()
    }

    #[test]
    fn never_splits_a_revision_and_records_more_rev() {
        let limits = BatchLimits { max_revs: 4, max_bytes: UNLIMITED };
        let mut b = EventBatch::new();
        for rev in [2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6] {
            b.add(ev(rev), false, limits);
        }
        assert_eq!(revs(&b), vec![2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]);
        assert_eq!((b.revisions(), b.more_rev), (4, 6));
        assert!(!b.add(ev(7), false, limits), "a full batch takes nothing more");
    }

    #[test]
    fn stops_before_the_revision_that_would_pass_the_byte_limit() {
        let one = event(2, 100).field_len(false);
        let limits = BatchLimits { max_revs: 1000, max_bytes: 3 * one };
        let mut b = EventBatch::new();
        let taken: Vec<bool> = (2..=6).map(|rev| b.add(event(rev, 100), false, limits)).collect();
        assert_eq!(taken, vec![true, true, true, false, false]);
        assert_eq!((revs(&b), b.bytes(), b.more_rev), (vec![2, 3, 4], 3 * one, 5));
    }

    #[test]
    fn takes_back_a_revision_that_outgrows_the_byte_limit() {
        let one = event(2, 100).field_len(false);
        let limits = BatchLimits { max_revs: 1000, max_bytes: 4 * one };
        let mut b = EventBatch::new();
        for rev in [2, 3, 3, 4, 4, 4] {
            b.add(event(rev, 100), false, limits);
        }
        // Revision 4 began within the limit and outgrew it on its third event: the batch ends
        // on revision 3 and the watcher goes on at 4.
        assert_eq!((revs(&b), b.bytes(), b.revisions(), b.more_rev), (vec![2, 3, 3], 3 * one, 2, 4));
        assert!(!b.add(event(5, 1), false, limits));
    }

    #[test]
    fn the_first_revision_goes_whole_however_large() {
        let one = event(2, 1000).field_len(true);
        let limits = BatchLimits { max_revs: 1000, max_bytes: one / 2 };
        let mut b = EventBatch::new();
        assert!(b.add(event(2, 1000), true, limits));
        assert!(b.add(event(2, 1000), true, limits), "the rest of the first revision too");
        assert!(!b.add(event(3, 1), true, limits));
        assert_eq!((revs(&b), b.bytes(), b.more_rev), (vec![2, 2], 2 * one, 3));
    }

    #[test]
    fn counts_prev_kv_only_when_asked() {
        let e = event(2, 500);
        assert!(e.field_len(true) > e.field_len(false) + 500);
        let limits = BatchLimits { max_revs: 1000, max_bytes: 2 * e.field_len(false) };
        let (mut plain, mut with_prev) = (EventBatch::new(), EventBatch::new());
        for rev in 2..=3 {
            assert!(plain.add(event(rev, 500), false, limits));
            assert_eq!(with_prev.add(event(rev, 500), true, limits), rev == 2);
        }
    }
}
