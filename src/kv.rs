//! Owns the value types that cross the store boundary: `KeyValue`, `Event`, `EventKind`
//! (etcd `mvccpb.KeyValue` / `mvccpb.Event`, docs/etcd-semantics.md §3).

/// A lease id; 0 means "no lease".
pub type LeaseId = i64;

/// One version of a key (etcd `mvccpb.KeyValue`, docs/etcd-semantics.md §2–§3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the put that started the key's current life (0 in a DELETE event).
    pub create_revision: i64,
    /// Revision of the last change of the key.
    pub mod_revision: i64,
    /// Number of puts in the key's current life, up to this one (0 in a DELETE event).
    pub version: i64,
    /// The value.
    pub value: Vec<u8>,
    /// The lease the key is attached to; 0 = none.
    pub lease: LeaseId,
}

/// Whether an event records a put or a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was written (etcd `PUT` = 0).
    Put,
    /// The key was deleted, explicitly or by lease expiry (etcd `DELETE` = 1).
    Delete,
}

/// One change produced by a committed write (etcd `mvccpb.Event`, docs/etcd-semantics.md §3).
///
/// A DELETE event's `kv` carries only `key` and `mod_revision` (the deletion revision).
/// `prev_kv` is the key's state at `mod_revision - 1` when that is known (absent for create
/// events, and when history at `mod_revision - 1` has been compacted); watchers that did not ask
/// for it never see it, so the same event can be shared by every watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key's new state (put) or the key and deletion revision (delete).
    pub kv: KeyValue,
    /// The key's previous state, when known.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// Returns whether this event created the key: a PUT with `create_revision == mod_revision`
    /// (docs/etcd-semantics.md §3: `version == 1`).
    #[must_use]
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.kv.create_revision == self.kv.mod_revision
    }

    /// Returns the revision the event happened at.
    #[must_use]
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }

    /// Returns an approximation of the bytes the event holds, for memory accounting.
    #[must_use]
    pub fn approx_size(&self) -> usize {
        let kv = |kv: &KeyValue| kv.key.len() + kv.value.len() + 40;
        kv(&self.kv) + self.prev_kv.as_ref().map_or(0, kv) + 16
    }
}
