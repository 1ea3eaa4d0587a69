//! watchkv core: an etcd-v3-compatible watchable MVCC key-value store on fjall, synchronous and
//! free of actors so that every step can be called from a test.
//!
//! Who owns what:
//! - [`alarm`]: the `NOSPACE` and `CORRUPT` alarms and the space quota's costs.
//! - [`auth`]: users, roles, permissions and their checks (etcd `auth/store.go`).
//! - [`auto_compaction`]: etcd's periodic and revision auto-compaction policies.
//! - [`revision`]: `Revision{main, sub}` and the 17/18-byte backend keys.
//! - [`key_range`]: `KeyRange` with etcd's wire rules.
//! - [`kv`]: `KeyValue`, `Event`.
//! - [`codec`]: the only module that names bincode.
//! - [`config`]: every tunable with its etcd default.
//! - [`disk_stats`]: the journal's sync and commit timings, in etcd's histogram buckets.
//! - [`error`]: `Error` with etcd's texts.
//! - [`key_index`], [`index`]: per-key generations and the in-memory key index.
//! - [`backend`]: the only module that names fjall.
//! - [`kv_store`]: `KvStore`, the MVCC store (writes, reads, compaction, leases, restore).
//! - [`request`]: request/response values and txn validation.
//! - [`lease`]: the in-memory lease table.
//! - [`compaction`]: the physical compaction worker.
//! - [`hash`]: `HashKV` as etcd computes it, and the whole-store `Hash`.
//! - [`watch`]: watcher groups and event batches.
//! - [`snapshot`]: the snapshot file format (what a snapshot holds is `kv_store`'s).
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod alarm;
pub mod auth;
pub mod auto_compaction;
pub mod backend;
pub mod codec;
pub mod compaction;
pub mod config;
pub mod disk_stats;
pub mod error;
pub mod hash;
pub mod index;
pub mod key_index;
pub mod key_range;
pub mod kv;
pub mod kv_store;
pub mod lease;
pub mod request;
pub mod revision;
pub mod snapshot;
pub mod watch;

pub use config::{Durability, StoreConfig, WatchConfig};
pub use error::{Error, Result};
pub use key_range::KeyRange;
pub use kv::{Event, EventKind, KeyValue, LeaseId, WireForm};
pub use kv_store::{
    Applied, Committed, Import, ImportedSnapshot, KvStore, LeaseRevokeRequest, LeaseStatus, Persisted, Planning,
    RangeCursor, RangePlan, RestoredSnapshot, StoreSnapshot, StoreStats, TxnCursor, TxnPlan, TxnPlanning,
    UpstreamChange, UpstreamOrigin, UpstreamRevision, Write, WriteGroup,
};
pub use request::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
};
pub use revision::Revision;
