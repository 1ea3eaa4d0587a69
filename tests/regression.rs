//! Shrunk failures found by the model-based test (`tests/model.rs`), kept as plain tests. Each
//! carries a `// postmortem:` comment: what failed, why, and what fixed it.

use std::time::{Duration, Instant};

use watchkv::{
    DeleteRangeRequest, Durability, Error, KeyRange, KvStore, PutRequest, RangeRequest, RequestOp, StoreConfig,
    TxnRequest,
};

struct Fixture {
    store: KvStore,
    config: StoreConfig,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path())
            .with_durability(Durability::Buffered)
            .with_compaction_sleep_interval(Duration::ZERO)
            .with_compaction_batch_limit(1)
            .with_restore_chunk_keys(1);
        let store = KvStore::open_at(config.clone(), Instant::now()).expect("open");
        Self { store, config, _dir: dir }
    }

    /// Closes the store (stopping its compactor) and opens it again on the same directory.
    fn reopen(self) -> Self {
        let Self { store, config, _dir } = self;
        drop(store);
        let store = KvStore::open_at(config.clone(), Instant::now()).expect("reopen");
        Self { store, config, _dir }
    }

    fn put(&mut self, key: &str, value: &str) -> i64 {
        self.store.put(PutRequest::new(key, value)).expect("put").response.revision
    }

    /// `(key, value, create, mod, version)` of every live key at `rev`.
    fn read(&self, rev: i64) -> Vec<(String, String, i64, i64, i64)> {
        let resp = self.store.range(&RangeRequest::new(KeyRange::all()).at(rev)).expect("range");
        resp.kvs
            .into_iter()
            .map(|kv| {
                let s = |b: Vec<u8>| String::from_utf8(b).expect("utf8");
                (s(kv.key), s(kv.value), kv.create_revision, kv.mod_revision, kv.version)
            })
            .collect()
    }
}

fn put(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest::new(key, value))
}

fn read_at(key: &str, rev: i64) -> RequestOp {
    RequestOp::Range(RangeRequest::new(KeyRange::single(key)).at(rev))
}

fn txn(success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { compare: vec![], success, failure: vec![] }
}

// postmortem: `mvcc_txn` skipped the up-front check of read revisions (it must let a read name
// the txn's own revision, which is readable only once the txn has changed something), so a
// read below the compact revision failed while the txn ran; `apply` took every error there for
// a storage failure and poisoned the store: every later write answered `Poisoned` until a
// reopen. Fixed in `KvStore::check_txn_refs` (reads are checked for every txn, `mvcc_txn`
// allowing `current + 1`) and `KvStore::apply` (a client error before the txn changed anything
// is returned without poisoning).
#[test]
fn regression_01_mvcc_txn_read_below_compaction_poisons_store() {
    let mut f = Fixture::new();
    assert_eq!(f.put("a", ""), 2);
    f.store.compact(2).expect("compact").wait().expect("physical");
    let err = f.store.mvcc_txn(txn(vec![read_at("a", 1)])).expect_err("read below the compact revision");
    assert!(matches!(err, Error::Compacted { requested: 1, compact_rev: 2 }), "{err:?}");
    assert_eq!(f.put("a", ""), 3, "a failed read must not poison the store");
}

// postmortem: same root cause as 01, worse shape: the read failed after a put of the same txn
// had already entered the key index and the lease table, so the failed txn left a key in the
// index (`stats().indexed_keys` 4 instead of 3) pointing at a row never written, besides
// poisoning the store. With the fix the read is rejected before anything runs.
#[test]
fn regression_02_mvcc_txn_failed_read_leaves_half_applied_put() {
    let mut f = Fixture::new();
    f.put("b", "");
    f.put("c", "");
    f.put("a", "");
    f.store.compact(3).expect("compact");
    let before = f.store.stats();
    let err = f.store.mvcc_txn(txn(vec![put("ab", ""), read_at("a", 2)])).expect_err("compacted read");
    assert!(matches!(err, Error::Compacted { requested: 2, compact_rev: 3 }), "{err:?}");
    assert_eq!(f.store.stats(), before, "a failed txn changes nothing");
    assert_eq!(f.put("ab", "x"), 5);
    assert_eq!(
        f.read(0).iter().find(|kv| kv.0 == "ab").map(|kv| (kv.2, kv.4)),
        Some((5, 1)),
        "ab is created by the put"
    );
}

