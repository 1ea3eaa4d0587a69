//! Owns the watch-guarantee checker: etcd's `tests/robustness/validate/watch.go` guarantees
//! (docs/etcd-semantics.md §7.5) checked over one recorded stream against the store's full
//! [`History`].
//!
//! [`check_stream`] walks one stream's responses with the create requests sent on it (in the
//! order they were sent: the n-th `created` response answers the n-th create) and checks, per
//! watcher: Ordered, Unique, Atomic (fragment pieces excepted), Bookmarkable, Reliable,
//! Resumable, filters, IsCreate, PrevKV, range, header revision, and that nothing arrives for an
//! id that is not live (cancel wins). A watcher ended by a compaction notice or a cancel (client
//! or server) is checked up to that point; a compaction notice must be deserved. The id of a
//! watcher the server ended stays taken until the client cancels it: one plain `canceled`
//! answer may follow for it, and no create may reuse it before that.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use watchkv::watch::response::{WatchResponse, INVALID_WATCH_ID};
use watchkv::{Event, EventKind, KeyRange};

pub use super::history::show_response;
use super::history::{check_transition, show_event, History};
use crate::protocol::WatchCreate;

/// How a watcher's life on the stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Still live when the recording ends.
    Active,
    /// The create failed (`created` + `canceled`, id -1); the reason.
    CreateFailed(String),
    /// A cancel acknowledgement without a reason (the client cancelled).
    Canceled,
    /// A compaction notice at this compact revision.
    Compacted(i64),
    /// A server-side cancel with this reason (slow consumer).
    ServerCanceled(String),
}

/// What the checker saw of one watcher.
#[derive(Debug, Clone)]
pub struct WatcherReport {
    /// Its id (-1 for a failed create).
    pub id: i64,
    /// Its create request.
    pub create: WatchCreate,
    /// The `created` response's header revision.
    pub created_revision: i64,
    /// The first revision it is owed: `start_revision`, or created revision + 1 for start 0.
    pub first_expected: i64,
    /// Events received.
    pub events: usize,
    /// Revision of the last event received (0: none).
    pub last_event: i64,
    /// Revision of the last progress notification that applied to it (0: none).
    pub last_progress: i64,
    /// How it ended.
    pub end: End,
}

impl WatcherReport {
    /// Returns the last revision the watcher is known to be complete up to.
    #[must_use]
    pub fn last_observed(&self) -> i64 {
        self.last_event.max(self.last_progress)
    }
}

/// A live watcher during the walk.
struct Live {
    report: WatcherReport,
    range: KeyRange,
    /// Matching history events from `first_expected` on (range and filters applied).
    expected: Vec<Arc<Event>>,
    /// Next index into `expected`.
    cursor: usize,
    /// (revision, key) received.
    seen: HashSet<(i64, Vec<u8>)>,
    /// Last event revision of the previous whole (reassembled) response; 0 = none yet.
    prev_response_last: i64,
    /// The previous piece had `fragment = true`: this response continues it.
    in_fragment: bool,
}

impl Live {
    fn new(history: &History, id: i64, create: WatchCreate, created_revision: i64) -> Self {
        let key: &[u8] = if create.key.is_empty() { &[0] } else { &create.key };
        let range = KeyRange::from_wire(key, &create.range_end);
        let first_expected = if create.start_revision == 0 { created_revision + 1 } else { create.start_revision };
        let expected = history
            .events()
            .iter()
            .filter(|e| e.kv.mod_revision >= first_expected && range.contains(&e.kv.key) && create.filters.accepts(e))
            .cloned()
            .collect();
        Self {
            report: WatcherReport {
                id,
                create,
                created_revision,
                first_expected,
                events: 0,
                last_event: 0,
                last_progress: 0,
                end: End::Active,
            },
            range,
            expected,
            cursor: 0,
            seen: HashSet::new(),
            prev_response_last: 0,
            in_fragment: false,
        }
    }

    /// Reliable (+ Bookmarkable): every expected event up to `rev` has been received.
    fn complete_up_to(&self, rev: i64, why: &str) -> Result<(), String> {
        match self.expected.get(self.cursor) {
            Some(missing) if missing.kv.mod_revision <= rev => Err(format!(
                "{why} {rev}, but the event {} was never delivered (received {} events, last at {})",
                show_event(missing),
                self.report.events,
                self.report.last_event
            )),
            _ => Ok(()),
        }
    }

