//! Owns the store's fan-out (etcd `watchable_store.go notify`, docs/etcd-semantics.md §6.4):
//! matching a group commit's revisions against a watcher group, as runs of one shared event
//! batch where they can be (a hot key's revisions matched once), and sending each stream its
//! responses in one `Deliver` by `try_send`; a full mailbox turns those watchers into victims
//! (docs/design.md, invariant 5), never a wait.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use actix::prelude::*;
use watchkv::watch::event_batch::BatchLimits;
use watchkv::watch::response::{CommitEvents, WatchResponse};
use watchkv::watch::watcher::{StreamId, Watcher, WatcherKey};
use watchkv::watch::watcher_group::{WatcherGroup, WatcherSlot};
use watchkv::Event;

use super::{PerStream, StoreActor, StreamMap};
use crate::filtered_events;
use crate::protocol::{Deliver, Delivery, ParkVictims, Victim, RESPONSE_HEADER_ESTIMATE};

/// Where each synced watcher's response of the current turn is, by slot, so that the later
/// revisions of one group commit join that response (`WatchResponse::merge`: at most
/// `watch_batch_max_revs` revisions and `max_batch_bytes`, never splitting a revision)
/// instead of making one response each: a watcher of a hot key gets one response per group
/// commit, found through the slot without hashing, and a revision that continues the
/// watcher's run of the batch only moves the run's end (`WatchResponse::extend_run`). A turn
/// is one `deliver`.
#[derive(Debug, Default)]
pub(super) struct TurnMarks {
    turn: u32,
    marks: Vec<Mark>,
    max_revs: usize,
    max_bytes: usize,
    /// How many deliveries each stream got in its last turn: its list of this turn starts at
    /// that capacity. A stream's list leaves with its `Deliver`, so it cannot be reused, and
    /// grown push by push it was reallocated two or three times per stream per group commit on
    /// the store thread (a stream of ten watchers), each a larger chunk that the stream's
    /// thread later frees (docs/benchmarks.md: the ten-key fan-out).
    list_sizes: StreamMap<u32>,
}

/// The largest capacity a stream's list starts at: a stream whose last turn had thousands of
/// deliveries grows past it as before, and one whose turn has few after many does not start
/// with a large list.
const LIST_SIZE_HINT_MAX: usize = 256;

/// A watcher's response in this turn: where it is in its stream's list, and its encoded length
/// (0 until a merge first needs it: most watchers get one revision per turn).
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    turn: u32,
    index: u32,
    len: u32,
}

impl TurnMarks {
    /// Returns marks that merge within `limits`.
    pub(super) fn new(limits: BatchLimits) -> Self {
        let BatchLimits { max_revs, max_bytes } = limits;
        Self { turn: 1, marks: Vec::new(), max_revs, max_bytes, list_sizes: StreamMap::default() }
    }

    /// Notes how many deliveries `stream` got this turn (up to [`LIST_SIZE_HINT_MAX`]).
    fn note_list_size(&mut self, stream: StreamId, len: usize) {
        self.list_sizes.insert(stream, u32::try_from(len.min(LIST_SIZE_HINT_MAX)).unwrap_or(u32::MAX));
    }

    /// Forgets a stream that closed.
    pub(super) fn forget_stream(&mut self, stream: StreamId) {
        self.list_sizes.remove(&stream);
    }

    /// Starts a new turn: every earlier mark is stale.
    pub(super) fn next_turn(&mut self) {
        self.turn = self.turn.wrapping_add(1);
        if self.turn == 0 {
            self.marks.fill(Mark::default());
            self.turn = 1;
        }
    }

