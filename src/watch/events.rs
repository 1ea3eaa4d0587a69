//! Owns `Events`, the list of events a watch response carries: either events of its own, or a
//! run of a batch that many responses share (the store's fan-out of one group commit), so that
//! a watcher's revisions of that commit cost one reference count, not one per event.

use std::ops::{Deref, Range};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::kv::Event;

/// Events shared by many responses: one group commit's events, in revision order.
pub type CommitEvents = Arc<[Arc<Event>]>;

/// The events of one response, in revision order. Derefs to a slice of shared events.
///
/// Why two forms: a fan-out makes one response per matching watcher, and a response that held
/// each event by its own `Arc` wrote that event's reference count once when made (on the store
/// thread) and once when dropped (on a stream's thread): for a hot key under a group commit of
/// many revisions, one contended cache line per event per watcher (docs/benchmarks.md). A
/// [`run`](Self::run) of a batch holds the whole batch by one reference and grows by moving its
/// end, so a watcher's events of one commit cost one count whatever their number. Anything that
/// cannot stay a contiguous run of one batch (another batch's events, a filtered subset) turns
/// the list into events of its own.
#[derive(Clone, Default)]
pub struct Events(Repr);

/// Events a response holds of its own without a heap allocation. A watcher of one of several
/// hot keys gets every few revisions of a commit, not a run of it, and its response is merged
/// from single events (two or three per response in the ten-key fan-out of docs/benchmarks.md):
/// inline, those merges allocate nothing. `Events` is 40 bytes with three, 32 with one.
const OWN_INLINE: usize = 3;

type OwnEvents = SmallVec<[Arc<Event>; OWN_INLINE]>;

#[derive(Clone)]
enum Repr {
    /// Events of its own; a few are stored inline (see [`OWN_INLINE`]).
    Own(OwnEvents),
    /// `batch[start..end]`.
    Run { batch: CommitEvents, start: usize, end: usize },
}

impl Default for Repr {
    fn default() -> Self {
        Self::Own(SmallVec::new())
    }
}

impl Events {
    /// No events.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The events `batch[range]`, sharing the batch.
    ///
    /// # Panics
    /// If `range` is not within the batch (a bug in the caller).
    #[must_use]
    pub fn run(batch: &CommitEvents, range: Range<usize>) -> Self {
        assert!(
            range.start <= range.end && range.end <= batch.len(),
            "run {range:?} outside a batch of {}",
            batch.len()
        );
        Self(Repr::Run { batch: Arc::clone(batch), start: range.start, end: range.end })
    }

    /// Events of their own.
    #[must_use]
    pub fn from_vec(events: Vec<Arc<Event>>) -> Self {
        Self(Repr::Own(SmallVec::from_vec(events)))
    }

    /// Appends `batch[range]` without touching any reference count when this is a run of the
    /// same batch that ends where `range` starts; returns whether it did.
    pub fn extend_run(&mut self, batch: &CommitEvents, range: Range<usize>) -> bool {
        match &mut self.0 {
            Repr::Run { batch: own, end, .. }
                if *end == range.start && range.end <= batch.len() && Arc::ptr_eq(own, batch) =>
            {
                *end = range.end.max(*end);
                true
            }
            _ => false,
        }
    }

    /// Where this run of `batch` ends, or `None` when these are events of their own or a run of
    /// another batch.
    #[must_use]
    pub fn run_end(&self, batch: &CommitEvents) -> Option<usize> {
        match &self.0 {
            Repr::Run { batch: own, end, .. } if Arc::ptr_eq(own, batch) => Some(*end),
            _ => None,
        }
    }

    /// Turns a run that covers under a quarter of its batch into events of its own, so that a
    /// response that waits (in a stream's buffer, as a victim) keeps alive little beyond its own
    /// events; a dense run stays shared.
    pub fn unshare_if_sparse(&mut self) {
        if let Repr::Run { batch, start, end } = &self.0 {
            if (end - start).saturating_mul(4) < batch.len() {
                self.owned();
            }
        }
    }

    /// Appends one event.
    pub fn push(&mut self, event: Arc<Event>) {
        self.owned().push(event);
    }

    /// Appends `other`'s events: a run that continues this run of the same batch only moves its
    /// end; anything else is copied as events of its own.
    pub fn extend(&mut self, other: Self) {
        if let Repr::Run { batch, start, end } = &other.0 {
            if self.is_empty() {
                *self = other;
                return;
            }
            if self.extend_run(batch, *start..*end) {
                return;
            }
        }
        match other.0 {
            Repr::Own(events) => self.owned().extend(events),
            Repr::Run { batch, start, end } => self.owned().extend(batch[start..end].iter().cloned()),
        }
    }