    fn progress(&mut self, rev: i64) -> Result<(), String> {
        if self.in_fragment {
            return Err(format!("Atomic: progress {rev} in the middle of a fragmented response"));
        }
        if rev < self.report.last_progress {
            return Err(format!(
                "Bookmarkable: progress revision went back from {} to {rev}",
                self.report.last_progress
            ));
        }
        if rev < self.report.last_event {
            return Err(format!(
                "Bookmarkable: progress {rev} is below the last event revision {}",
                self.report.last_event
            ));
        }
        self.complete_up_to(rev, "Bookmarkable: progress notification at")?;
        self.report.last_progress = rev;
        Ok(())
    }

    fn events(&mut self, history: &History, r: &WatchResponse) -> Result<(), String> {
        let create = &self.report.create;
        if r.prev_kv != create.prev_kv {
            return Err(format!(
                "PrevKV: response prev_kv flag is {} but the watcher asked {}",
                r.prev_kv, create.prev_kv
            ));
        }
        if r.fragment && !create.fragment {
            return Err("fragment piece for a watcher that did not ask for fragments".into());
        }
        let first = r.events[0].kv.mod_revision;
        let last = r.events.iter().map(|e| e.kv.mod_revision).max().unwrap_or(first);
        if r.revision < last {
            return Err(format!("header revision {} is below the response's last event revision {last}", r.revision));
        }
        if !self.in_fragment && self.prev_response_last != 0 && first == self.prev_response_last {
            return Err(format!(
                "Atomic: revision {first} split across responses (previous response ended at it, this one starts at it)"
            ));
        }
        for e in &r.events {
            self.event(history, e)?;
        }
        self.in_fragment = r.fragment;
        self.prev_response_last = last;
        Ok(())
    }

    fn event(&mut self, history: &History, e: &Arc<Event>) -> Result<(), String> {
        let rev = e.kv.mod_revision;
        let what = show_event(e);
        if !self.range.contains(&e.kv.key) {
            return Err(format!("event {what} is outside the watched range {:?}", self.range));
        }
        let filters = self.report.create.filters;
        if filters.no_put && e.kind == EventKind::Put {
            return Err(format!("Filter: PUT event {what} for a NOPUT watcher"));
        }
        if filters.no_delete && e.kind == EventKind::Delete {
            return Err(format!("Filter: DELETE event {what} for a NODELETE watcher"));
        }
        if rev < self.report.last_event {
            return Err(format!("Ordered: event {what} after an event at revision {}", self.report.last_event));
        }
        if !self.seen.insert((rev, e.kv.key.clone())) {
            return Err(format!("Unique: event {what} delivered twice"));
        }
        if self.report.last_progress != 0 && rev <= self.report.last_progress {
            return Err(format!(
                "Bookmarkable: event {what} after a progress notification at {}",
                self.report.last_progress
            ));
        }
        if rev < self.report.first_expected {
            return Err(format!(
                "event {what} is before the watcher's first revision {} (start_revision {})",
                self.report.first_expected, self.report.create.start_revision
            ));
        }
        // Content: the event is the history's event at (rev, key).
        let Some(h) = history.find(rev, &e.kv.key) else {
            return Err(format!("event {what} is not in the history (history ends at {})", history.last_revision()));
        };
        if h.kind != e.kind || h.kv != e.kv {
            return Err(format!("event {what} differs from the history: got {:?}, history has {:?}", e.kv, h.kv));
        }
        // IsCreate: a PUT is a create iff the key was absent at rev - 1.
        let before = history.state_before(&e.kv.key, rev);
        check_transition(e, before).map_err(|m| format!("IsCreate: {m}"))?;
        // PrevKV: when present, the key's state at rev - 1; creates never carry one.
        if self.report.create.prev_kv {
            if let Some(p) = &e.prev_kv {
                if e.is_create() {
                    return Err(format!("PrevKV: create event {what} carries prev_kv {p:?}"));
                }
                if before != Some(p) {
                    return Err(format!(
                        "PrevKV: event {what} has prev_kv {p:?}, the state at {} was {before:?}",
                        rev - 1
                    ));
                }
            }
        }
        // Resumable + Reliable: it is exactly the next expected event.
        match self.expected.get(self.cursor) {
            Some(next) if Arc::ptr_eq(next, h) => {}
            Some(next) if self.cursor == 0 && self.report.create.start_revision != 0 => {
                return Err(format!(
                    "Resumable: watch from {} delivered {what} first, but the first matching event is {}",
                    self.report.create.start_revision,
                    show_event(next)
                ));
            }
            Some(next) => {
                return Err(format!(
                    "Reliable: event {what} delivered while {} is missing (received {} events before it)",
                    show_event(next),
                    self.report.events
                ));
            }
            None => return Err(format!("event {what} is not owed to this watcher")),
        }
        self.cursor += 1;
        self.report.events += 1;
        self.report.last_event = rev;
        Ok(())
    }