    /// Queues the events `batch[range]`, of revisions up to `rev` and `added` bytes in the
    /// watcher's form, for the watcher `w` in `slot`: when the watcher's response of this turn
    /// is a run of the same batch that ends where `range` starts, the run just grows (no
    /// reference count, no new response); else as [`queue`](Self::queue) does. The caller
    /// keeps a new response within the limits (one revision always fits).
    #[allow(clippy::too_many_arguments)] // the fan-out's inner loop: nothing built per call
    fn queue_run(
        &mut self,
        out: &mut PerStream,
        w: &Watcher,
        slot: WatcherSlot,
        rev: i64,
        batch: &CommitEvents,
        range: Range<usize>,
        added: usize,
    ) {
        // Whether the events join a response that cannot share this batch with them: one of
        // its own, a run of an earlier batch, or a run of this one that another key's
        // revisions interrupted (a run refused only by a limit starts a new run instead).
        let mut joins_unshared = false;
        if let Some(mark) = self.marks.get_mut(slot.index()).filter(|m| m.turn == self.turn) {
            let queued = out.get_mut(&w.key.stream).and_then(|list| list.get_mut(mark.index as usize));
            if let Some(queued) = queued.filter(|d| d.key == w.key) {
                joins_unshared = queued.response.events.run_end(batch) != Some(range.start);
                if mark.len == 0 {
                    let len = queued.response.encoded_len(RESPONSE_HEADER_ESTIMATE);
                    mark.len = u32::try_from(len).unwrap_or(u32::MAX);
                }
                let merged = queued.response.extend_run(
                    rev,
                    batch,
                    range.clone(),
                    added,
                    mark.len as usize,
                    self.max_revs,
                    self.max_bytes,
                );
                if let Some(len) = merged {
                    mark.len = u32::try_from(len).unwrap_or(u32::MAX);
                    return;
                }
            }
        }
        let response = match batch.get(range.clone()) {
            // The batch would be shared only to be let go again by the merge.
            Some([event]) if joins_unshared => WatchResponse::event(w.key.id, rev, Arc::clone(event), w.prev_kv),
            Some(events) if joins_unshared => WatchResponse::events(w.key.id, rev, events.to_vec(), w.prev_kv),
            _ => WatchResponse::run(w.key.id, rev, batch, range, w.prev_kv),
        };
        self.queue(out, w.key, slot, response);
    }

    /// Queues `response` for the watcher `key` in `slot`: merged into the watcher's response
    /// of this turn when it can be, else as a response of its own.
    fn queue(&mut self, out: &mut PerStream, key: WatcherKey, slot: WatcherSlot, response: WatchResponse) {
        let list = match out.entry(key.stream) {
            Entry::Occupied(list) => list.into_mut(),
            Entry::Vacant(vacant) => {
                let size = self.list_sizes.get(&key.stream).map_or(0, |&n| n as usize);
                vacant.insert(Vec::with_capacity(size))
            }
        };
        let i = slot.index();
        if self.marks.len() <= i {
            self.marks.resize(i + 1, Mark::default());
        }
        let mut response = response;
        let mark = &mut self.marks[i];
        if mark.turn == self.turn {
            if let Some(queued) = list.get_mut(mark.index as usize).filter(|d| d.key == key) {
                if mark.len == 0 {
                    let len = queued.response.encoded_len(RESPONSE_HEADER_ESTIMATE);
                    mark.len = u32::try_from(len).unwrap_or(u32::MAX);
                }
                match queued.response.merge(response, mark.len as usize, self.max_revs, self.max_bytes) {
                    Ok(len) => {
                        mark.len = u32::try_from(len).unwrap_or(u32::MAX);
                        return;
                    }
                    Err(unmerged) => response = unmerged,
                }
            }
        }
        *mark = Mark { turn: self.turn, index: u32::try_from(list.len()).unwrap_or(u32::MAX), len: 0 };
        list.push(Delivery { key, response });
    }
}

/// The most bytes (`Event::approx_size`) of consecutive revisions that share one batch (a
/// larger single revision gets a batch of its own). A response holding a run keeps its whole
/// batch alive, including other watchers' events; `deliver` copies a run that covers under a
/// quarter of its batch out of it (`Events::unshare_if_sparse`), so what a response waiting in
/// a stream's buffer or as a victim keeps beyond its own events is at most three times their
/// number, and at most this many bytes. Hot keys with small values (the fan-out this is for:
/// 64 puts of 64 B in one commit, about 15 KiB with their `prev_kv`) share a commit's batch
/// whole.
const SHARED_BATCH_BYTES: usize = 64 * 1024;

