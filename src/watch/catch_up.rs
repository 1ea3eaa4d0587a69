//! Owns one catch-up pass over a set of unsynced watchers (etcd `watchable_store.go syncWatchers`
//! steps 2–5, docs/etcd-semantics.md §6.5), as a pure function of the watchers and a storage
//! snapshot. The runtime decides what to do with the result: send, park as victims, promote.

use std::sync::Arc;

use super::event_batch::{BatchLimits, EventBatch};
use super::history::row_event;
use super::watcher::Watcher;
use super::watcher_group::{WatcherGroup, WatcherSlot};
use crate::backend::RevisionSnapshot;
use crate::error::Error;

/// What one pass produced.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// Watchers whose `min_rev` is below the compact revision: they get a compaction notice
    /// and are dropped (or retried next pass if the notice cannot be sent).
    pub compacted: Vec<Watcher>,
    /// Every other watcher with the events it is owed. Its `min_rev` is already advanced: to
    /// `more_rev` if the batch was cut, else to `cur_rev + 1`. An empty batch means the watcher
    /// is caught up and sends nothing.
    pub batches: Vec<(Watcher, EventBatch)>,
}

/// A pass whose read failed: the error, and every watcher it was given, unchanged (a watcher's
/// `min_rev` moves only after a whole read), so that the caller can try them again.
#[derive(Debug)]
pub struct CatchUpFailed {
    /// The storage error.
    pub error: Error,
    /// The watchers, as they were given.
    pub watchers: Vec<Watcher>,
}

/// Runs one catch-up pass: reads the history rows of `[min min_rev, cur_rev]` once from
/// `snapshot` for all `watchers`, and gives each watcher the events in its range from its own
/// `min_rev`, within `limits` (revisions and bytes), whole revisions only.
///
/// Beyond etcd: etcd's batch counts revisions only, so 1000 revisions of 5 KiB values are one
/// response of 5 MiB, more than a client decodes by default (4 MiB in grpc-go and tonic); here
/// the batch also ends before the revision that would take it past `limits.max_bytes`.
///
/// Beyond etcd (#22264): the scan stops as soon as every watcher's batch is full, so a watcher
/// far behind costs one batch of reading per pass, not the whole history.
///
/// # Errors
/// Fails on storage errors or a row that does not decode, handing the watchers back.
pub fn catch_up(
    watchers: Vec<Watcher>,
    snapshot: &RevisionSnapshot,
    cur_rev: i64,
    compact_rev: i64,
    limits: BatchLimits,
) -> Result<CatchUp, CatchUpFailed> {
    catch_up_pausing(watchers, snapshot, cur_rev, compact_rev, limits, &mut || {})
}

