//! Shared fixtures for the core's integration tests: temporary stores and short constructors.
#![allow(dead_code)]

use std::time::Duration;

use watchkv::{
    DeleteRangeRequest, Durability, Event, EventKind, KeyRange, KeyValue, KvStore, PutRequest, RangeRequest,
    StoreConfig,
};

/// A store in a temporary directory that lives as long as the fixture.
pub struct TestStore {
    pub store: KvStore,
    pub dir: tempfile::TempDir,
}

/// The configuration tests use: buffered durability (the crash test covers fsync) and no pause
/// between compaction batches.
pub fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig::new(dir).with_durability(Durability::Buffered).with_compaction_sleep_interval(Duration::ZERO)
}

impl TestStore {
    pub fn new() -> Self {
        Self::with(|c| c)
    }

    pub fn with(f: impl FnOnce(StoreConfig) -> StoreConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = KvStore::open(f(config(dir.path()))).expect("open store");
        Self { store, dir }
    }

    /// Closes and reopens the store on the same directory with the same configuration.
    pub fn reopen(self) -> Self {
        let config = self.store.config().clone();
        drop(self.store);
        let store = KvStore::open(config).expect("reopen store");
        Self { store, dir: self.dir }
    }

    pub fn put(&mut self, key: &str, value: &str) -> i64 {
        self.put_lease(key, value, 0)
    }

    pub fn put_lease(&mut self, key: &str, value: &str, lease: i64) -> i64 {
        self.store.put(PutRequest::new(key, value).lease(lease)).expect("put").response.revision
    }

    pub fn del(&mut self, range: KeyRange) -> (i64, i64) {
        let r = self.store.delete_range(DeleteRangeRequest::new(range)).expect("delete").response;
        (r.deleted, r.revision)
    }

    pub fn get(&self, range: KeyRange, rev: i64) -> watchkv::Result<Vec<KeyValue>> {
        self.store.range(&RangeRequest::new(range).at(rev)).map(|r| r.kvs)
    }
}

pub fn kv(key: &str, value: &str, c: i64, m: i64, v: i64, lease: i64) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        create_revision: c,
        mod_revision: m,
        version: v,
        value: value.as_bytes().to_vec(),
        lease,
    }
}

/// A PUT event without prev_kv.
pub fn put_ev(key: &str, value: &str, c: i64, m: i64, v: i64) -> Event {
    Event::new(EventKind::Put, kv(key, value, c, m, v, 0), None)
}

/// A DELETE event without prev_kv: only key and mod_revision.
pub fn del_ev(key: &str, m: i64) -> Event {
    Event::new(
        EventKind::Delete,
        KeyValue { key: key.as_bytes().to_vec(), mod_revision: m, ..KeyValue::default() },
        None,
    )
}

/// Drops prev_kv, for comparisons that do not care about it.
pub fn without_prev(events: impl IntoIterator<Item = impl AsRef<Event>>) -> Vec<Event> {
    events.into_iter().map(|e| Event::new(e.as_ref().kind, e.as_ref().kv.clone(), None)).collect()
}