impl StoreActor {
    /// Records committed revisions' events (each inner list one revision's, in revision order)
    /// and queues them for synced watchers. Consecutive revisions share a batch (up to
    /// [`SHARED_BATCH_BYTES`]): a watcher's response of those revisions holds a run of it
    /// (`Events::run`), one reference count whatever the number of revisions.
    pub(super) fn committed(&mut self, revisions: Vec<Vec<Event>>, out: &mut PerStream) {
        let mut ranges: Vec<(i64, Range<usize>)> = Vec::new();
        let mut pending: Vec<Arc<Event>> = Vec::new();
        let mut pending_bytes = 0;
        for events in revisions {
            let Some(rev) = events.first().map(Event::revision) else { continue };
            let bytes: usize = events.iter().map(Event::approx_size).sum();
            if !pending.is_empty() && pending_bytes + bytes > SHARED_BATCH_BYTES {
                self.committed_batch(std::mem::take(&mut pending), &mut ranges, out);
                pending_bytes = 0;
            }
            let start = pending.len();
            pending.extend(events.into_iter().map(Arc::new));
            ranges.push((rev, start..pending.len()));
            pending_bytes += bytes;
        }
        if !pending.is_empty() {
            self.committed_batch(pending, &mut ranges, out);
        }
    }

    /// Matches and remembers the revisions `ranges` of one shared batch, and clears `ranges`.
    /// Consecutive revisions that each put or delete the same one key (a hot key under a group
    /// commit) are matched together ([`match_hot_key`]).
    fn committed_batch(&mut self, events: Vec<Arc<Event>>, ranges: &mut Vec<(i64, Range<usize>)>, out: &mut PerStream) {
        let batch: CommitEvents = events.into();
        match_batch(&mut self.synced, &mut self.matched, &batch, ranges, out, &mut self.turn_marks);
        for (rev, range) in ranges.drain(..) {
            self.remember(rev, &batch, range);
        }
    }

    /// Sends each stream its deliveries in one mailbox message; a full mailbox turns those
    /// watchers into victims (etcd `notify` on a failed `send`), never a wait.
    pub(super) fn deliver(&mut self, out: PerStream) {
        self.turn_marks.next_turn();
        let mut parked = Vec::new();
        for (stream, mut entries) in out {
            // The list waits in the stream's mailbox: it keeps no more than twice what it holds
            // (glibc shrinks a chunk in place).
            if entries.capacity() > 2 * entries.len() {
                entries.shrink_to_fit();
            }
            // What waits in a stream's buffer or as a victim keeps only a dense run's batch.
            for e in &mut entries {
                e.response.events.unshare_if_sparse();
            }
            let Some(recipient) = self.streams.get(&stream) else {
                // The stream is gone: its watchers go with it.
                for e in entries {
                    self.synced.remove(&e.key);
                }
                continue;
            };
            self.turn_marks.note_list_size(stream, entries.len());
            let msg = Deliver::live(entries);
            let (responses, events) = msg.size();
            match recipient.try_deliver(msg) {
                Ok(()) => self.counters.delivered(responses, events),
                Err(SendError::Full(msg)) => {
                    // One message may carry several revisions for one watcher (group commit,
                    // ring replay): all of them go with it, in order. Found by key through a
                    // map: a stream may hold 10k watchers of one key, all refused at once.
                    let mut victims: Vec<Victim> = Vec::new();
                    let mut victim_of: HashMap<WatcherKey, usize> = HashMap::new();
                    for e in msg.entries {
                        match victim_of.entry(e.key) {
                            Entry::Occupied(at) => victims[*at.get()].responses.push(e.response),
                            Entry::Vacant(slot) => {
                                if let Some(watcher) = self.synced.remove(&e.key) {
                                    slot.insert(victims.len());
                                    victims.push(Victim::new(watcher, e.response));
                                }
                            }
                        }
                    }
                    parked.extend(victims);
                }
                Err(SendError::Closed(msg)) => {
                    self.streams.remove(&stream);
                    self.turn_marks.forget_stream(stream);
                    for e in msg.entries {
                        self.synced.remove(&e.key);
                    }
                }
            }
        }
        if !parked.is_empty() {
            // Bounded: one parked entry per watcher, and a victim is in no group.
            self.peers.park_victims.do_send(ParkVictims(parked));
        }
    }
}