/// [`catch_up`], calling `pause` before each history row it reads: a point between rows where
/// the caller's thread may give up its CPU. A pass reads up to `max_revs` rows in one go, and
/// the runtime's catch-up thread uses these points to hand the CPU back at once to a thread
/// that offered it (`watchkv-actors`' `sched::give_way`, docs/design.md).
///
/// # Errors
/// As [`catch_up`].
pub fn catch_up_pausing(
    watchers: Vec<Watcher>,
    snapshot: &RevisionSnapshot,
    cur_rev: i64,
    compact_rev: i64,
    limits: BatchLimits,
    pause: &mut dyn FnMut(),
) -> Result<CatchUp, CatchUpFailed> {
    let mut out = CatchUp::default();
    let mut group = WatcherGroup::new();
    let mut slots: Vec<(WatcherSlot, EventBatch)> = Vec::new();
    for w in watchers {
        if w.min_rev < compact_rev {
            out.compacted.push(w);
            continue;
        }
        if let Ok(slot) = group.insert(w) {
            slots.push((slot, EventBatch::new()));
        }
    }
    let Some(min_rev) = group.min_rev() else { return Ok(out) };
    let position: std::collections::HashMap<WatcherSlot, usize> =
        slots.iter().enumerate().map(|(i, (s, _))| (*s, i)).collect();
    let mut open = slots.len();
    let mut matched = Vec::new();
    let scanned = snapshot.scan(min_rev, cur_rev.saturating_add(1), |key, row| {
        pause();
        matched.clear();
        group.matching(row.key(), &mut matched);
        matched.retain(|s| group.slot(*s).is_some_and(|w| w.min_rev <= key.rev.main));
        if matched.is_empty() {
            return Ok(true);
        }
        let with_prev = matched.iter().any(|s| group.slot(*s).is_some_and(|w| w.prev_kv));
        let event = Arc::new(row_event(snapshot, key, row.decode()?, with_prev, compact_rev)?);
        for slot in &matched {
            let (Some(&i), Some(w)) = (position.get(slot), group.slot(*slot)) else { continue };
            let batch = &mut slots[i].1;
            if !batch.is_truncated() && !batch.add(Arc::clone(&event), w.prev_kv, limits) {
                open -= 1;
            }
        }
        Ok(open > 0)
    });
    if let Err(error) = scanned {
        let mut watchers = out.compacted;
        watchers.extend(group.drain());
        return Err(CatchUpFailed { error, watchers });
    }
    for (slot, batch) in slots {
        if let Some(mut w) = group.remove_slot(slot) {
            w.min_rev = if batch.is_truncated() { batch.more_rev } else { w.min_rev.max(cur_rev + 1) };
            out.batches.push((w, batch));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::request::PutRequest;
    use crate::watch::watcher::{CancelFlag, Filters, WatcherKey};
    use crate::{KeyRange, KvStore};

    fn watcher(id: i64, min_rev: i64, prev_kv: bool) -> Watcher {
        Watcher {
            key: WatcherKey { stream: 1, id, seq: id as u64 },
            range: KeyRange::prefix("k/"),
            start_rev: min_rev,
            min_rev,
            filters: Filters::default(),
            prev_kv,
            cancel: CancelFlag::new(),
        }
    }

    /// Passes over `w` until it is caught up, returning each pass's revisions.
    fn passes(store: &KvStore, mut w: Watcher, limits: BatchLimits) -> Vec<Vec<i64>> {
        let snapshot = store.reader().snapshot();
        let mut out = Vec::new();
        loop {
            let pass = catch_up(vec![w], &snapshot, store.current_rev(), store.compact_rev(), limits).expect("read");
            let (next, batch) = pass.batches.into_iter().next().expect("the watcher");
            let truncated = batch.is_truncated();
            out.push(batch.events.iter().map(|e| e.revision()).collect());
            if !truncated {
                return out;
            }
            w = next;
        }
    }

    #[test]
    fn a_pass_stops_at_the_byte_limit_and_the_next_goes_on_from_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = KvStore::open(StoreConfig::new(dir.path())).expect("open");
        let first = store.current_rev() + 1;
        for i in 0..10 {
            store.put(PutRequest::new(format!("k/{}", i % 3), vec![b'v'; 1000])).expect("put");
        }
        let last = store.current_rev();
        let one = 1040; // a 1000-byte value, its key and the event's framing, about
        let limits = BatchLimits { max_revs: 1000, max_bytes: 4 * one };
        let got = passes(&store, watcher(1, first, false), limits);
        assert_eq!(got.concat(), (first..=last).collect::<Vec<_>>(), "every revision once, in order");
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2], "{got:?}");

        // With prev_kv an event is about twice as large (the keys repeat from the fourth put).
        let with_prev = passes(&store, watcher(2, first, true), limits);
        assert_eq!(with_prev.concat(), (first..=last).collect::<Vec<_>>());
        assert!(with_prev.len() > got.len(), "{with_prev:?}");
        // The revision limit still holds beside the byte limit.
        let by_revs = passes(&store, watcher(3, first, false), BatchLimits { max_revs: 3, max_bytes: usize::MAX });
        assert_eq!(by_revs.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
    }

    #[test]
    fn a_pass_pauses_before_each_row_it_reads_and_not_past_its_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = KvStore::open(StoreConfig::new(dir.path())).expect("open");
        let first = store.current_rev() + 1;
        for i in 0..10 {
            // Every other put outside the watched prefix: rows read but not matched still pause.
            let key = if i % 2 == 0 { format!("k/{i}") } else { format!("other/{i}") };
            store.put(PutRequest::new(key, b"v".to_vec())).expect("put");
        }
        let snapshot = store.reader().snapshot();
        let (cur, compact) = (store.current_rev(), store.compact_rev());
        let mut pauses = 0;
        let all = BatchLimits { max_revs: 1000, max_bytes: usize::MAX };
        let pass = catch_up_pausing(vec![watcher(1, first, false)], &snapshot, cur, compact, all, &mut || pauses += 1)
            .expect("read");
        assert_eq!(pass.batches[0].1.events.len(), 5);
        assert_eq!(pauses, 10, "one pause per row of the ten revisions");

        // A batch cut at two revisions stops the scan at the row that would have been a third.
        let mut pauses = 0;
        let two = BatchLimits { max_revs: 2, max_bytes: usize::MAX };
        let pass = catch_up_pausing(vec![watcher(2, first, false)], &snapshot, cur, compact, two, &mut || pauses += 1)
            .expect("read");
        assert!(pass.batches[0].1.is_truncated());
        assert_eq!(pauses, 5, "rows first..=first+4: k/0, other/1, k/2, other/3, k/4 (the one cut off)");
    }
}
