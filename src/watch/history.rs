//! Owns the catch-up read: turning the history rows of `[min_rev, max_rev)` into events from a
//! storage snapshot (etcd `watchable_store.go rangeEvents` + `kvsToEvents`, docs/etcd-semantics.md
//! §6.5 step 3). Runs off the writer's thread; it never touches the key index.

use std::sync::Arc;

use crate::backend::RevisionSnapshot;
use crate::codec::Row;
use crate::error::Result;
use crate::kv::{Event, EventKind, KeyValue};
use crate::revision::BackendKey;

/// What the caller wants of a row's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// No watcher needs the key: skip the row.
    No,
    /// Some watcher needs the event.
    Event,
    /// Some watcher needs the event with `prev_kv`.
    EventWithPrevKv,
}

/// Returns the events of every row with `min_rev <= main < max_rev` whose key `wanted` selects,
/// in `(revision, sub)` order.
///
/// A DELETE event carries only the key and the deletion revision (docs/etcd-semantics.md §3).
/// `prev_kv` is read only when asked for, and left out when the state at `mod_revision - 1` may
/// have been compacted (`mod_revision <= compact_rev`, as etcd's send loop does) and for create
/// events.
///
/// # Errors
/// Fails on storage errors or a row that does not decode (naming its revision).
pub fn range_events(
    snapshot: &RevisionSnapshot,
    min_rev: i64,
    max_rev: i64,
    compact_rev: i64,
    mut wanted: impl FnMut(&[u8]) -> Wanted,
) -> Result<Vec<Arc<Event>>> {
    let mut events = Vec::new();
    snapshot.scan(min_rev, max_rev, |key, row| {
        let want = wanted(row.key());
        if want != Wanted::No {
            events.push(Arc::new(row_event(
                snapshot,
                key,
                row.decode()?,
                want == Wanted::EventWithPrevKv,
                compact_rev,
            )?));
        }
        Ok(true)
    })?;
    Ok(events)
}

/// Turns one history row into its event (etcd `kvsToEvents`): a tombstone row becomes a DELETE
/// whose kv has only the key and the deletion revision. With `with_prev_kv`, `prev_kv` is read
/// from the row the key's previous state lives in, unless the event creates the key or its
/// revision is at or below `compact_rev` (the state before it may be gone).
///
/// # Errors
/// Fails on storage errors or a previous row that does not decode.
pub fn row_event(
    snapshot: &RevisionSnapshot,
    key: BackendKey,
    row: Row,
    with_prev_kv: bool,
    compact_rev: i64,
) -> Result<Event> {
    let (kind, kv) = if key.tombstone {
        (EventKind::Delete, KeyValue { key: row.kv.key, mod_revision: key.rev.main, ..KeyValue::default() })
    } else {
        (EventKind::Put, row.kv)
    };
    let is_create = kind == EventKind::Put && kv.create_revision == kv.mod_revision;
    let prev_kv = match row.prev {
        Some(prev) if with_prev_kv && !is_create && key.rev.main > compact_rev => {
            snapshot.get_row(prev.to_key(false))?.map(|r| r.kv)
        }
        _ => None,
    };
    Ok(Event::new(kind, kv, prev_kv))
}
