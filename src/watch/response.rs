//! Owns `WatchResponse`, the transport-neutral response a stream sends (etcd
//! `etcdserverpb.WatchResponse`, docs/etcd-semantics.md §7.3), its protobuf size, and fragment
//! splitting (etcd `v3rpc/watch.go sendFragments`, docs/etcd-semantics.md §7.4).

use std::ops::Range;
use std::sync::Arc;

pub use super::events::{CommitEvents, Events};
use super::watcher::WatchId;
use crate::kv::{Event, EventKind, KeyValue};

/// The watch id of stream-wide progress responses and of failed creates (etcd
/// `InvalidWatchID`).
pub const INVALID_WATCH_ID: WatchId = -1;

/// One response on a watch stream. Events are shared; `prev_kv` says whether the events'
/// `prev_kv` belongs in this response (the watcher asked for it), so encoders leave it out
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchResponse {
    /// The watcher the response is for; -1 for stream-wide progress and failed creates.
    pub watch_id: WatchId,
    /// `header.revision`; 0 (unset) on a compaction notice.
    pub revision: i64,
    /// Answers a create.
    pub created: bool,
    /// The watcher is gone (cancel, failed create, compaction).
    pub canceled: bool,
    /// Set when the watcher's start is below the compact revision.
    pub compact_revision: i64,
    /// Why the watcher was cancelled, when there is something to say.
    pub cancel_reason: String,
    /// More pieces of this response follow (only for watchers created with `fragment`).
    pub fragment: bool,
    /// The events, in revision order.
    pub events: Events,
    /// Whether to include the events' `prev_kv`.
    pub prev_kv: bool,
}

impl WatchResponse {
    /// A successful create.
    #[must_use]
    pub fn created(watch_id: WatchId, revision: i64) -> Self {
        Self { watch_id, revision, created: true, ..Self::default() }
    }

    /// A failed create: `created` and `canceled`, id -1, with the reason.
    #[must_use]
    pub fn create_failed(reason: impl Into<String>, revision: i64) -> Self {
        Self {
            watch_id: INVALID_WATCH_ID,
            revision,
            created: true,
            canceled: true,
            cancel_reason: reason.into(),
            ..Self::default()
        }
    }

    /// A cancel acknowledgement, or a server-side cancel with a reason.
    #[must_use]
    pub fn canceled(watch_id: WatchId, revision: i64, reason: impl Into<String>) -> Self {
        Self { watch_id, revision, canceled: true, cancel_reason: reason.into(), ..Self::default() }
    }

    /// A compaction notice: canceled, `compact_revision` set, header revision unset.
    #[must_use]
    pub fn compacted(watch_id: WatchId, compact_revision: i64) -> Self {
        Self { watch_id, canceled: true, compact_revision, ..Self::default() }
    }

    /// A progress notification.
    #[must_use]
    pub fn progress(watch_id: WatchId, revision: i64) -> Self {
        Self { watch_id, revision, ..Self::default() }
    }

    /// Events for a watcher.
    #[must_use]
    pub fn events(watch_id: WatchId, revision: i64, events: Vec<Arc<Event>>, prev_kv: bool) -> Self {
        Self { watch_id, revision, events: Events::from_vec(events), prev_kv, ..Self::default() }
    }

    /// One event for a watcher (the fan-out's case: no allocation for the event list).
    #[must_use]
    pub fn event(watch_id: WatchId, revision: i64, event: Arc<Event>, prev_kv: bool) -> Self {
        let mut events = Events::new();
        events.push(event);
        Self { watch_id, revision, events, prev_kv, ..Self::default() }
    }

    /// Events `batch[range]` for a watcher, sharing the batch (the fan-out's case: one
    /// reference count for however many of the batch's revisions the response comes to hold).
    #[must_use]
    pub fn run(watch_id: WatchId, revision: i64, batch: &CommitEvents, range: Range<usize>, prev_kv: bool) -> Self {
        Self { watch_id, revision, events: Events::run(batch, range), prev_kv, ..Self::default() }
    }

