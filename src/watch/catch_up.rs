//! Owns one catch-up pass over a set of unsynced watchers (etcd `watchable_store.go syncWatchers`
//! steps 2–5, docs/etcd-semantics.md §6.5), as a pure function of the watchers and a storage
//! snapshot. The runtime decides what to do with the result: send, park as victims, promote.

use std::sync::Arc;

use super::event_batch::EventBatch;
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
/// `min_rev`, at most `max_revs` revisions, whole revisions only.
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
    max_revs: usize,
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
        matched.clear();
        group.matching(row.key(), &mut matched);
        matched.retain(|s| group.slot(*s).is_some_and(|w| w.min_rev <= key.rev.main));
        if matched.is_empty() {
            return Ok(true);
        }
        let with_prev = matched.iter().any(|s| group.slot(*s).is_some_and(|w| w.prev_kv));
        let event = Arc::new(row_event(snapshot, key, row.decode()?, with_prev, compact_rev)?);
        for slot in &matched {
            if let Some(&i) = position.get(slot) {
                let batch = &mut slots[i].1;
                if !batch.is_truncated() && !batch.add(Arc::clone(&event), max_revs) {
                    open -= 1;
                }
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
