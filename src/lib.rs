//! watchkv core: an etcd-v3-compatible watchable MVCC key-value store on fjall, synchronous and
//! free of actors so that every step can be called from a test.
//!
//! Who owns what:
//! - [`revision`]: `Revision{main, sub}` and the 17/18-byte backend keys.
//! - [`key_range`]: `KeyRange` with etcd's wire rules.
//! - [`kv`]: `KeyValue`, `Event`.
//! - [`codec`]: the only module that names bincode.
//! - [`config`]: every tunable with its etcd default.
//! - [`error`]: `Error` with etcd's texts.
//! - [`watch`]: watcher groups and event batches.
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod codec;
pub mod config;
pub mod error;
pub mod key_range;
pub mod kv;
pub mod revision;
pub mod watch;

pub use config::{Durability, StoreConfig, WatchConfig};
pub use error::{Error, Result};
pub use key_range::KeyRange;
pub use kv::{Event, EventKind, KeyValue, LeaseId};
pub use revision::Revision;