/// etcd `notify` for the revisions `ranges` (in revision order) of one shared batch: consecutive
/// revisions that each change the same one key go through [`match_hot_key`] together, the
/// others one by one through [`match_revision`].
fn match_batch(
    group: &mut WatcherGroup,
    matched: &mut Vec<WatcherSlot>,
    batch: &CommitEvents,
    ranges: &[(i64, Range<usize>)],
    out: &mut PerStream,
    marks: &mut TurnMarks,
) {
    let mut i = 0;
    while i < ranges.len() {
        let (rev, range) = ranges[i].clone();
        let hot = hot_key_revisions(batch, &ranges[i..], marks.max_revs);
        if hot >= 2 {
            let end = ranges[i + hot - 1].1.end;
            let revs = HotRevisions { first_rev: rev, range: range.start..end };
            match_hot_key(group, matched, batch, &revs, out, marks);
        } else {
            match_revision(group, matched, rev, batch, range, out, marks);
        }
        i += hot.max(1);
    }
}

/// Consecutive revisions of one batch, each with one event on the same key.
struct HotRevisions {
    /// The first one's revision; the others follow it one by one.
    first_rev: i64,
    /// Their events in the batch, one per revision.
    range: Range<usize>,
}

/// How many of `ranges` (from the first, at most `max_revs`) are consecutive revisions that
/// each hold one event on the first one's key.
fn hot_key_revisions(batch: &CommitEvents, ranges: &[(i64, Range<usize>)], max_revs: usize) -> usize {
    let Some((first_rev, first)) = ranges.first() else { return 0 };
    if first.len() != 1 {
        return 0;
    }
    let key = &batch[first.start].kv.key;
    let mut n = 1;
    while n < ranges.len().min(max_revs) {
        let (rev, range) = &ranges[n];
        let follows = i64::try_from(n).is_ok_and(|n| *rev == first_rev + n);
        if !follows || range.len() != 1 || range.start != first.start + n || batch[range.start].kv.key != *key {
            break;
        }
        n += 1;
    }
    n
}

/// etcd `notify` for several revisions that each change one and the same key (a hot key under
/// a group commit), matched once: a watcher that takes every one of them (no filter) gets the
/// events it still needs as one run, in one step, instead of one step per revision. A
/// watcher with a filter, or one whose run would pass the response limits, goes revision by
/// revision.
fn match_hot_key(
    group: &mut WatcherGroup,
    matched: &mut Vec<WatcherSlot>,
    batch: &CommitEvents,
    revs: &HotRevisions,
    out: &mut PerStream,
    marks: &mut TurnMarks,
) {
    let count = revs.range.len();
    if group.is_empty() || count == 0 {
        return;
    }
    let last_rev = revs.first_rev + i64::try_from(count).unwrap_or(i64::MAX) - 1;
    matched.clear();
    group.matching(&batch[revs.range.start].kv.key, matched);
    if matched.is_empty() {
        return;
    }
    // The encoded size of the events before each one, without and with prev_kv: a run's size
    // in two lookups.
    let mut before = [Vec::with_capacity(count + 1), Vec::with_capacity(count + 1)];
    for (form, sums) in before.iter_mut().enumerate() {
        let mut total = 0usize;
        sums.push(total);
        for event in &batch[revs.range.clone()] {
            total += event.field_len(form == 1);
            sums.push(total);
        }
    }
    for &slot in matched.iter() {
        let Some(w) = group.slot_mut(slot) else { continue };
        if w.min_rev > last_rev {
            continue;
        }
        let skip = usize::try_from(w.min_rev - revs.first_rev).unwrap_or(0);
        w.min_rev = last_rev + 1;
        let sums = &before[usize::from(w.prev_kv)];
        let added = sums[count] - sums[skip];
        // A new response's size around its events: header and watch id.
        let around = WatchResponse::progress(w.key.id, 0).encoded_len(RESPONSE_HEADER_ESTIMATE);
        let fits = count - skip <= marks.max_revs && added.saturating_add(around) <= marks.max_bytes;
        if fits && !w.filters.no_put && !w.filters.no_delete {
            marks.queue_run(out, w, slot, last_rev, batch, revs.range.start + skip..revs.range.end, added);
            continue;
        }
        for i in skip..count {
            let at = revs.range.start + i;
            let event = &batch[at];
            if w.filters.accepts(event) {
                let rev = revs.first_rev + i64::try_from(i).unwrap_or(0);
                marks.queue_run(out, w, slot, rev, batch, at..at + 1, event.field_len(w.prev_kv));
            }
        }
    }
}

