//! Owns the store's fan-out (etcd `watchable_store.go notify`, docs/etcd-semantics.md §6.4):
//! matching a committed revision against a watcher group, and sending each stream its
//! responses in one `Deliver` by `try_send`; a full mailbox turns those watchers into victims
//! (docs/design.md, invariant 5), never a wait.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use actix::prelude::*;
use watchkv::watch::response::{CommitEvents, WatchResponse};
use watchkv::watch::watcher::{Watcher, WatcherKey};
use watchkv::watch::watcher_group::{WatcherGroup, WatcherSlot};
use watchkv::Event;

use super::{PerStream, StoreActor};
use crate::filtered_events;
use crate::protocol::{Deliver, Delivery, ParkVictims, Victim, RESPONSE_HEADER_ESTIMATE};

/// Where each synced watcher's response of the current turn is, by slot, so that the later
/// revisions of one group commit join that response (`WatchResponse::merge`: at most
/// `watch_batch_max_revs` revisions and `max_response_bytes`, never splitting a revision)
/// instead of making one response each: a watcher of a hot key gets one response per group
/// commit, and the per-revision work of the fan-out is one event pushed, found through the
/// slot without hashing. A turn is one `deliver`.
#[derive(Debug, Default)]
pub(super) struct TurnMarks {
    turn: u32,
    marks: Vec<Mark>,
    max_revs: usize,
    max_bytes: usize,
}

/// A watcher's response in this turn: where it is in its stream's list, and its encoded length
/// (0 until a merge first needs it: most watchers get one revision per turn).
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    turn: u32,
    index: u32,
    len: u32,
}

impl TurnMarks {
    /// Returns marks that merge within the given limits.
    pub(super) fn new(max_revs: usize, max_bytes: usize) -> Self {
        Self { turn: 1, marks: Vec::new(), max_revs, max_bytes }
    }

    /// Starts a new turn: every earlier mark is stale.
    pub(super) fn next_turn(&mut self) {
        self.turn = self.turn.wrapping_add(1);
        if self.turn == 0 {
            self.marks.fill(Mark::default());
            self.turn = 1;
        }
    }

    /// Queues the events `batch[range]` of revision `rev` for the watcher `w` in `slot`: when
    /// the watcher's response of this turn is a run of the same batch that ends where `range`
    /// starts, the run just grows (no reference count, no new response); else as
    /// [`queue`](Self::queue) does.
    fn queue_run(
        &mut self,
        out: &mut PerStream,
        w: &Watcher,
        slot: WatcherSlot,
        rev: i64,
        batch: &CommitEvents,
        range: Range<usize>,
    ) {
        if let Some(mark) = self.marks.get_mut(slot.index()).filter(|m| m.turn == self.turn) {
            let queued = out.get_mut(&w.key.stream).and_then(|list| list.get_mut(mark.index as usize));
            if let Some(queued) = queued.filter(|d| d.key == w.key) {
                if mark.len == 0 {
                    let len = queued.response.encoded_len(RESPONSE_HEADER_ESTIMATE);
                    mark.len = u32::try_from(len).unwrap_or(u32::MAX);
                }
                let merged = queued.response.extend_run(
                    rev,
                    batch,
                    range.clone(),
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
        self.queue(out, w.key, slot, WatchResponse::run(w.key.id, rev, batch, range, w.prev_kv));
    }

    /// Queues `response` for the watcher `key` in `slot`: merged into the watcher's response
    /// of this turn when it can be, else as a response of its own.
    fn queue(&mut self, out: &mut PerStream, key: WatcherKey, slot: WatcherSlot, response: WatchResponse) {
        let list = out.entry(key.stream).or_default();
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

/// The most bytes (`Event::approx_size`) of consecutive revisions that share one batch. A
/// response holding a run keeps its whole batch alive, including other watchers' events, as
/// long as it waits in a stream's buffer or as a victim; this bounds what one held response can
/// keep beyond its own events. Hot keys with small values (the fan-out this is for: 64 puts of
/// 64 B in one commit are about 10 KiB) share a commit's batch whole.
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
    fn committed_batch(&mut self, events: Vec<Arc<Event>>, ranges: &mut Vec<(i64, Range<usize>)>, out: &mut PerStream) {
        let batch: CommitEvents = events.into();
        for (rev, range) in ranges.drain(..) {
            match_revision(
                &mut self.synced,
                &mut self.matched,
                rev,
                &batch,
                range.clone(),
                out,
                Some(&mut self.turn_marks),
            );
            self.remember(rev, &batch, range);
        }
    }

    /// Sends each stream its deliveries in one mailbox message; a full mailbox turns those
    /// watchers into victims (etcd `notify` on a failed `send`), never a wait.
    pub(super) fn deliver(&mut self, out: PerStream) {
        self.turn_marks.next_turn();
        let mut parked = Vec::new();
        for (stream, entries) in out {
            let Some(recipient) = self.streams.get(&stream) else {
                // The stream is gone: its watchers go with it.
                for e in entries {
                    self.synced.remove(&e.key);
                }
                continue;
            };
            let msg = Deliver::live(entries);
            let (responses, events) = msg.size();
            match recipient.try_deliver(msg) {
                Ok(()) => self.counters.delivered(responses, events),
                Err(SendError::Full(msg)) => {
                    // One message may carry several revisions for one watcher (group commit,
                    // ring replay): all of them go with it, in order.
                    let mut victims: Vec<Victim> = Vec::new();
                    for e in msg.entries {
                        if let Some(v) = victims.iter_mut().find(|v| v.watcher.key == e.key) {
                            v.responses.push(e.response);
                        } else if let Some(watcher) = self.synced.remove(&e.key) {
                            victims.push(Victim::new(watcher, e.response));
                        }
                    }
                    parked.extend(victims);
                }
                Err(SendError::Closed(msg)) => {
                    self.streams.remove(&stream);
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
    mut marks: Option<&mut TurnMarks>,
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
                match marks.as_deref_mut() {
                    Some(marks) => marks.queue_run(out, w, slot, rev, batch, range.clone()),
                    None => {
                        let response = WatchResponse::run(w.key.id, rev, batch, range.clone(), w.prev_kv);
                        out.entry(w.key.stream).or_default().push(Delivery { key: w.key, response });
                    }
                }
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
            match marks.as_deref_mut() {
                Some(marks) => marks.queue(out, w.key, slot, response),
                None => out.entry(w.key.stream).or_default().push(Delivery { key: w.key, response }),
            }
        }
    }
}