    /// [`merge`](Self::merge) for the fan-out's common case, without making a response first:
    /// appends `batch[range]`, the events of the revisions up to `revision`, when this
    /// response's events are a run of `batch` ending where `range` starts and the limits of
    /// `merge` hold. The caller guarantees that the events are this watcher's, later than this
    /// response's, and that `added` is their encoded size in this response's form (with or
    /// without `prev_kv`). Returns the merged encoded length, or `None` (unchanged) when this is
    /// not such a run or a limit would be passed.
    #[allow(clippy::too_many_arguments)] // the fan-out's inner loop: nothing built per call
    pub fn extend_run(
        &mut self,
        revision: i64,
        batch: &CommitEvents,
        range: Range<usize>,
        added: usize,
        encoded_len: usize,
        max_revs: usize,
        max_bytes: usize,
    ) -> Option<usize> {
        if !self.is_events_only() {
            return None;
        }
        let first = self.events.first()?.revision();
        let last = self.events.last()?.revision();
        let span = revision.saturating_sub(first).saturating_add(1);
        if revision <= last || usize::try_from(span).map_or(true, |s| s > max_revs) {
            return None;
        }
        let merged_len = encoded_len.saturating_add(added);
        if merged_len > max_bytes || !self.events.extend_run(batch, range) {
            return None;
        }
        self.revision = self.revision.max(revision);
        Some(merged_len)
    }

    /// Returns whether a client would classify this as a progress notification
    /// (`client/v3/watch.go IsProgressNotify`).
    #[must_use]
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty() && !self.created && !self.canceled && self.compact_revision == 0 && self.revision != 0
    }

    /// Returns the protobuf-encoded size of the response, counting a header of `header_len`
    /// bytes (0 = no header), as etcd's `WatchResponse.Size()` does.
    #[must_use]
    pub fn encoded_len(&self, header_len: usize) -> usize {
        let mut n = 0;
        if header_len > 0 {
            n += field(header_len);
        }
        n += int_field(self.watch_id);
        n += if self.created { 2 } else { 0 };
        n += if self.canceled { 2 } else { 0 };
        n += int_field(self.compact_revision);
        if !self.cancel_reason.is_empty() {
            n += field(self.cancel_reason.len());
        }
        n += if self.fragment { 2 } else { 0 };
        n += self.events.iter().map(|e| e.field_len(self.prev_kv)).sum::<usize>();
        n
    }

    /// Returns whether this is a plain events response: events for one watcher and nothing
    /// else (no create, cancel, compaction or fragment flag).
    #[must_use]
    pub fn is_events_only(&self) -> bool {
        !self.events.is_empty() && !self.created && !self.canceled && self.compact_revision == 0 && !self.fragment
    }

    /// Appends `next`'s events to this response when both are plain events responses of the
    /// same watcher and the result stays a valid batch: `next`'s events all come after this
    /// one's (a revision is never split), the revisions spanned stay within `max_revs` (etcd
    /// `watchBatchMaxRevs`), and the encoded size stays at most `max_bytes`. `encoded_len` is
    /// this response's current [`encoded_len`](Self::encoded_len) with the caller's header, so
    /// that merging costs only `next`'s events however long this response has grown. The header
    /// revision becomes the later one. Returns the merged response's encoded length, or `next`
    /// back when it cannot be merged.
    ///
    /// A stream whose client is not reading coalesces the responses waiting for its socket this
    /// way, as etcd's victims get one multi-revision response instead of one per revision.
    ///
    /// # Errors
    /// `next`, unchanged, when it cannot be merged.
    pub fn merge(&mut self, next: Self, encoded_len: usize, max_revs: usize, max_bytes: usize) -> Result<usize, Self> {
        if !self.is_events_only()
            || !next.is_events_only()
            || self.watch_id != next.watch_id
            || self.prev_kv != next.prev_kv
        {
            return Err(next);
        }
        let (Some(first), Some(last), Some(next_first), Some(next_last)) =
            (self.events.first(), self.events.last(), next.events.first(), next.events.last())
        else {
            return Err(next);
        };
        let span = next_last.revision().saturating_sub(first.revision()).saturating_add(1);
        if next_first.revision() <= last.revision() || usize::try_from(span).map_or(true, |s| s > max_revs) {
            return Err(next);
        }
        let added: usize = next.events.iter().map(|e| e.field_len(next.prev_kv)).sum();
        let merged_len = encoded_len.saturating_add(added);
        if merged_len > max_bytes {
            return Err(next);
        }
        self.revision = self.revision.max(next.revision);
        self.events.extend(next.events);
        Ok(merged_len)
    }

    /// Splits the response into pieces for a `fragment` watcher (etcd `sendFragments`): a
    /// response below `max_bytes` or with fewer than 2 events is sent whole; otherwise each
    /// piece takes events while it stays below `max_bytes` (always at least one, so an event is
    /// never split), and every piece but the last has `fragment = true`.
    #[must_use]
    pub fn into_fragments(self, max_bytes: usize, header_len: usize) -> Vec<Self> {
        if self.events.len() < 2 || self.encoded_len(header_len) < max_bytes {
            return vec![self];
        }
        let mut template = self.clone();
        template.events = Events::new();
        template.fragment = true;
        let base = template.encoded_len(header_len);
        let mut pieces = Vec::new();
        let mut cur = template.clone();
        let mut size = base;
        for event in self.events {
            let len = event.field_len(self.prev_kv);
            if !cur.events.is_empty() && size + len >= max_bytes {
                pieces.push(std::mem::replace(&mut cur, template.clone()));
                size = base;
            }
            size += len;
            cur.events.push(event);
        }
        cur.fragment = false;
        pieces.push(cur);
        pieces
    }
}