/// etcd `notify` for one revision and one group: each matching watcher that still needs `rev`
/// gets one response with the events it matches, and then needs only later revisions.
///
/// The cancel flag is not checked here: a cancelled watcher leaves the group by
/// `CancelWatchers`, and until then its stream drops what it is sent (cancel wins on delivery,
/// docs/design.md, invariant 6), so the hot loop skips one cache miss per watcher.
pub(super) fn match_revision(
    group: &mut WatcherGroup,
    matched: &mut Vec<WatcherSlot>,
    rev: i64,
    batch: &CommitEvents,
    range: Range<usize>,
    out: &mut PerStream,
    marks: &mut TurnMarks,
) {
    if group.is_empty() {
        return;
    }
    let Some(events) = batch.get(range.clone()) else { return };
    if let [event] = events {
        // One event (the common case): `matching` yields each slot once, so each watcher's
        // response is built straight from the match, with no per-watcher grouping.
        matched.clear();
        group.matching(&event.kv.key, matched);
        for &slot in matched.iter() {
            let Some(w) = group.slot_mut(slot) else { continue };
            if w.min_rev > rev {
                continue;
            }
            w.min_rev = rev + 1;
            if w.filters.accepts(event) {
                marks.queue_run(out, w, slot, rev, batch, range.clone(), event.field_len(w.prev_kv));
            }
        }
        return;
    }
    // (slot, events) in first-match order.
    let mut per_watcher: Vec<(WatcherSlot, Vec<Arc<Event>>)> = Vec::new();
    let mut position: HashMap<WatcherSlot, usize> = HashMap::new();
    for event in events {
        matched.clear();
        group.matching(&event.kv.key, matched);
        for &slot in matched.iter() {
            match position.entry(slot) {
                Entry::Occupied(e) => per_watcher[*e.get()].1.push(Arc::clone(event)),
                Entry::Vacant(e) => {
                    e.insert(per_watcher.len());
                    per_watcher.push((slot, vec![Arc::clone(event)]));
                }
            }
        }
    }
    for (slot, evs) in per_watcher {
        let Some(w) = group.slot_mut(slot) else { continue };
        if w.min_rev > rev {
            continue;
        }
        w.min_rev = rev + 1;
        if let Some(evs) = filtered_events(w, evs) {
            let response = WatchResponse::events(w.key.id, rev, evs, w.prev_kv);
            marks.queue(out, w.key, slot, response);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use watchkv::watch::watcher::{CancelFlag, Filters, WatcherKey};
    use watchkv::{EventKind, KeyRange, KeyValue};

    use super::*;

    /// A watcher of the test: which keys, from which revision, filters and prev_kv.
    #[derive(Debug, Clone)]
    struct Spec {
        range: u8,
        min_rev_offset: i64,
        no_put: bool,
        no_delete: bool,
        prev_kv: bool,
        stream: u64,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (0u8..4, -2i64..45, any::<bool>(), any::<bool>(), any::<bool>(), 1u64..4).prop_map(
            |(range, min_rev_offset, no_put, no_delete, prev_kv, stream)| Spec {
                range,
                min_rev_offset,
                no_put,
                no_delete,
                prev_kv,
                stream,
            },
        )
    }

    const FIRST_REV: i64 = 100;

    fn group_of(specs: &[Spec]) -> WatcherGroup {
        let mut group = WatcherGroup::new();
        for (i, s) in specs.iter().enumerate() {
            let range = match s.range {
                0 => KeyRange::single("hot"),
                1 => KeyRange::prefix("ho"),
                2 => KeyRange::interval("a", "z"),
                _ => KeyRange::single("cold"),
            };
            let id = i64::try_from(i).expect("few watchers");
            let w = Watcher {
                key: WatcherKey { stream: s.stream, id, seq: i as u64 },
                range,
                start_rev: 0,
                min_rev: FIRST_REV + s.min_rev_offset,
                filters: Filters { no_put: s.no_put, no_delete: s.no_delete },
                prev_kv: s.prev_kv,
                cancel: CancelFlag::new(),
            };
            group.insert(w).expect("a new watcher");
        }
        group
    }

    /// A batch of one event per revision on "hot" (`true` = a delete), from `FIRST_REV`.
    fn batch_of(kinds: &[(bool, usize)]) -> (CommitEvents, Vec<(i64, Range<usize>)>) {
        let mut events = Vec::new();
        let mut ranges = Vec::new();
        for (i, &(delete, value_len)) in kinds.iter().enumerate() {
            let rev = FIRST_REV + i64::try_from(i).expect("few revisions");
            let kv = KeyValue {
                key: b"hot".to_vec(),
                value: vec![b'v'; value_len],
                mod_revision: rev,
                ..KeyValue::default()
            };
            let prev = Some(KeyValue { key: b"hot".to_vec(), value: vec![b'p'; 7], ..KeyValue::default() });
            let kind = if delete { EventKind::Delete } else { EventKind::Put };
            events.push(Arc::new(Event::new(kind, kv, prev)));
            ranges.push((rev, i..i + 1));
        }
        (events.into(), ranges)
    }

    /// What a watcher was sent: (revision, is a delete, with prev_kv) per event, in order.
    type Received = Vec<(i64, bool, bool)>;

    /// Each watcher's events by watch id, checking every response against the limits on the way.
    fn delivered(out: &PerStream, max_revs: usize, max_bytes: usize) -> std::collections::BTreeMap<i64, Received> {
        let mut by_watcher: std::collections::BTreeMap<i64, Received> = Default::default();
        for list in out.values() {
            for d in list {
                let r = &d.response;
                assert_eq!(r.watch_id, d.key.id);
                let revs: Vec<i64> = r.events.iter().map(|e| e.revision()).collect();
                assert!(revs.windows(2).all(|p| p[0] <= p[1]), "revisions out of order: {revs:?}");
                // One revision always fits, however large; merged ones keep to the limits.
                if revs.first() != revs.last() {
                    let span = usize::try_from(revs[revs.len() - 1] - revs[0] + 1).expect("positive");
                    assert!(span <= max_revs, "a response spans {span} revisions, limit {max_revs}");
                    let len = r.encoded_len(RESPONSE_HEADER_ESTIMATE);
                    assert!(len <= max_bytes, "a response of {len} bytes, limit {max_bytes}");
                }
                assert_eq!(r.revision, *revs.last().expect("events"), "header revision is the last event's");
                let mine = by_watcher.entry(d.key.id).or_default();
                mine.extend(r.events.iter().map(|e| (e.revision(), e.kind == EventKind::Delete, r.prev_kv)));
            }
        }
        by_watcher
    }

    proptest! {
        /// The hot-key path gives every watcher exactly the events the one-revision-at-a-time
        /// path gives it, within the same limits, and leaves it needing the same revision.
        #[test]
        fn hot_key_runs_deliver_what_revision_by_revision_delivers(
            kinds in prop::collection::vec((any::<bool>(), 0usize..120), 2..40),
            specs in prop::collection::vec(spec(), 1..12),
            max_revs in prop_oneof![Just(1000usize), 1usize..8],
            max_bytes in prop_oneof![Just(2usize << 20), 60usize..600],
        ) {
            let (batch, ranges) = batch_of(&kinds);
            let mut matched = Vec::new();

            let mut hot_group = group_of(&specs);
            let mut hot_out = PerStream::default();
            let mut marks = TurnMarks::new(BatchLimits { max_revs, max_bytes });
            match_batch(&mut hot_group, &mut matched, &batch, &ranges, &mut hot_out, &mut marks);

            let mut one_group = group_of(&specs);
            let mut one_out = PerStream::default();
            let mut marks = TurnMarks::new(BatchLimits { max_revs, max_bytes });
            for (rev, range) in &ranges {
                match_revision(&mut one_group, &mut matched, *rev, &batch, range.clone(), &mut one_out, &mut marks);
            }

            prop_assert_eq!(delivered(&hot_out, max_revs, max_bytes), delivered(&one_out, max_revs, max_bytes));
            let min_revs = |g: &WatcherGroup| {
                let mut v: Vec<(i64, i64)> = g.iter().map(|w| (w.key.id, w.min_rev)).collect();
                v.sort_unstable();
                v
            };
            prop_assert_eq!(min_revs(&hot_group), min_revs(&one_group));
        }
    }

    /// One batch and its revisions' ranges.
    type Batch = (CommitEvents, Vec<(i64, Range<usize>)>);

    /// Revisions of one to three events on "hot", "hop" and "cold" (a txn's keys differ),
    /// split into batches where `cuts` says: several batches of one turn.
    fn batches_of(revisions: &[(usize, usize, bool, usize, bool)]) -> Vec<Batch> {
        const KEYS: [&str; 3] = ["hot", "hop", "cold"];
        let mut batches = Vec::new();
        let (mut events, mut ranges) = (Vec::new(), Vec::new());
        for (i, &(key, extra, delete, value_len, cut)) in revisions.iter().enumerate() {
            if cut && !events.is_empty() {
                batches.push((CommitEvents::from(std::mem::take(&mut events)), std::mem::take(&mut ranges)));
            }
            let rev = FIRST_REV + i64::try_from(i).expect("few revisions");
            let start = events.len();
            for k in 0..=extra.min(2) {
                let key = KEYS[(key + k) % 3].as_bytes().to_vec();
                let kv = KeyValue {
                    key: key.clone(),
                    value: vec![b'v'; value_len],
                    mod_revision: rev,
                    ..KeyValue::default()
                };
                let prev = Some(KeyValue { key, value: vec![b'p'; 5], ..KeyValue::default() });
                let kind = if delete && k == 0 { EventKind::Delete } else { EventKind::Put };
                events.push(Arc::new(Event::new(kind, kv, prev)));
            }
            ranges.push((rev, start..events.len()));
        }
        if !events.is_empty() {
            batches.push((events.into(), ranges));
        }
        batches
    }

    proptest! {
        /// Over several batches of one turn, with other keys and multi-event revisions between
        /// the hot ones, the batch path still gives every watcher what the revision-by-revision
        /// path gives it.
        #[test]
        fn mixed_keys_and_batches_deliver_what_revision_by_revision_delivers(
            revisions in prop::collection::vec(
                (0usize..3, prop_oneof![Just(0usize), 0usize..3], any::<bool>(), 0usize..120, prop::bool::weighted(0.15)),
                2..50,
            ),
            specs in prop::collection::vec(spec(), 1..12),
            max_revs in prop_oneof![Just(1000usize), 1usize..8],
            max_bytes in prop_oneof![Just(2usize << 20), 60usize..600],
        ) {
            let batches = batches_of(&revisions);
            let mut matched = Vec::new();
            let mut batch_group = group_of(&specs);
            let mut batch_out = PerStream::default();
            let mut marks = TurnMarks::new(BatchLimits { max_revs, max_bytes });
            for (batch, ranges) in &batches {
                match_batch(&mut batch_group, &mut matched, batch, ranges, &mut batch_out, &mut marks);
            }
            let mut one_group = group_of(&specs);
            let mut one_out = PerStream::default();
            let mut marks = TurnMarks::new(BatchLimits { max_revs, max_bytes });
            for (batch, ranges) in &batches {
                for (rev, range) in ranges {
                    match_revision(&mut one_group, &mut matched, *rev, batch, range.clone(), &mut one_out, &mut marks);
                }
            }
            prop_assert_eq!(delivered(&batch_out, max_revs, max_bytes), delivered(&one_out, max_revs, max_bytes));
        }
    }

    #[test]
    fn a_hot_key_run_is_one_response_holding_the_batch_once() {
        let kinds: Vec<(bool, usize)> = (0..20).map(|_| (false, 8)).collect();
        let (batch, ranges) = batch_of(&kinds);
        let specs: Vec<Spec> = (0..5)
            .map(|_| Spec { range: 0, min_rev_offset: 0, no_put: false, no_delete: false, prev_kv: false, stream: 1 })
            .collect();
        let mut group = group_of(&specs);
        let mut out = PerStream::default();
        let mut marks = TurnMarks::new(BatchLimits { max_revs: 1000, max_bytes: 2 << 20 });
        match_batch(&mut group, &mut Vec::new(), &batch, &ranges, &mut out, &mut marks);
        let list = &out[&1];
        assert_eq!(list.len(), 5, "one response per watcher");
        assert!(list.iter().all(|d| d.response.events.len() == 20));
        assert_eq!(Arc::strong_count(&batch), 1 + 5, "each response holds the batch once");
        assert_eq!(Arc::strong_count(&batch[0]), 1, "and no event on its own");
    }
}