    /// Ends the watcher with `end`; checks it got everything up to what it observed.
    fn finish(mut self, end: End) -> Result<WatcherReport, String> {
        self.complete_up_to(self.report.last_observed(), "Reliable: the watcher observed revision")?;
        self.report.end = end;
        Ok(self.report)
    }
}

/// Checks one stream's `responses` against `history`. `creates` are the create requests sent
/// on the stream, in order; the n-th `created` response (successful or failed) answers the n-th.
///
/// # Errors
/// The first broken guarantee, naming the watcher, the response index and the guarantee, with
/// the watcher's responses around it.
pub fn check_stream(history: &History, creates: &[WatchCreate], responses: &[WatchResponse]) -> Result<(), String> {
    check_stream_reports(history, creates, responses).map(|_| ())
}

/// [`check_stream`], returning a report per answered create, in create order.
///
/// # Errors
/// As [`check_stream`].
pub fn check_stream_reports(
    history: &History,
    creates: &[WatchCreate],
    responses: &[WatchResponse],
) -> Result<Vec<WatcherReport>, String> {
    let mut creates = creates.iter().cloned().enumerate();
    let mut reports: Vec<(usize, WatcherReport)> = Vec::new();
    // id -> (create index, watcher)
    let mut live: BTreeMap<i64, (usize, Live)> = BTreeMap::new();
    // Ids of watchers the server ended, not cancelled by the client yet.
    let mut ended: HashSet<i64> = HashSet::new();
    let at = |i: usize, id: i64, m: String| format!("response {i} (watch id {id}): {m}\n{}", context(responses, i, id));

    for (i, r) in responses.iter().enumerate() {
        if r.created {
            let Some((n, create)) = creates.next() else {
                return Err(at(i, r.watch_id, "a created response without a create request".into()));
            };
            if r.canceled {
                if r.watch_id != INVALID_WATCH_ID {
                    return Err(at(i, r.watch_id, "a failed create must carry watch id -1".into()));
                }
                let end = End::CreateFailed(r.cancel_reason.clone());
                let report = WatcherReport {
                    id: INVALID_WATCH_ID,
                    create,
                    created_revision: r.revision,
                    first_expected: 0,
                    events: 0,
                    last_event: 0,
                    last_progress: 0,
                    end,
                };
                reports.push((n, report));
                continue;
            }
            if !r.events.is_empty() || r.watch_id < 0 {
                return Err(at(i, r.watch_id, "a created response with events or a negative id".into()));
            }
            if live.contains_key(&r.watch_id) {
                return Err(at(i, r.watch_id, "created for an id that is still live".into()));
            }
            if ended.contains(&r.watch_id) {
                return Err(at(
                    i,
                    r.watch_id,
                    "created for an id the server ended and the client has not cancelled".into(),
                ));
            }
            if create.watch_id != 0 && create.watch_id != r.watch_id {
                return Err(at(
                    i,
                    r.watch_id,
                    format!("created answers a create that asked for id {}", create.watch_id),
                ));
            }
            live.insert(r.watch_id, (n, Live::new(history, r.watch_id, create, r.revision)));
            continue;
        }
        if r.watch_id == INVALID_WATCH_ID {
            if !r.is_progress_notify() {
                return Err(at(
                    i,
                    r.watch_id,
                    format!("a response with id -1 that is not a progress notification: {r:?}"),
                ));
            }
            if r.revision > history.last_revision() {
                return Err(at(
                    i,
                    r.watch_id,
                    format!("progress {} is past the history's end {}", r.revision, history.last_revision()),
                ));
            }
            if live.is_empty() {
                return Err(at(
                    i,
                    r.watch_id,
                    "a stream-wide progress notification on a stream with no watchers".into(),
                ));
            }
            for (id, (_, w)) in &mut live {
                w.progress(r.revision).map_err(|m| at(i, *id, format!("stream-wide progress: {m}")))?;
            }
            continue;
        }
        if ended.contains(&r.watch_id) {
            // The answer to the client's cancel of a watcher the server had ended.
            if r.canceled && r.events.is_empty() && r.compact_revision == 0 && r.cancel_reason.is_empty() {
                ended.remove(&r.watch_id);
                continue;
            }
            return Err(at(i, r.watch_id, "a response for a watcher the server had ended".into()));
        }
        let Some((_, w)) = live.get_mut(&r.watch_id) else {
            return Err(at(
                i,
                r.watch_id,
                "a response for an id that is not live (never created, cancelled or ended)".into(),
            ));
        };
        if r.canceled {
            if !r.events.is_empty() {
                return Err(at(i, r.watch_id, "a cancel with events".into()));
            }
            if w.in_fragment {
                return Err(at(i, r.watch_id, "Atomic: cancel in the middle of a fragmented response".into()));
            }
            let end = if r.compact_revision != 0 {
                // Deserved only if the watcher still needed a revision below the compact
                // revision: it needs at least max(first expected, last observed + 1).
                let needs = w.report.first_expected.max(w.report.last_observed() + 1);
                if needs >= r.compact_revision {
                    return Err(at(
                        i,
                        r.watch_id,
                        format!(
                            "compaction notice at {} but the watcher only needed revisions from {needs}",
                            r.compact_revision
                        ),
                    ));
                }
                End::Compacted(r.compact_revision)
            } else if r.cancel_reason.is_empty() {
                End::Canceled
            } else {
                End::ServerCanceled(r.cancel_reason.clone())
            };
            if matches!(end, End::Compacted(_) | End::ServerCanceled(_)) {
                ended.insert(r.watch_id);
            }
            // Present: it was looked up above.
            if let Some((n, w)) = live.remove(&r.watch_id) {
                reports.push((n, w.finish(end).map_err(|m| at(i, r.watch_id, m))?));
            }
            continue;
        }
        if r.compact_revision != 0 {
            return Err(at(i, r.watch_id, "compact_revision set on a response that is not a cancel".into()));
        }
        if r.events.is_empty() {
            if !r.is_progress_notify() {
                return Err(at(i, r.watch_id, format!("an empty response that is not a progress notification: {r:?}")));
            }
            if r.revision > history.last_revision() {
                return Err(at(
                    i,
                    r.watch_id,
                    format!("progress {} is past the history's end {}", r.revision, history.last_revision()),
                ));
            }
            if !w.report.create.progress_notify {
                return Err(at(
                    i,
                    r.watch_id,
                    "a periodic progress notification for a watcher without progress_notify".into(),
                ));
            }
            w.progress(r.revision).map_err(|m| at(i, r.watch_id, m))?;
            continue;
        }
        w.events(history, r).map_err(|m| at(i, r.watch_id, m))?;
    }
    for (id, (n, w)) in live {
        let report = w.finish(End::Active).map_err(|m| format!("watch id {id} at the end of the stream: {m}"))?;
        reports.push((n, report));
    }
    // Creates not answered yet (still in flight when the recording was taken) have no report.
    reports.sort_by_key(|(n, _)| *n);
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}

/// [`check_stream_reports`], panicking with the broken guarantee.
#[track_caller]
pub fn assert_stream_ok(history: &History, creates: &[WatchCreate], responses: &[WatchResponse]) -> Vec<WatcherReport> {
    match check_stream_reports(history, creates, responses) {
        Ok(reports) => reports,
        Err(e) => panic!("watch guarantee broken: {e}"),
    }
}

/// A few responses of `id` around index `i`, one line each, for failure messages.
fn context(responses: &[WatchResponse], i: usize, id: i64) -> String {
    let mut out = String::new();
    let mine: Vec<usize> = (0..responses.len())
        .filter(|&j| responses[j].watch_id == id || responses[j].watch_id == INVALID_WATCH_ID)
        .collect();
    let pos = mine.partition_point(|&j| j < i);
    for &j in &mine[pos.saturating_sub(8)..(pos + 3).min(mine.len())] {
        let _ = writeln!(out, "  {}{j}: {}", if j == i { "> " } else { "  " }, show_response(&responses[j]));
    }
    out
}