/// Bytes of a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited field with a one-byte tag.
fn field(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// An int64 field with a one-byte tag; absent when 0.
fn int_field(v: i64) -> usize {
    if v == 0 {
        0
    } else {
        1 + varint_len(v as u64)
    }
}

fn kv_len(kv: &KeyValue) -> usize {
    let bytes = |b: &[u8]| if b.is_empty() { 0 } else { field(b.len()) };
    bytes(&kv.key)
        + int_field(kv.create_revision)
        + int_field(kv.mod_revision)
        + int_field(kv.version)
        + bytes(&kv.value)
        + int_field(kv.lease)
}

/// The bytes `e` takes as a field of a `WatchResponse` (computed once, by `Event::new`).
pub(crate) fn event_field_len(e: &Event, with_prev: bool) -> usize {
    let kind = if e.kind == EventKind::Delete { 2 } else { 0 };
    let prev = match (&e.prev_kv, with_prev) {
        (Some(p), true) => field(kv_len(p)),
        _ => 0,
    };
    field(kind + field(kv_len(&e.kv)) + prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(key_len: usize, n: usize) -> Vec<Arc<Event>> {
        (0..n)
            .map(|_| {
                Arc::new(Event::new(EventKind::Put, KeyValue { key: vec![b'a'; key_len], ..KeyValue::default() }, None))
            })
            .collect()
    }

    // E1 TestSendFragment (sizes are protobuf sizes; header nil).
    #[test]
    fn e1_send_fragment() {
        let cases = [
            (100, 1, i32::MAX as usize, 1),
            (10, 2, 50, 1),
            (1024, 1, 1, 1),
            (11, 5, 20, 5),
            (15, 5, 10, 5),
            (10, 4, 35, 2),
        ];
        for (s, n, limit, want) in cases {
            let resp = WatchResponse::events(0, 0, events(s, n), false);
            let pieces = resp.into_fragments(limit, 0);
            assert_eq!(pieces.len(), want, "S={s} N={n} L={limit}");
            let total: usize = pieces.iter().map(|p| p.events.len()).sum();
            assert_eq!(total, n);
            for (i, p) in pieces.iter().enumerate() {
                assert_eq!(p.fragment, i + 1 < pieces.len(), "fragment flag of piece {i}");
            }
        }
        assert_eq!(WatchResponse::events(0, 0, events(10, 2), false).encoded_len(0), 32);
    }

    #[test]
    fn progress_classification() {
        assert!(WatchResponse::progress(-1, 5).is_progress_notify());
        assert!(!WatchResponse::created(0, 5).is_progress_notify());
        assert!(!WatchResponse::compacted(0, 5).is_progress_notify());
        assert!(!WatchResponse::progress(3, 0).is_progress_notify());
    }

    fn put_at(rev: i64) -> Arc<Event> {
        Arc::new(Event::new(
            EventKind::Put,
            KeyValue { key: b"k".to_vec(), value: vec![b'v'; 8], mod_revision: rev, ..KeyValue::default() },
            None,
        ))
    }

    #[test]
    fn merge_appends_later_revisions_of_the_same_watcher() {
        let mut r = WatchResponse::event(3, 10, put_at(10), false);
        let len = r.merge(WatchResponse::event(3, 11, put_at(11), false), r.encoded_len(0), 1000, usize::MAX);
        assert_eq!(len, Ok(r.encoded_len(0)), "the merged length is the encoded length");
        let more = WatchResponse::events(3, 13, vec![put_at(12), put_at(13)], false);
        let len = r.merge(more, r.encoded_len(0), 1000, usize::MAX);
        assert_eq!(len, Ok(r.encoded_len(0)));
        assert_eq!(r.revision, 13);
        let revs: Vec<i64> = r.events.iter().map(|e| e.revision()).collect();
        assert_eq!(revs, [10, 11, 12, 13]);
    }

    #[test]
    fn merge_refuses_what_would_break_a_batch() {
        let base = WatchResponse::event(3, 10, put_at(10), false);
        let refused = |next: WatchResponse, max_revs: usize, max_bytes: usize| {
            let mut r = base.clone();
            let back = r.merge(next.clone(), base.encoded_len(0), max_revs, max_bytes);
            assert_eq!(back, Err(next), "merged when it must not");
            assert_eq!(r, base, "changed when it must not");
        };
        // Another watcher, another prev_kv choice, a non-event response.
        refused(WatchResponse::event(4, 11, put_at(11), false), 1000, usize::MAX);
        refused(WatchResponse::event(3, 11, put_at(11), true), 1000, usize::MAX);
        refused(WatchResponse::progress(3, 11), 1000, usize::MAX);
        refused(WatchResponse::canceled(3, 11, "bye"), 1000, usize::MAX);
        // The same revision again (a revision is never split) or an older one.
        refused(WatchResponse::event(3, 10, put_at(10), false), 1000, usize::MAX);
        refused(WatchResponse::event(3, 9, put_at(9), false), 1000, usize::MAX);
        // Past the revision span, or past the size limit.
        refused(WatchResponse::event(3, 12, put_at(12), false), 2, usize::MAX);
        refused(WatchResponse::event(3, 11, put_at(11), false), 1000, base.encoded_len(0) + 4);
        // A fragment piece is never merged into.
        let mut piece = base.clone();
        piece.fragment = true;
        let next = WatchResponse::event(3, 11, put_at(11), false);
        assert_eq!(piece.merge(next.clone(), piece.encoded_len(0), 1000, usize::MAX), Err(next));
    }

    #[test]
    fn merged_size_is_the_encoded_size() {
        let mut r = WatchResponse::event(3, 10, put_at(10), false);
        let next = WatchResponse::event(3, 11, put_at(11), false);
        let limit = WatchResponse::events(3, 11, vec![put_at(10), put_at(11)], false).encoded_len(32);
        assert_eq!(r.merge(next, r.encoded_len(32), 1000, limit), Ok(limit), "merges exactly up to the limit");
        assert_eq!(r.encoded_len(32), limit);
    }
}
