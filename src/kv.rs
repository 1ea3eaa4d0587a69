//! Owns the value types that cross the store boundary: `KeyValue`, `Event`, `EventKind`
//! (etcd `mvccpb.KeyValue` / `mvccpb.Event`, docs/etcd-semantics.md §3), and the cache of an
//! event's wire forms that every watcher of the event shares.

use std::sync::OnceLock;

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
/// Build one with [`Event::new`].
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
    /// The event's protobuf field length in a watch response, without and with `prev_kv`:
    /// sizing a response (merging, fragments) costs no walk over keys and values.
    field_lens: [u32; 2],
    /// The event's wire forms, made at most once each (see [`Event::encoded`]).
    encoded: EncodedForms,
}

/// A wire form of an event that transports encode once and share between every watcher that
/// receives the event (see [`Event::encoded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireForm {
    /// `mvccpb.Event` in protobuf, without `prev_kv`, as the gRPC transport frames it (for
    /// `WatchResponse.events`: field tag and length, then the message).
    ProtobufField = 0,
    /// As [`ProtobufField`](Self::ProtobufField), with `prev_kv` when the event has one.
    ProtobufFieldWithPrevKv = 1,
    /// The gateway's JSON, without `prev_kv`.
    Json = 2,
    /// The gateway's JSON, with `prev_kv` when the event has one.
    JsonWithPrevKv = 3,
}

/// The cached wire forms of one event. Empty until a transport asks for a form, so an event
/// that never leaves the process costs one pointer; a clone starts empty, and the cache never
/// takes part in equality.
#[derive(Default)]
struct EncodedForms(OnceLock<Box<FormSlots>>);

/// One slot per [`WireForm`].
type FormSlots = [OnceLock<Box<[u8]>>; 4];

impl Clone for EncodedForms {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for EncodedForms {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EncodedForms {}

impl std::fmt::Debug for EncodedForms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

impl Event {
    /// Returns an event; its wire forms are made when a transport first asks for them. Treat
    /// it as immutable once built (it is shared by `Arc`): its sizes and wire forms are those
    /// of the state it was built with.
    #[must_use]
    pub fn new(kind: EventKind, kv: KeyValue, prev_kv: Option<KeyValue>) -> Self {
        let mut event = Self { kind, kv, prev_kv, field_lens: [0; 2], encoded: EncodedForms::default() };
        let len =
            |with_prev| u32::try_from(crate::watch::response::event_field_len(&event, with_prev)).unwrap_or(u32::MAX);
        event.field_lens = [len(false), len(true)];
        event
    }

    /// Returns the bytes the event takes as a field of a protobuf `WatchResponse` (tag, length
    /// and `mvccpb.Event`), with `prev_kv` if `with_prev_kv` and the event has one.
    #[must_use]
    pub fn field_len(&self, with_prev_kv: bool) -> usize {
        self.field_lens[usize::from(with_prev_kv)] as usize
    }

    /// Returns the event's `form`, made by `encode` the first time any caller asks for it and
    /// shared from then on: a revision delivered to many watchers is encoded once, whatever
    /// the number of watchers (the transports frame each watcher's response around these
    /// bytes). A form "with `prev_kv`" of an event without one is its plain form. `encode` must
    /// depend only on the event: the first caller's result is every caller's.
    pub fn encoded(&self, form: WireForm, encode: impl FnOnce(&Event) -> Vec<u8>) -> &[u8] {
        let form = match form {
            WireForm::ProtobufFieldWithPrevKv if self.prev_kv.is_none() => WireForm::ProtobufField,
            WireForm::JsonWithPrevKv if self.prev_kv.is_none() => WireForm::Json,
            form => form,
        };
        let slots = self.encoded.0.get_or_init(Box::default);
        slots[form as usize].get_or_init(|| encode(self).into_boxed_slice())
    }

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
