//! Owns `Watcher`: one watch's identity, range, revisions and options (etcd `watcher` in
//! `watchable_store.go`). A watcher is a plain value: whichever group holds it owns it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::key_range::KeyRange;
use crate::kv::{Event, EventKind};

/// Identifies a client stream; unique for the life of the process.
pub type StreamId = u64;

/// A watch id, unique within its stream (etcd `WatchID`). `-1` is reserved for stream-wide
/// progress responses and failed creates.
pub type WatchId = i64;

/// The process-wide identity of a watcher: its stream, its id on that stream, and a sequence
/// number unique for the life of the process, so that a watcher whose id a client reuses after
/// a cancel is never mistaken for its predecessor (docs/etcd-semantics.md §10 quirk 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatcherKey {
    /// The stream that created the watcher.
    pub stream: StreamId,
    /// The watcher's id on that stream.
    pub id: WatchId,
    /// Unique per watcher in the process.
    pub seq: u64,
}

/// A flag the client's stream raises when it cancels a watcher. Every owner checks it when a
/// watcher reaches it by message, so a cancel wins even over a watcher in transit between
/// groups (docs/design.md, invariant 6). An atomic flag, not a lock.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Returns a flag that is not raised.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Returns whether the flag is raised.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl PartialEq for CancelFlag {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CancelFlag {}

/// Event filters a watcher asked for (etcd `WatchCreateRequest.filters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filters {
    /// Drop PUT events (etcd `NOPUT` = 0).
    pub no_put: bool,
    /// Drop DELETE events (etcd `NODELETE` = 1).
    pub no_delete: bool,
}

impl Filters {
    /// Returns whether `event` passes the filters (docs/etcd-semantics.md §6.3).
    #[must_use]
    pub fn accepts(&self, event: &Event) -> bool {
        match event.kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }
}

/// One watch: what it watches and how far it has been served.
///
/// Invariant: every matching event with revision `< min_rev` has been queued to the stream
/// exactly once, in order; `min_rev` only grows (docs/etcd-semantics.md §9 (c)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// Stream and id.
    pub key: WatcherKey,
    /// The keys watched. Never empty (creation rejects `key >= range_end`).
    pub range: KeyRange,
    /// The revision the client asked to start from (0 = "from now").
    pub start_rev: i64,
    /// The lowest revision the watcher still needs.
    pub min_rev: i64,
    /// Event filters.
    pub filters: Filters,
    /// Whether events carry `prev_kv` for this watcher.
    pub prev_kv: bool,
    /// Raised by the stream when the client cancels.
    pub cancel: CancelFlag,
}

/// Whether a watcher from `start_rev` catches up from history when the current revision is
/// `current` (etcd `watchStream.Watch`: start 0 or after the current revision is synced, anything
/// else, `start_rev == current` included, is unsynced; docs/etcd-semantics.md §6.2 step 4).
#[must_use]
pub fn starts_in_history(start_rev: i64, current: i64) -> bool {
    start_rev != 0 && start_rev <= current
}

impl Watcher {
    /// Returns whether the client has cancelled the watcher.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Returns whether the watcher has `event`'s key in range and has not seen its revision.
    #[must_use]
    pub fn wants(&self, event: &Event) -> bool {
        self.min_rev <= event.revision() && self.range.contains(&event.kv.key)
    }
}