    /// Turns a run into events of its own (cloning each event's reference) and returns them.
    fn owned(&mut self) -> &mut OwnEvents {
        if let Repr::Run { batch, start, end } = &self.0 {
            let events: OwnEvents = batch[*start..*end].iter().cloned().collect();
            self.0 = Repr::Own(events);
        }
        match &mut self.0 {
            Repr::Own(events) => events,
            Repr::Run { .. } => unreachable!("a run was just replaced by events of its own"),
        }
    }
}

impl Deref for Events {
    type Target = [Arc<Event>];

    fn deref(&self) -> &[Arc<Event>] {
        match &self.0 {
            Repr::Own(events) => events,
            Repr::Run { batch, start, end } => &batch[*start..*end],
        }
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = &'a Arc<Event>;
    type IntoIter = std::slice::Iter<'a, Arc<Event>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// By value: a run yields clones of its events (the batch stays shared).
impl IntoIterator for Events {
    type Item = Arc<Event>;
    type IntoIter = smallvec::IntoIter<[Arc<Event>; OWN_INLINE]>;

    fn into_iter(mut self) -> Self::IntoIter {
        std::mem::take(self.owned()).into_iter()
    }
}

impl FromIterator<Arc<Event>> for Events {
    fn from_iter<I: IntoIterator<Item = Arc<Event>>>(iter: I) -> Self {
        Self(Repr::Own(iter.into_iter().collect()))
    }
}

impl From<Vec<Arc<Event>>> for Events {
    fn from(events: Vec<Arc<Event>>) -> Self {
        Self::from_vec(events)
    }
}

/// Equal when they hold equal events, whatever their form.
impl PartialEq for Events {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Events {}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{EventKind, KeyValue};

    fn batch(revs: std::ops::RangeInclusive<i64>) -> CommitEvents {
        revs.map(|rev| {
            Arc::new(Event::new(
                EventKind::Put,
                KeyValue { key: b"k".to_vec(), mod_revision: rev, ..KeyValue::default() },
                None,
            ))
        })
        .collect()
    }

    fn revisions(events: &Events) -> Vec<i64> {
        events.iter().map(|e| e.revision()).collect()
    }

    #[test]
    fn a_run_grows_without_touching_reference_counts() {
        let b = batch(1..=5);
        let mut run = Events::run(&b, 0..1);
        assert_eq!(Arc::strong_count(&b), 2);
        assert!(run.extend_run(&b, 1..3));
        assert!(run.extend_run(&b, 3..4));
        assert_eq!(revisions(&run), [1, 2, 3, 4]);
        assert_eq!(Arc::strong_count(&b), 2, "one count for the whole run");
        assert_eq!(Arc::strong_count(&b[0]), 1, "the events themselves are not counted again");
        // Not contiguous, or another batch: refused, unchanged.
        let other = batch(5..=5);
        assert!(!run.extend_run(&other, 0..1));
        assert!(!run.extend_run(&b, 0..1));
        assert_eq!(revisions(&run), [1, 2, 3, 4]);
        drop(run);
        assert_eq!(Arc::strong_count(&b), 1);
    }

    #[test]
    fn anything_but_a_continuing_run_becomes_events_of_its_own() {
        let b = batch(1..=6);
        let mut events = Events::run(&b, 0..2);
        events.extend(Events::run(&b, 2..3));
        assert_eq!(revisions(&events), [1, 2, 3]);
        assert_eq!(Arc::strong_count(&b[0]), 1, "still a run");
        // A gap (a watcher that skipped revision 4): copied.
        events.extend(Events::run(&b, 4..6));
        assert_eq!(revisions(&events), [1, 2, 3, 5, 6]);
        assert_eq!(Arc::strong_count(&b), 1, "no longer holds the batch");
        assert_eq!(Arc::strong_count(&b[0]), 2, "holds each event");
        let mut pushed = Events::run(&b, 0..1);
        pushed.push(Arc::clone(&b[3]));
        assert_eq!(revisions(&pushed), [1, 4]);
        let mut empty = Events::new();
        empty.extend(Events::run(&b, 1..2));
        assert_eq!(revisions(&empty), [2]);
        assert_eq!(empty, Events::from_vec(vec![Arc::clone(&b[1])]), "equal across forms");
        let by_value: Vec<i64> = Events::run(&b, 3..6).into_iter().map(|e| e.revision()).collect();
        assert_eq!(by_value, [4, 5, 6]);
    }

    #[test]
    fn a_sparse_run_lets_its_batch_go_and_a_dense_one_keeps_it() {
        let b = batch(1..=8);
        let mut sparse = Events::run(&b, 2..3);
        let mut dense = Events::run(&b, 2..6);
        assert_eq!(sparse.run_end(&b), Some(3));
        sparse.unshare_if_sparse();
        dense.unshare_if_sparse();
        assert_eq!(sparse.run_end(&b), None, "one of eight events: copied out");
        assert_eq!(revisions(&sparse), [3]);
        assert_eq!(dense.run_end(&b), Some(6), "four of eight: still shared");
        assert_eq!(Arc::strong_count(&b), 2, "only the dense run holds the batch");
    }
}