// postmortem: the variants of 01/02 on the future side. A read of the txn's own revision
// (`current + 1`) is fine after the txn changed something, a future revision error before it
// changed anything (nothing to undo), and anything beyond `current + 1` is rejected up front
// even after a put. Before the fix each of the two failing reads poisoned the store.
#[test]
fn regression_03_mvcc_txn_reads_of_future_revisions() {
    let mut f = Fixture::new();
    assert_eq!(f.put("a", "1"), 2);
    let err = f.store.mvcc_txn(txn(vec![read_at("a", 3), put("a", "2")])).expect_err("own revision before a change");
    assert!(matches!(err, Error::FutureRev { requested: 3, current_rev: 2 }), "{err:?}");
    let err = f.store.mvcc_txn(txn(vec![put("a", "2"), read_at("a", 4)])).expect_err("beyond the txn's revision");
    assert!(matches!(err, Error::FutureRev { requested: 4, current_rev: 2 }), "{err:?}");
    let c = f.store.mvcc_txn(txn(vec![put("a", "2"), read_at("a", 3)])).expect("own revision after a change");
    assert_eq!(c.response.revision, 3);
    assert_eq!(f.put("a", "3"), 4, "not poisoned");
    assert_eq!(f.read(3), vec![("a".into(), "2".into(), 2, 3, 2)]);
}

// postmortem: an `mvcc_txn` that deletes a key and puts it again within one revision R gives the
// key two generations touching R: `{.., R.0(t)}` and `{R.1, ..}`. Compaction at R took the
// first (its tombstone is `>= R`, etcd `doCompact`) as the compaction point and kept only its
// tombstone, so the physical compaction deleted row R.1 that the index still pointed at: reads
// at R and later failed with `Corrupt { revision: "3.1", .. }`, and after a restart the key was
// gone (only its tombstone was left on disk). Fixed in `KeyIndex::compact`/`keep`: revisions
// `<= R` of later generations are kept too.
#[test]
fn regression_04_compaction_at_revision_that_recreated_a_key_loses_it() {
    let mut f = Fixture::new();
    assert_eq!(f.put("b", "old"), 2);
    let del = RequestOp::DeleteRange(DeleteRangeRequest::new(KeyRange::single("b")));
    let c = f.store.mvcc_txn(txn(vec![del, put("b", "new")])).expect("delete and re-create in one txn");
    assert_eq!(c.response.revision, 3);
    let want = vec![("b".to_string(), "new".to_string(), 3, 3, 1)];
    assert_eq!(f.read(3), want);
    f.store.compact(3).expect("compact").wait().expect("physical");
    assert_eq!(f.read(3), want, "read at the compact revision after physical compaction");
    let mut f = f.reopen();
    assert_eq!(f.read(3), want, "after a restart");
    assert_eq!(f.put("b", "newer"), 4);
    assert_eq!(f.read(4), vec![("b".to_string(), "newer".to_string(), 3, 4, 2)]);
}

// postmortem: found once the model also compared the history rows on disk. An `mvcc_txn` that
// changes a key twice within revision R, then compaction at R: the index kept only the newest
// change of R (etcd keeps "the newest revision <= R", which is the whole of R when a key changes at
// most once per revision), so the physical compaction deleted row R.0 and a watch starting at R
// (catch-up reads rows from R on) missed the first change of R, against docs/etcd-semantics.md §5
// ("rows at main == r are all kept"). Fixed in `KeyIndex::compaction_point`: every revision of R in
// the kept generation is kept.
#[test]
fn regression_05_compaction_keeps_every_change_of_its_revision() {
    let mut f = Fixture::new();
    let c = f.store.mvcc_txn(txn(vec![put("a", "1"), put("a", "2")])).expect("two puts of one key");
    assert_eq!(c.response.revision, 2);
    f.store.compact(2).expect("compact").wait().expect("physical");
    let mut rows = Vec::new();
    f.store
        .reader()
        .snapshot()
        .scan(2, 3, |key, row| {
            rows.push((key.rev.main, key.rev.sub, row.decode()?.kv.version));
            Ok(true)
        })
        .expect("scan");
    assert_eq!(rows, vec![(2, 0, 1), (2, 1, 2)], "both changes of revision 2 survive");
    let f = f.reopen();
    assert_eq!(f.read(2), vec![("a".into(), "2".into(), 2, 2, 2)]);
}
