//! etcd's MVCC tests ported as cases (reference/etcd-watch-cases.md sections C and D, plus the
//! store side of A8, A13, H1, H2), named after the case.

mod common;

use std::sync::Arc;

use common::{del_ev, kv, put_ev, without_prev, TestStore};
use watchkv::backend::{Backend, META_SCHEDULED_COMPACT};
use watchkv::watch::event_batch::{BatchLimits, EventBatch};
use watchkv::watch::history::{range_events, Wanted};
use watchkv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, Error, Event, KeyRange, KvStore, Planning, PutRequest,
    RangeRequest, RequestOp, ResponseOp, SortOrder, SortTarget, TxnPlanning, TxnRequest,
};

fn r(start: &str, end: &str) -> KeyRange {
    KeyRange::interval(start, end)
}
fn one(key: &str) -> KeyRange {
    KeyRange::single(key)
}

/// Fixture `put3`: foo=bar l=1 @2, foo1=bar1 l=2 @3, foo2=bar2 l=3 @4.
fn put3() -> TestStore {
    let mut s = TestStore::new();
    let now = std::time::Instant::now();
    for id in 1..=3 {
        s.store.lease_grant(id, 3600, now).expect("grant");
    }
    assert_eq!(s.put_lease("foo", "bar", 1), 2);
    assert_eq!(s.put_lease("foo1", "bar1", 2), 3);
    assert_eq!(s.put_lease("foo2", "bar2", 3), 4);
    s
}

fn k0() -> watchkv::KeyValue {
    kv("foo", "bar", 2, 2, 1, 1)
}
fn k1() -> watchkv::KeyValue {
    kv("foo1", "bar1", 3, 3, 1, 2)
}
fn k2() -> watchkv::KeyValue {
    kv("foo2", "bar2", 4, 4, 1, 3)
}

/// Runs a read both plainly and as the only op of a txn, as etcd's TestKV*/TestKVTxn* pairs do.
fn range_both(s: &mut TestStore, req: RangeRequest) -> watchkv::Result<watchkv::RangeResponse> {
    let plain = s.store.range(&req);
    let txn = s.store.txn(TxnRequest { compare: vec![], success: vec![RequestOp::Range(req)], failure: vec![] });
    match (&plain, txn) {
        (Ok(p), Ok(t)) => {
            assert_eq!(t.response.responses, vec![ResponseOp::Range(p.clone())], "txn read differs");
            assert!(t.events.is_empty());
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("plain {a:?} vs txn {b:?}"),
    }
    plain
}

#[test]
fn c1_kv_range() {
    let mut s = put3();
    let cases = [
        (r("doo", "foo"), vec![]),
        (r("foo", "foo"), vec![]),
        (one("doo"), vec![]),
        (r("foo", "foo3"), vec![k0(), k1(), k2()]),
        (r("foo", "foo1"), vec![k0()]),
        (one("foo"), vec![k0()]),
        (KeyRange::all(), vec![k0(), k1(), k2()]),
    ];
    for (range, want) in cases {
        let resp = range_both(&mut s, RangeRequest::new(range.clone())).expect("range");
        assert_eq!((resp.kvs, resp.revision), (want, 4), "{range:?}");
    }
}

#[test]
fn c2_kv_range_rev() {
    let mut s = put3();
    for (rev, want) in [
        (-1, vec![k0(), k1(), k2()]),
        (0, vec![k0(), k1(), k2()]),
        (2, vec![k0()]),
        (3, vec![k0(), k1()]),
        (4, vec![k0(), k1(), k2()]),
    ] {
        let resp = range_both(&mut s, RangeRequest::new(r("foo", "foo3")).at(rev)).expect("range");
        assert_eq!((resp.kvs, resp.revision), (want, 4), "rev {rev}");
    }
}

#[test]
fn c3_kv_range_bad_rev() {
    let mut s = put3();
    s.store.compact(4).expect("compact").wait().expect("physical");
    for (rev, want) in
        [(-1, "ok"), (0, "ok"), (1, "compacted"), (2, "compacted"), (4, "ok"), (5, "future"), (100, "future")]
    {
        let got = match range_both(&mut s, RangeRequest::new(r("foo", "foo3")).at(rev)) {
            Ok(_) => "ok",
            Err(Error::Compacted { .. }) => "compacted",
            Err(Error::FutureRev { .. }) => "future",
            Err(e) => panic!("rev {rev}: {e}"),
        };
        assert_eq!(got, want, "rev {rev}");
    }
    assert_eq!(
        s.store.range(&RangeRequest::new(one("foo")).at(1)).unwrap_err().to_string(),
        "mvcc: required revision has been compacted"
    );
    assert_eq!(
        s.store.range(&RangeRequest::new(one("foo")).at(5)).unwrap_err().to_string(),
        "mvcc: required revision is a future revision"
    );
}

#[test]
fn c4_kv_range_limit() {
    let mut s = put3();
    for (limit, want, more) in [
        (-1, vec![k0(), k1(), k2()], false),
        (0, vec![k0(), k1(), k2()], false),
        (1, vec![k0()], true),
        (2, vec![k0(), k1()], true),
        (3, vec![k0(), k1(), k2()], false),
        (100, vec![k0(), k1(), k2()], false),
    ] {
        let resp = range_both(&mut s, RangeRequest::new(r("foo", "foo3")).limit(limit)).expect("range");
        assert_eq!((resp.kvs, resp.count, resp.revision, resp.more), (want, 3, 4, more), "limit {limit}");
    }
}

#[test]
fn c5_kv_put_multiple_times() {
    let mut s = TestStore::new();
    let now = std::time::Instant::now();
    for i in 0..10 {
        s.store.lease_grant(i + 1, 3600, now).expect("grant");
        assert_eq!(s.put_lease("foo", "bar", i + 1), i + 2);
        assert_eq!(s.get(one("foo"), 0).expect("range"), vec![kv("foo", "bar", 2, i + 2, i + 1, i + 1)]);
    }
}

#[test]
fn c6_kv_delete_range() {
    for (range, want) in [
        (one("foo"), (1, 5)),
        (r("foo", "foo1"), (1, 5)),
        (r("foo", "foo2"), (2, 5)),
        (r("foo", "foo3"), (3, 5)),
        (r("foo3", "foo8"), (0, 4)),
        (one("foo3"), (0, 4)),
    ] {
        let mut s = TestStore::new();
        s.put("foo", "bar");
        s.put("foo1", "bar1");
        s.put("foo2", "bar2");
        assert_eq!(s.del(range.clone()), want, "{range:?}");
    }
}

#[test]
fn c7_kv_delete_multiple_times() {
    let mut s = TestStore::new();
    assert_eq!(s.put("foo", "bar"), 2);
    assert_eq!(s.del(one("foo")), (1, 3));
    for _ in 0..10 {
        let c = s.store.delete_range(DeleteRangeRequest::new(one("foo"))).expect("delete");
        assert_eq!((c.response.deleted, c.response.revision), (0, 3));
        assert!(c.events.is_empty(), "deleting a missing key is not a change");
    }
}

#[test]
fn c8_kv_put_with_same_lease() {
    let mut s = TestStore::new();
    s.store.lease_grant(1, 3600, std::time::Instant::now()).expect("grant");
    assert_eq!(s.put_lease("foo", "bar", 1), 2);
    assert_eq!(s.put_lease("foo", "bar", 1), 3);
    assert_eq!(s.get(one("foo"), 0).expect("range"), vec![kv("foo", "bar", 2, 3, 2, 1)]);
}

#[test]
fn c9_kv_operation_in_sequence() {
    let mut s = TestStore::new();
    for i in 0..10 {
        let base = 2 * i + 1;
        assert_eq!(s.put("foo", "bar"), base + 1);
        let resp = s.store.range(&RangeRequest::new(one("foo")).at(base + 1)).expect("range");
        assert_eq!((resp.kvs, resp.revision), (vec![kv("foo", "bar", base + 1, base + 1, 1, 0)], base + 1));
        assert_eq!(s.del(one("foo")), (1, base + 2));
        let resp = s.store.range(&RangeRequest::new(one("foo")).at(base + 2)).expect("range");
        assert_eq!((resp.kvs, resp.revision), (vec![], base + 2));
    }
}

#[test]
fn c10_kv_txn_operation_in_sequence() {
    let mut s = TestStore::new();
    for i in 0..10 {
        let base = i + 1;
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(PutRequest::new("foo", "bar")),
                RequestOp::Range(RangeRequest::new(one("foo")).at(base + 1)),
                RequestOp::DeleteRange(DeleteRangeRequest::new(one("foo"))),
                RequestOp::Range(RangeRequest::new(one("foo")).at(base + 1)),
            ],
            failure: vec![],
        };
        // gRPC forbids put + delete of one key in a txn; the MVCC layer allows it.
        assert!(matches!(s.store.txn(txn.clone()), Err(Error::DuplicateKey)));
        let c = s.store.mvcc_txn(txn).expect("mvcc txn");
        let [ResponseOp::Put(p), ResponseOp::Range(r1), ResponseOp::DeleteRange(d), ResponseOp::Range(r2)] =
            c.response.responses.as_slice()
        else {
            panic!("unexpected responses {:?}", c.response.responses)
        };
        assert_eq!(p.revision, base + 1);
        assert_eq!((r1.kvs.clone(), r1.revision), (vec![kv("foo", "bar", base + 1, base + 1, 1, 0)], base + 1));
        assert_eq!((d.deleted, d.revision), (1, base + 1));
        assert_eq!((r2.kvs.len(), r2.revision), (0, base + 1));
        assert_eq!(c.response.revision, base + 1, "one revision per txn");
        assert_eq!(
            without_prev(c.events.iter().map(|e| Arc::new(e.clone()))),
            vec![put_ev("foo", "bar", base + 1, base + 1, 1), del_ev("foo", base + 1)]
        );
    }
}

// C11/C12 (a write txn blocks other writes but not reads) hold by construction here: the store
// is `&mut self` for writes, and the runtime serialises writes through one actor while reads
// of history go through snapshots (see the catch-up tests in the actors crate).

#[test]
fn c13_compact_reserves_last_value() {
    let mut s = TestStore::new();
    let now = std::time::Instant::now();
    for id in 1..=3 {
        s.store.lease_grant(id, 3600, now).expect("grant");
    }
    s.put_lease("foo", "bar0", 1);
    s.put_lease("foo", "bar1", 2);
    s.del(one("foo"));
    s.put_lease("foo", "bar2", 3);
    let want = [
        (1, vec![kv("foo", "bar0", 2, 2, 1, 1)]),
        (2, vec![kv("foo", "bar1", 2, 3, 2, 2)]),
        (3, vec![]),
        (4, vec![kv("foo", "bar2", 5, 5, 1, 3)]),
    ];
    for (rev, kvs) in want {
        s.store.compact(rev).expect("compact").wait().expect("physical");
        assert_eq!(s.get(one("foo"), rev + 1).expect("range"), kvs, "after compact {rev}");
    }
}

#[test]
fn c14_kv_compact_bad() {
    let mut s = TestStore::new();
    for _ in 0..3 {
        s.put("foo", "bar");
    }
    assert!(s.store.compact(0).is_ok());
    assert!(s.store.compact(1).is_ok());
    assert!(matches!(s.store.compact(1), Err(Error::Compacted { .. })));
    assert!(s.store.compact(4).is_ok());
    assert!(matches!(s.store.compact(5), Err(Error::FutureRev { .. })));
    assert!(matches!(s.store.compact(100), Err(Error::FutureRev { .. })));
}

/// Range `[a, z)` at every revision 0..9; errors read as empty, as etcd's test does.
fn snapshot_all_revs(s: &TestStore) -> Vec<Vec<watchkv::KeyValue>> {
    (0..10).map(|rev| s.get(r("a", "z"), rev).unwrap_or_default()).collect()
}

#[test]
fn c15_kv_restore() {
    type Scenario = fn(&mut TestStore);
    let scenarios: [Scenario; 4] = [
        |s| {
            let now = std::time::Instant::now();
            for id in 1..=3 {
                s.store.lease_grant(id, 3600, now).expect("grant");
            }
            s.put_lease("foo", "bar0", 1);
            s.put_lease("foo", "bar1", 2);
            s.put_lease("foo", "bar2", 3);
            s.put_lease("foo2", "bar0", 1);
        },
        |s| {
            s.put("foo", "bar0");
            s.del(one("foo"));
            s.put("foo", "bar1");
        },
        |s| {
            s.put("foo", "bar0");
            s.put("foo", "bar1");
            s.store.compact(1).expect("compact").wait().expect("physical");
        },
        |s| {
            for i in 1..=5 {
                s.put(&format!("foo{i}"), "bar");
            }
            s.del(one("foo1"));
            s.store.compact(7).expect("compact").wait().expect("physical");
        },
    ];
    for (i, scenario) in scenarios.iter().enumerate() {
        let mut s = TestStore::with(|c| c.with_compaction_batch_limit(5));
        scenario(&mut s);
        let before = (snapshot_all_revs(&s), s.store.current_rev(), s.store.compact_rev(), s.store.leases());
        let keys_before = s.store.stats().indexed_keys;
        let s = s.reopen();
        let after = (snapshot_all_revs(&s), s.store.current_rev(), s.store.compact_rev(), s.store.leases());
        assert_eq!(before, after, "scenario {i}");
        assert_eq!(keys_before, s.store.stats().indexed_keys, "scenario {i}: keys gauge");
    }
}

#[test]
fn c15_restore_keeps_a_tombstone_only_key_watchable() {
    // Scenario 4 restores foo1, whose only surviving row is its tombstone at 7.
    let mut s = TestStore::new();
    for i in 1..=5 {
        s.put(&format!("foo{i}"), "bar");
    }
    s.del(one("foo1"));
    s.store.compact(7).expect("compact").wait().expect("physical");
    let s = s.reopen();
    let snap = s.store.reader().snapshot();
    let events = range_events(&snap, 7, 8, s.store.compact_rev(), |_| Wanted::Event).expect("events");
    assert_eq!(without_prev(events), vec![del_ev("foo1", 7)]);
}

#[test]
fn c16_kv_snapshot() {
    let s = put3();
    let copy = tempfile::tempdir().expect("dir");
    let config = s.store.config().clone();
    drop(s.store);
    for entry in walk(config.path()) {
        let rel = entry.strip_prefix(config.path()).expect("prefix");
        let target = copy.path().join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
        } else {
            std::fs::copy(&entry, &target).expect("copy");
        }
    }
    let store = KvStore::open(common::config(copy.path())).expect("open copy");
    let resp = store.range(&RangeRequest::new(r("a", "z"))).expect("range");
    assert_eq!((resp.kvs, resp.revision), (vec![k0(), k1(), k2()], 4));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let entries: Vec<_> =
                std::fs::read_dir(&out[i]).expect("read dir").map(|e| e.expect("entry").path()).collect();
            out.extend(entries);
        }
        i += 1;
    }
    out
}

#[test]
fn c17_watchable_kv_watch() {
    let mut s = TestStore::new();
    let now = std::time::Instant::now();
    for id in 1..=3 {
        s.store.lease_grant(id, 3600, now).expect("grant");
    }
    // Stream 1, a synced watcher on [foo, fop): events come straight from the commits.
    let c = s.store.put(PutRequest::new("foo", "bar").lease(1)).expect("put");
    assert_eq!(c.events.iter().map(|e| e.kv.clone()).collect::<Vec<_>>(), vec![kv("foo", "bar", 2, 2, 1, 1)]);
    let c = s.store.put(PutRequest::new("foo1", "bar1").lease(2)).expect("put");
    assert_eq!(c.events.iter().map(|e| e.kv.clone()).collect::<Vec<_>>(), vec![kv("foo1", "bar1", 3, 3, 1, 2)]);
    // Stream 2, [foo1, foo2) from 3: history via the catch-up read.
    let range = r("foo1", "foo2");
    let snap = s.store.reader().snapshot();
    let events = range_events(&snap, 3, s.store.current_rev() + 1, -1, |k| {
        if range.contains(k) {
            Wanted::Event
        } else {
            Wanted::No
        }
    })
    .expect("events");
    assert_eq!(events.iter().map(|e| e.kv.clone()).collect::<Vec<_>>(), vec![kv("foo1", "bar1", 3, 3, 1, 2)]);
    let c = s.store.put(PutRequest::new("foo1", "bar11").lease(3)).expect("put");
    assert_eq!(c.events.iter().map(|e| e.kv.clone()).collect::<Vec<_>>(), vec![kv("foo1", "bar11", 3, 4, 2, 3)]);
    assert_eq!(c.events[0].prev_kv, Some(kv("foo1", "bar1", 3, 3, 1, 2)));
}

#[test]
fn d1_store_rev() {
    let mut s = TestStore::new();
    for want in 2..=4 {
        s.put("foo", "bar");
        assert_eq!(s.store.current_rev(), want);
    }
}

#[test]
fn d2_store_put_writes_expected_rows() {
    let mut s = TestStore::new();
    s.store.lease_grant(1, 3600, std::time::Instant::now()).expect("grant");
    let c = s.store.put(PutRequest::new("foo", "bar").lease(1)).expect("put");
    assert_eq!(c.events[0].kv, kv("foo", "bar", 2, 2, 1, 1));
    s.store.lease_grant(2, 3600, std::time::Instant::now()).expect("grant");
    let c = s.store.put(PutRequest::new("foo", "bar").lease(2)).expect("put");
    assert_eq!(c.events[0].kv, kv("foo", "bar", 2, 3, 2, 2));
    // The row on disk is the same key-value, under revision (3, 0).
    let snap = s.store.reader().snapshot();
    let row = snap.get_row(watchkv::Revision::new(3, 0).to_key(false)).expect("read").expect("row");
    assert_eq!(row.kv, kv("foo", "bar", 2, 3, 2, 2));
    assert_eq!(row.prev, Some(watchkv::Revision::new(2, 0)));
}

#[test]
fn d3_store_delete_range_writes_tombstone_row() {
    let mut s = TestStore::new();
    s.put("foo", "bar");
    assert_eq!(s.del(r("foo", "goo")), (1, 3));
    let snap = s.store.reader().snapshot();
    let row = snap.get_row(watchkv::Revision::new(3, 0).to_key(true)).expect("read").expect("tombstone row");
    assert_eq!(row.kv, watchkv::KeyValue { key: b"foo".to_vec(), ..Default::default() });
    assert!(snap.get_row(watchkv::Revision::new(3, 0).to_key(false)).expect("read").is_none());
    assert_eq!(s.store.current_rev(), 3);
}

#[test]
fn d4_store_compact_deletes_rows_not_kept() {
    let mut s = TestStore::new();
    s.put("foo", "bar");
    s.put("foo", "bar");
    s.store.compact(3).expect("compact").wait().expect("physical");
    let snap = s.store.reader().snapshot();
    assert!(snap.get_row(watchkv::Revision::new(2, 0).to_key(false)).expect("read").is_none(), "(2,0) deleted");
    assert!(snap.get_row(watchkv::Revision::new(3, 0).to_key(false)).expect("read").is_some(), "(3,0) kept");
    assert_eq!(s.store.compact_rev(), 3);
    drop(snap);
    let s = s.reopen();
    assert_eq!((s.store.compact_rev(), s.store.current_rev()), (3, 3));
}

#[test]
fn d5_store_restore_rebuilds_index_from_surviving_rows() {
    let mut s = TestStore::new();
    s.put("foo", "bar"); // 2
    s.put("foo", "bar"); // 3
    s.put("other", "x"); // 4
    s.del(one("foo")); // 5
    s.store.compact(3).expect("compact").wait().expect("physical");
    let s = s.reopen();
    assert_eq!((s.store.compact_rev(), s.store.current_rev()), (3, 5));
    let ki = s.store.index().key_index(b"foo").expect("foo indexed");
    let gens = ki.generations();
    assert_eq!(gens.len(), 2);
    assert_eq!(gens[0].revs.as_slice(), &[watchkv::Revision::new(3, 0), watchkv::Revision::new(5, 0)]);
    assert_eq!((gens[0].created.main, gens[0].ver), (2, 3));
    assert!(gens[1].revs.is_empty());
}

#[test]
fn d6_restore_delete() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut s = TestStore::with(|c| c.with_restore_chunk_keys(3));
    let mut live = std::collections::BTreeMap::new();
    for i in 0..20 {
        let key = format!("foo-{i}");
        s.put(&key, "bar");
        live.insert(key, true);
    }
    for _ in 0..50 {
        let key = format!("foo-{}", rng.random_range(0..20));
        if rng.random_bool(0.5) {
            s.put(&key, "bar");
            live.insert(key, true);
        } else {
            s.del(KeyRange::single(key.clone()));
            live.insert(key, false);
        }
    }
    let s = s.reopen();
    for (key, exists) in live {
        assert_eq!(!s.get(KeyRange::single(key.clone()), 0).expect("range").is_empty(), exists, "{key}");
    }
}

/// Records a compaction at `rev` as scheduled and not run in the closed store at `config`, as
/// a crash right after etcd's step 3 leaves it.
fn schedule_compaction_unrun(config: &watchkv::StoreConfig, rev: i64) {
    let backend = Backend::open(config).expect("backend");
    let mut batch = backend.batch();
    batch.put_meta(META_SCHEDULED_COMPACT, rev);
    batch.commit().expect("commit");
    backend.sync().expect("sync");
}

/// Waits (with a deadline) until the resumed compaction has deleted row (`main`, 0).
fn wait_until_row_gone(reader: &watchkv::backend::RevisionReader, main: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while reader.snapshot().get_row(watchkv::Revision::new(main, 0).to_key(false)).expect("read").is_some() {
        assert!(std::time::Instant::now() < deadline, "the resumed compaction never deleted row ({main},0)");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn d7_restore_continues_unfinished_compaction() {
    let mut s = TestStore::new();
    for _ in 0..3 {
        s.put("foo", "bar");
    }
    let config = s.store.config().clone();
    drop(s.store);
    schedule_compaction_unrun(&config, 2);
    let store = KvStore::open(config).expect("reopen");
    assert_eq!(store.compact_rev(), 2);
    assert!(matches!(store.range(&RangeRequest::new(one("foo")).at(1)), Err(Error::Compacted { .. })));
    // Row (2, 0) is the newest row <= 2 of foo, so the resumed compaction keeps it.
    let snap = store.reader().snapshot();
    assert!(snap.get_row(watchkv::Revision::new(2, 0).to_key(false)).expect("read").is_some());
}

#[test]
fn d7_resumed_compaction_deletes_rows() {
    let mut s = TestStore::new();
    for _ in 0..3 {
        s.put("foo", "bar"); // 2, 3, 4
    }
    let config = s.store.config().clone();
    drop(s.store);
    schedule_compaction_unrun(&config, 3);
    let store = KvStore::open(config.clone()).expect("reopen");
    assert_eq!(store.compact_rev(), 3);
    let reader = store.reader();
    wait_until_row_gone(&reader, 2);
    assert!(reader.snapshot().get_row(watchkv::Revision::new(3, 0).to_key(false)).expect("read").is_some());
    drop(reader);
    drop(store);
    let store = KvStore::open(config).expect("reopen again");
    assert_eq!((store.compact_rev(), store.current_rev()), (3, 4));
}

/// etcd TestResumeCompactionOnTombstone: a compaction at a DELETE's revision cut off by a crash
/// (scheduled, not run) is resumed on reopen, and the DELETE at the compact revision is still
/// there for a watch from it.
#[test]
fn h3_resumed_compaction_keeps_the_tombstone_at_its_revision() {
    let mut s = TestStore::new();
    for i in 0..5 {
        s.put(&format!("/key-{i}"), "v"); // 2..=6
    }
    s.del(one("/key-0")); // 7
    let snap = s.store.reader().snapshot();
    let before = range_events(&snap, 7, 8, s.store.compact_rev(), |_| Wanted::Event).expect("events");
    assert_eq!(without_prev(before), vec![del_ev("/key-0", 7)]);
    drop(snap);
    let config = s.store.config().clone();
    drop(s.store);
    schedule_compaction_unrun(&config, 7);
    let store = KvStore::open(config).expect("reopen");
    assert_eq!(store.compact_rev(), 7);
    // The resumed compaction deletes /key-0's put at 2, which nothing keeps.
    let reader = store.reader();
    wait_until_row_gone(&reader, 2);
    let snap = reader.snapshot();
    let after = range_events(&snap, 7, 8, store.compact_rev(), |_| Wanted::Event).expect("events");
    assert_eq!(without_prev(after), vec![del_ev("/key-0", 7)]);
}

#[test]
fn d8_compact_all_and_restore() {
    let mut s = TestStore::new();
    for _ in 0..3 {
        s.put("foo", "bar");
    }
    s.del(one("foo"));
    s.store.compact(5).expect("compact").wait().expect("physical");
    let s = s.reopen();
    assert_eq!(s.store.current_rev(), 5, "the revision never goes backwards (#17780)");
    assert_eq!(s.get(one("foo"), 0).expect("range"), vec![]);
}

#[test]
fn d9_concurrent_read_not_blocking_write() {
    let mut s = TestStore::new();
    s.put("foo", "bar");
    let r1 = s.store.current_rev();
    s.put("foo", "newBar");
    assert_eq!(s.get(one("foo"), 0).expect("r2"), vec![kv("foo", "newBar", 2, 3, 2, 0)]);
    assert_eq!(s.get(one("foo"), r1).expect("r1"), vec![kv("foo", "bar", 2, 2, 1, 0)]);
}

#[test]
fn d10_txn_put() {
    let mut s = TestStore::new();
    for i in 0..100i64 {
        let key = format!("{i:030}");
        let c = s
            .store
            .txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Put(PutRequest::new(key, "v"))],
                failure: vec![],
            })
            .expect("txn");
        assert_eq!(c.response.revision, i + 2);
    }
}

#[test]
fn d14_revision_rules_around_compaction() {
    let mut s = TestStore::new();
    let reqs: Vec<_> = (2..=10_000).map(|i| PutRequest::new(format!("k{}", i % 97), "v")).collect();
    for chunk in reqs.chunks(1000) {
        for r in s.store.write_all(chunk.iter().cloned()) {
            r.expect("put");
        }
    }
    assert_eq!(s.store.current_rev(), 10_000);
    s.store.compact(5000).expect("compact");
    assert!(matches!(s.get(KeyRange::all(), 10_001), Err(Error::FutureRev { .. })));
    assert!(matches!(s.get(KeyRange::all(), 4999), Err(Error::Compacted { .. })));
    assert!(s.get(KeyRange::all(), 5000).is_ok());
}

/// Fixture of A8: foo1 @2, foo2 @3, foo3 @4, delete [foo1, foo3) @5.
fn a8_store() -> (TestStore, Vec<Event>) {
    let mut s = TestStore::new();
    s.put("foo1", "bar");
    s.put("foo2", "bar");
    s.put("foo3", "bar");
    assert_eq!(s.del(r("foo1", "foo3")), (2, 5));
    let evs = vec![
        put_ev("foo1", "bar", 2, 2, 1),
        put_ev("foo2", "bar", 3, 3, 1),
        put_ev("foo3", "bar", 4, 4, 1),
        del_ev("foo1", 5),
        del_ev("foo2", 5),
    ];
    (s, evs)
}

#[test]
fn a8_range_events() {
    let (s, e) = a8_store();
    let snap = s.store.reader().snapshot();
    let table: [(i64, i64, std::ops::Range<usize>); 19] = [
        (-1, 6, 0..5),
        (-1, 5, 0..3),
        (-1, 4, 0..2),
        (-1, 3, 0..1),
        (-1, 2, 0..0),
        (2, 6, 0..5),
        (3, 6, 1..5),
        (4, 6, 2..5),
        (5, 6, 3..5),
        (6, 6, 0..0),
        (2, 2, 0..0),
        (2, 3, 0..1),
        (2, 4, 0..2),
        (3, 4, 1..2),
        (3, 5, 1..3),
        (4, 5, 2..3),
        (4, 6, 2..5),
        (5, 6, 3..5),
        (6, 6, 0..0),
    ];
    for (min, max, want) in table {
        let got = range_events(&snap, min, max, -1, |_| Wanted::Event).expect("range_events");
        assert_eq!(without_prev(got), e[want].to_vec(), "range_events({min}, {max})");
    }
}

#[test]
fn a8_range_events_prev_kv_from_rows() {
    let (s, _) = a8_store();
    let snap = s.store.reader().snapshot();
    let got = range_events(&snap, 2, 6, -1, |_| Wanted::EventWithPrevKv).expect("range_events");
    let prev: Vec<Option<watchkv::KeyValue>> = got.iter().map(|e| e.prev_kv.clone()).collect();
    assert_eq!(prev, vec![None, None, None, Some(kv("foo1", "bar", 2, 2, 1, 0)), Some(kv("foo2", "bar", 3, 3, 1, 0))]);
}

/// Splits the history of `[min, max)` for one watcher into etcd-style batches.
fn batches(s: &TestStore, min: i64, max_revs: usize) -> Vec<Vec<i64>> {
    let snap = s.store.reader().snapshot();
    let mut out = Vec::new();
    let mut from = min;
    loop {
        let events = range_events(&snap, from, s.store.current_rev() + 1, s.store.compact_rev(), |_| Wanted::Event)
            .expect("events");
        if events.is_empty() {
            return out;
        }
        let mut batch = EventBatch::new();
        for e in events {
            if !batch.add(e, false, BatchLimits { max_revs, max_bytes: usize::MAX }) {
                break;
            }
        }
        out.push(batch.events.iter().map(|e| e.revision()).collect());
        if !batch.is_truncated() {
            return out;
        }
        from = batch.more_rev;
    }
}

#[test]
fn a13_watch_batch_unsynced() {
    let mut s = TestStore::new();
    for _ in 0..12 {
        s.store
            .txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Put(PutRequest::new("foo", "foo"))],
                failure: vec![],
            })
            .expect("txn");
    }
    assert_eq!(batches(&s, 1, 4), vec![vec![2, 3, 4, 5], vec![6, 7, 8, 9], vec![10, 11, 12, 13]]);

    let mut s = TestStore::new();
    for _ in 0..12 {
        let put = || RequestOp::Put(PutRequest::new("foo", "foo"));
        s.store
            .mvcc_txn(TxnRequest { compare: vec![], success: vec![put(), put(), put()], failure: vec![] })
            .expect("txn");
    }
    let triple = |revs: std::ops::RangeInclusive<i64>| revs.flat_map(|r| [r, r, r]).collect::<Vec<_>>();
    assert_eq!(batches(&s, 1, 4), vec![triple(2..=5), triple(6..=9), triple(10..=13)]);
    let versions: Vec<i64> =
        s.store.put(PutRequest::new("foo", "x")).expect("put").events.iter().map(|e| e.kv.version).collect();
    assert_eq!(versions, vec![37], "three puts per txn count three versions each");
}

#[test]
fn h1_delete_event_at_compact_revision_is_kept() {
    let mut s = TestStore::new();
    s.put("k", "v2");
    s.put("k", "v3");
    s.put("k", "v4");
    s.del(one("k"));
    s.put("k", "v6");
    s.store.compact(5).expect("compact").wait().expect("physical");
    let snap = s.store.reader().snapshot();
    let events = range_events(&snap, 5, s.store.current_rev() + 1, 5, |_| Wanted::Event).expect("events");
    assert_eq!(without_prev(events), vec![del_ev("k", 5), put_ev("k", "v6", 6, 6, 1)]);
}

#[test]
fn h2_start_watcher_from_compacted_revision() {
    for tombstone_variant in [true, false] {
        let mut s = TestStore::new();
        let mut ops: Vec<Event> = Vec::new();
        let mut received: Vec<Event> = Vec::new();
        let mut watch_from = 1;
        for i in 0..100 {
            let every_7th = i % 7 == 6;
            let c = if every_7th && tombstone_variant {
                s.store.delete_range(DeleteRangeRequest::new(one("foo"))).expect("delete").events
            } else {
                s.store.put(PutRequest::new("foo", i.to_string())).expect("put").events
            };
            ops.extend(without_prev(c.iter().map(|e| Arc::new(e.clone()))));
            if every_7th {
                // The watcher has read the batch of 7 live; then history is compacted at the
                // batch's last revision and the watcher re-watches from there: the event at that
                // revision (a DELETE in the tombstone variant) must come first again.
                let rev = s.store.current_rev();
                let snap = s.store.reader().snapshot();
                let got =
                    range_events(&snap, watch_from, rev + 1, s.store.compact_rev(), |_| Wanted::Event).expect("events");
                drop(snap);
                let got = without_prev(got);
                if watch_from > 1 {
                    assert_eq!(
                        got.first(),
                        received.last(),
                        "re-watch at {watch_from} re-delivers that revision first"
                    );
                    received.extend(got.into_iter().skip(1));
                } else {
                    received.extend(got);
                }
                s.store.compact(rev).expect("compact").wait().expect("physical");
                watch_from = rev;
            }
        }
        let snap = s.store.reader().snapshot();
        let tail = without_prev(
            range_events(&snap, watch_from, s.store.current_rev() + 1, s.store.compact_rev(), |_| Wanted::Event)
                .expect("events"),
        );
        received.extend(tail.into_iter().skip(1));
        assert_eq!(received, ops, "tombstone variant: {tombstone_variant}");
    }
}

#[test]
fn txn_compares_on_every_target() {
    let mut s = TestStore::new();
    s.store.lease_grant(9, 3600, std::time::Instant::now()).expect("grant");
    s.put_lease("a", "1", 9); // 2
    s.put("a", "2"); // 3
    let cmp = |target, result| Compare { range: one("a"), result, target };
    let run = |s: &mut TestStore, compare: Compare| {
        s.store
            .txn(TxnRequest { compare: vec![compare], success: vec![], failure: vec![] })
            .expect("txn")
            .response
            .succeeded
    };
    assert!(run(&mut s, cmp(CompareTarget::Value(b"2".to_vec()), CompareResult::Equal)));
    assert!(run(&mut s, cmp(CompareTarget::Value(b"1".to_vec()), CompareResult::Greater)));
    assert!(run(&mut s, cmp(CompareTarget::Version(2), CompareResult::Equal)));
    assert!(run(&mut s, cmp(CompareTarget::Create(2), CompareResult::Equal)));
    assert!(run(&mut s, cmp(CompareTarget::Mod(3), CompareResult::Equal)));
    assert!(run(&mut s, cmp(CompareTarget::Mod(4), CompareResult::Less)));
    assert!(run(&mut s, cmp(CompareTarget::Lease(0), CompareResult::Equal)), "the second put dropped the lease");
    assert!(run(&mut s, cmp(CompareTarget::Lease(9), CompareResult::NotEqual)));
    // A missing key compares as zeroes, except that a value compare always fails.
    let missing = |target, result| Compare { range: one("zz"), result, target };
    assert!(run(&mut s, missing(CompareTarget::Create(0), CompareResult::Equal)));
    assert!(!run(&mut s, missing(CompareTarget::Value(Vec::new()), CompareResult::Equal)));
    // A range compare needs every key to satisfy it.
    s.put("ab", "2");
    let over = |result| Compare { range: r("a", "b"), result, target: CompareTarget::Value(b"2".to_vec()) };
    assert!(run(&mut s, over(CompareResult::Equal)));
    s.put("aa", "3");
    assert!(!run(&mut s, over(CompareResult::Equal)));
    assert_eq!(s.store.current_rev(), 5, "read-only txns keep the revision");
}

#[test]
fn txn_failed_branch_and_nested_txn() {
    let mut s = TestStore::new();
    s.put("k", "v"); // 2
    let txn = TxnRequest {
        compare: vec![Compare {
            range: one("k"),
            result: CompareResult::Equal,
            target: CompareTarget::Value(b"nope".to_vec()),
        }],
        success: vec![RequestOp::Put(PutRequest::new("never", "x"))],
        failure: vec![
            RequestOp::Put(PutRequest::new("f", "1")),
            RequestOp::Txn(TxnRequest {
                compare: vec![Compare {
                    range: one("f"),
                    result: CompareResult::Equal,
                    target: CompareTarget::Version(0),
                }],
                success: vec![RequestOp::Put(PutRequest::new("nested-then", "x"))],
                failure: vec![RequestOp::Put(PutRequest::new("nested-else", "x"))],
            }),
        ],
    };
    let c = s.store.txn(txn).expect("txn");
    assert!(!c.response.succeeded);
    assert_eq!(c.response.revision, 3);
    // Nested compares are evaluated before anything runs (etcd compareToPath): f did not exist.
    let keys: Vec<&[u8]> = c.events.iter().map(|e| e.kv.key.as_slice()).collect();
    assert_eq!(keys, vec![b"f".as_slice(), b"nested-then".as_slice()]);
    assert!(c.events.iter().all(|e| e.kv.mod_revision == 3));
    let subs: Vec<i64> = c.events.iter().map(|e| e.kv.version).collect();
    assert_eq!(subs, vec![1, 1]);
}

#[test]
fn x12_empty_and_no_op_writes_keep_the_revision() {
    let mut s = TestStore::new();
    s.put("a", "1");
    let c = s.store.txn(TxnRequest::default()).expect("empty txn");
    assert_eq!((c.response.revision, c.response.succeeded, c.events.len()), (2, true, 0));
    assert_eq!(s.del(one("nokey")), (0, 2));
    let c = s
        .store
        .txn(TxnRequest {
            compare: vec![Compare {
                range: one("a"),
                result: CompareResult::Equal,
                target: CompareTarget::Version(99),
            }],
            success: vec![RequestOp::Put(PutRequest::new("a", "2"))],
            failure: vec![],
        })
        .expect("txn");
    assert_eq!((c.response.revision, c.response.succeeded, c.events.len()), (2, false, 0));
    assert_eq!(s.store.current_rev(), 2);
}

#[test]
fn put_errors_leave_no_trace() {
    let mut s = TestStore::new();
    s.put("a", "1");
    assert_eq!(
        s.store.put(PutRequest::new("b", "x").lease(42)).unwrap_err().to_string(),
        "etcdserver: requested lease not found"
    );
    assert_eq!(s.store.put(PutRequest::new("", "x")).unwrap_err().to_string(), "etcdserver: key is not provided");
    let mut p = PutRequest::new("missing", "");
    p.ignore_value = true;
    assert_eq!(s.store.put(p).unwrap_err().to_string(), "etcdserver: key not found");
    // Both wrong: a put of its own names the lease first, as etcd 3.4.23 answers
    // `etcdctl put missing --ignore-value --lease=3e7`; inside a txn the key comes first.
    let mut p = PutRequest::new("missing", "").lease(999);
    p.ignore_value = true;
    assert_eq!(s.store.put(p.clone()).unwrap_err().to_string(), "etcdserver: requested lease not found");
    let in_txn = TxnRequest { compare: vec![], success: vec![RequestOp::Put(p)], failure: vec![] };
    assert!(matches!(s.store.txn(in_txn), Err(Error::KeyNotFound)));
    // A txn whose second op names an unknown lease fails whole.
    let txn = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Put(PutRequest::new("c", "1")), RequestOp::Put(PutRequest::new("d", "1").lease(7))],
        failure: vec![],
    };
    assert!(matches!(s.store.txn(txn), Err(Error::LeaseNotFound)));
    assert_eq!(s.store.current_rev(), 2);
    assert_eq!(s.get(one("c"), 0).expect("range"), vec![]);
    // ignore_value keeps the value, ignore_lease the lease.
    let mut p = PutRequest::new("a", "");
    p.ignore_value = true;
    p.prev_kv = true;
    let c = s.store.put(p).expect("put");
    assert_eq!(c.response.prev_kv, Some(kv("a", "1", 2, 2, 1, 0)));
    assert_eq!(c.events[0].kv, kv("a", "1", 2, 3, 2, 0));
}

#[test]
fn x14_lease_revoke_is_one_revision_of_deletes() {
    let mut s = TestStore::new();
    let now = std::time::Instant::now();
    let (id, ttl) = s.store.lease_grant(0, 1, now).expect("grant");
    assert!(id > 0);
    assert_eq!(ttl, 2, "raised to the minimum TTL");
    s.put_lease("k2", "v", id);
    s.put_lease("k1", "v", id);
    let status = s.store.lease_time_to_live(id, now, true).expect("ttl");
    assert_eq!(status.keys, vec![b"k1".to_vec(), b"k2".to_vec()]);
    let c = s.store.lease_revoke(id).expect("revoke");
    assert_eq!(c.response, 4);
    assert_eq!(without_prev(c.events.iter().map(|e| Arc::new(e.clone()))), vec![del_ev("k1", 4), del_ev("k2", 4)]);
    assert!(matches!(s.store.lease_revoke(id), Err(Error::LeaseNotFound)));
    assert!(s.store.leases().is_empty());
}

#[test]
fn leases_expire_by_the_callers_clock_and_survive_restart() {
    let mut s = TestStore::new();
    let t0 = std::time::Instant::now();
    s.store.lease_grant(5, 10, t0).expect("grant");
    s.store.lease_grant(6, 100, t0).expect("grant");
    assert!(matches!(s.store.lease_grant(5, 10, t0), Err(Error::LeaseExists)));
    assert!(matches!(s.store.lease_grant(7, 9_000_000_001, t0), Err(Error::LeaseTtlTooLarge)));
    s.put_lease("e", "v", 5);
    s.put_lease("f", "v", 6);
    assert!(s.store.expire_leases(t0 + std::time::Duration::from_secs(9)).is_empty());
    assert_eq!(s.store.lease_keep_alive(5, t0 + std::time::Duration::from_secs(9)).expect("keepalive"), 10);
    let expired = s.store.expire_leases(t0 + std::time::Duration::from_secs(12));
    assert!(expired.is_empty(), "keep-alive moved the deadline to 19 s");
    let expired = s.store.expire_leases(t0 + std::time::Duration::from_secs(20));
    assert_eq!(expired.len(), 1);
    let (id, result) = &expired[0];
    assert_eq!(*id, 5);
    let c = result.as_ref().expect("revoked");
    assert_eq!(without_prev(c.events.iter().map(|e| Arc::new(e.clone()))), vec![del_ev("e", 4)]);
    let s = s.reopen();
    assert_eq!(s.store.leases(), vec![6]);
    let status = s.store.lease_time_to_live(6, std::time::Instant::now(), true).expect("ttl");
    assert_eq!((status.granted_ttl, status.keys), (100, vec![b"f".to_vec()]));
}

/// Many leases due at once are revoked a bounded number at a time, the longest overdue first;
/// the rest stay due (and `is_lease_due`) for the next call.
#[test]
fn due_leases_are_revoked_at_most_a_limit_at_a_time_longest_overdue_first() {
    let mut s = TestStore::new();
    let t0 = std::time::Instant::now();
    for (id, ttl) in [(1, 30), (2, 10), (3, 20)] {
        s.store.lease_grant(id, ttl, t0).expect("grant");
    }
    let later = t0 + std::time::Duration::from_secs(40);
    assert!(s.store.is_lease_due(2, later) && !s.store.is_lease_due(2, t0) && !s.store.is_lease_due(9, later));
    let first: Vec<i64> = s.store.expire_leases_at_most(later, 2).into_iter().map(|(id, _)| id).collect();
    assert_eq!(first, [2, 3]);
    assert!(s.store.is_lease_due(1, later));
    let rest: Vec<i64> = s.store.expire_leases_at_most(later, 2).into_iter().map(|(id, _)| id).collect();
    assert_eq!(rest, [1]);
    assert!(s.store.leases().is_empty());
}

/// A txn that only reads, nested txns two deep, answers through `read_txn` (in place and from a
/// snapshot) as through the write path, and as its compares choose: each nested txn takes its
/// own entry of the compare path, in the order the txns run.
#[test]
fn a_read_only_txn_with_nested_txns_answers_as_its_compares_choose() {
    let mut s = put3();
    let holds =
        |key: &str| Compare { range: one(key), result: CompareResult::Greater, target: CompareTarget::Version(0) };
    let fails =
        |key: &str| Compare { range: one(key), result: CompareResult::Equal, target: CompareTarget::Version(0) };
    let get = |key: &str| RequestOp::Range(RangeRequest::new(one(key)));
    let nested = |compare: Compare, success: Vec<RequestOp>, failure: Vec<RequestOp>| {
        RequestOp::Txn(TxnRequest { compare: vec![compare], success, failure })
    };
    let txn = TxnRequest {
        compare: vec![holds("foo")],
        success: vec![
            nested(fails("foo"), vec![get("foo")], vec![get("foo1"), nested(holds("foo2"), vec![get("foo2")], vec![])]),
            nested(holds("foo1"), vec![nested(fails("foo"), vec![get("foo")], vec![get("foo2")]), get("foo1")], vec![]),
            get("foo2"),
        ],
        failure: vec![get("foo")],
    };
    assert!(!txn.writes());
    let read = s.store.read_txn(&txn).expect("read-only txn");
    let snapshot = s.store.reader().snapshot();
    let from_snapshot =
        s.store.plan_read_txn(&txn).and_then(|plan| plan.finish_from(&snapshot)).expect("from a snapshot");
    let written = s.store.txn(txn).expect("txn");
    assert!(written.events.is_empty());
    assert_eq!(read, written.response, "in place");
    assert_eq!(from_snapshot, written.response, "from a snapshot");

    // (succeeded, values read) of a txn response, nested txns in place.
    fn shape(t: &watchkv::TxnResponse) -> String {
        let ops: Vec<String> = t
            .responses
            .iter()
            .map(|op| match op {
                ResponseOp::Range(r) => {
                    r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect()
                }
                ResponseOp::Txn(nested) => shape(nested),
                other => format!("{other:?}"),
            })
            .collect();
        format!("{}[{}]", t.succeeded, ops.join(" "))
    }
    assert_eq!(shape(&read), "true[false[bar1 true[bar2]] true[false[bar2] bar1] bar2]");
    assert_eq!(read.revision, 4);
}

/// A store with keys `k00`..`k29` (one deleted, one overwritten) and `a`, and the ranges over
/// them that the planned-in-parts tests run: every shape a walk handles differently.
fn store_and_shapes_for_parts() -> (TestStore, Vec<RangeRequest>) {
    let mut s = TestStore::new();
    for i in 0..30 {
        s.put(&format!("k{i:02}"), &format!("v{:02}", 29 - i));
    }
    s.del(KeyRange::single("k07"));
    s.put("k03", "again");
    s.put("a", "before the prefix");
    let base = RangeRequest::new(KeyRange::prefix("k"));
    let requests = vec![
        base.clone(),
        RangeRequest { count_only: true, ..base.clone() },
        RangeRequest { limit: 5, ..base.clone() },
        RangeRequest { limit: 3, sort_order: SortOrder::Descend, sort_target: SortTarget::Create, ..base.clone() },
        RangeRequest { sort_order: SortOrder::Descend, sort_target: SortTarget::Key, ..base.clone() },
        RangeRequest { limit: 4, sort_order: SortOrder::Ascend, sort_target: SortTarget::Value, ..base.clone() },
        RangeRequest { min_mod_revision: 20, ..base.clone() },
        RangeRequest::new(KeyRange::from_wire(b"k25", b"\0")),
        RangeRequest::new(KeyRange::single("k10")),
        RangeRequest::new(KeyRange::interval("k10", "k10")),
    ];
    (s, requests)
}

/// What the planned-in-parts tests write after part `parts` of a walk at revision `at`: new
/// keys on both sides of the walk, an overwrite, a delete, and (after the third part) a
/// compaction at the revision read, which keeps every row it needs.
fn write_between_parts(s: &mut TestStore, parts: usize, at: i64) {
    let n = s.store.current_rev();
    s.put(&format!("k{:02}x", parts % 30), "new");
    s.put(&format!("k{:02}", (parts * 7) % 30), "overwritten");
    s.del(KeyRange::single(format!("k{:02}", (parts * 11) % 30)));
    if parts == 3 {
        s.store.compact(at).expect("compact at the revision read").wait().expect("physical");
    }
    assert!(s.store.current_rev() > n);
}

/// A range planned in parts (one key of the index per part here) answers as of the revision it
/// started at, whatever is written between the parts: keys created before and after its resume
/// point, overwrites, deletes, and a compaction at or below its revision. The store actor plans a
/// range over many keys this way, with writes between the parts.
#[test]
fn a_range_planned_in_parts_answers_its_revision_whatever_is_written_between_the_parts() {
    let (mut s, requests) = store_and_shapes_for_parts();
    for req in &requests {
        let want = s.store.range(req).expect("range");
        let at = s.store.current_rev();
        let snapshot = s.store.reader().snapshot();
        let mut cursor = s.store.start_range(req).expect("start");
        assert_eq!(cursor.revision(), at);
        let mut parts = 0;
        let plan = loop {
            parts += 1;
            match s.store.continue_range(cursor, 1).expect("continue") {
                Planning::Partial(next) => cursor = next,
                Planning::Done(plan) => break plan,
            }
            write_between_parts(&mut s, parts, at);
        };
        assert!(parts > 1 || req.range == KeyRange::single("k10") || req.range.is_empty(), "{req:?} took one part");
        assert_eq!(plan.finish_from(&snapshot).expect("read"), want, "{req:?}");
        // Later ranges start at the new revision: the compaction and the keys written meanwhile
        // must not break them.
        let rows_now = s.store.range(&RangeRequest::new(KeyRange::prefix("k"))).expect("range now");
        assert!(rows_now.count > 0);
    }
}

/// A read-only txn planned in parts walks its ranges one after the other, a key of the index
/// per part here, and answers as of the revision it started at, whatever is written between
/// the parts; its compares ran at the start. The store actor plans a txn over many keys this
/// way.
#[test]
fn a_read_only_txn_planned_in_parts_answers_its_revision_whatever_is_written_between_the_parts() {
    let (mut s, requests) = store_and_shapes_for_parts();
    let holds = Compare { range: one("k10"), result: CompareResult::Greater, target: CompareTarget::Version(0) };
    let (first, rest) = requests.split_at(4);
    let txn = TxnRequest {
        compare: vec![holds.clone()],
        success: first
            .iter()
            .cloned()
            .map(RequestOp::Range)
            .chain([RequestOp::Txn(TxnRequest {
                compare: vec![holds],
                success: rest.iter().cloned().map(RequestOp::Range).collect(),
                failure: vec![],
            })])
            .collect(),
        failure: vec![],
    };
    let want = s.store.read_txn(&txn).expect("read-only txn");
    let at = s.store.current_rev();
    let snapshot = s.store.reader().snapshot();
    let mut cursor = s.store.start_read_txn(txn).expect("start");
    assert_eq!(cursor.revision(), at);
    let mut parts = 0;
    let plan = loop {
        parts += 1;
        match s.store.continue_read_txn(cursor, 1).expect("continue") {
            TxnPlanning::Partial(next) => cursor = next,
            TxnPlanning::Done(plan) => break plan,
        }
        write_between_parts(&mut s, parts, at);
    };
    assert!(parts > 100, "its ten ranges walk over 100 keys one at a time: {parts} parts");
    assert_eq!(plan.finish_from(&snapshot).expect("read"), want);
}

/// A read-only txn in planning fails as compacted once the store is compacted above the
/// revision of any of its ranges, one already walked too: a range asking for an old revision
/// reads rows a compaction above it may delete.
#[test]
fn a_read_only_txn_in_planning_fails_after_a_compaction_above_a_range_it_walked() {
    let (mut s, _) = store_and_shapes_for_parts();
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Range(RangeRequest::new(one("k03")).at(3)),
            RequestOp::Range(RangeRequest::new(KeyRange::prefix("k"))),
        ],
        failure: vec![],
    };
    let cursor = s.store.start_read_txn(txn).expect("start");
    let TxnPlanning::Partial(cursor) = s.store.continue_read_txn(cursor, 1).expect("first part") else {
        panic!("the prefix is left to walk")
    };
    let now = s.store.current_rev();
    s.store.compact(now).expect("compact").wait().expect("physical");
    let failed = s.store.continue_read_txn(cursor, usize::MAX);
    assert!(matches!(failed, Err(Error::Compacted { requested: 3, .. })), "{failed:?}");
}

/// A walk that stands after a key deleted before the range began resumes correctly when a
/// compaction at the range's revision takes that key out of the index.
#[test]
fn a_range_planned_in_parts_resumes_after_a_key_the_compaction_removed() {
    let mut s = TestStore::new();
    for k in ["a", "b", "c"] {
        s.put(k, k);
    }
    s.del(KeyRange::single("b"));
    // A revision above b's delete, so that a compaction at the range's revision drops b's
    // history (one at the delete itself keeps the tombstone, as etcd's does).
    s.put("z", "z");
    let req = RangeRequest::new(KeyRange::interval("a", "d"));
    let want = s.store.range(&req).expect("range");
    let snapshot = s.store.reader().snapshot();
    let cursor = s.store.start_range(&req).expect("start");
    let at = cursor.revision();
    // Two keys walked: the cursor stands after "b", which exists in the index only as history.
    let Planning::Partial(cursor) = s.store.continue_range(cursor, 2).expect("part") else {
        panic!("three keys took one part of two");
    };
    s.store.compact(at).expect("compact").wait().expect("physical");
    assert_eq!(s.store.stats().indexed_keys, 3, "the compaction removed b from the index");
    let Planning::Done(plan) = s.store.continue_range(cursor, 2).expect("part") else {
        panic!("one key left took more than one part of two");
    };
    let got = plan.finish_from(&snapshot).expect("read");
    assert_eq!(got, want);
    assert_eq!(got.kvs.iter().map(|kv| kv.key.as_slice()).collect::<Vec<_>>(), [b"a", b"c"]);
}

/// A range planned in parts fails rather than answer wrongly when the store is compacted above
/// the revision it reads, or its key index rebuilt (a reopened store), between two parts.
#[test]
fn a_range_planned_in_parts_fails_after_a_compaction_above_its_revision_or_a_reopen() {
    let mut s = TestStore::new();
    for i in 0..10 {
        s.put(&format!("k{i}"), "one");
    }
    let req = RangeRequest::new(KeyRange::prefix("k"));
    let Planning::Partial(cursor) = s.store.continue_range(s.store.start_range(&req).expect("start"), 2).expect("part")
    else {
        panic!("ten keys took one part of two");
    };
    let at = cursor.revision();
    s.put("k1", "two");
    s.store.compact(at + 1).expect("compact").wait().expect("physical");
    match s.store.continue_range(cursor, 100) {
        Err(Error::Compacted { requested, compact_rev }) => assert_eq!((requested, compact_rev), (at, at + 1)),
        other => panic!("expected Compacted, got {other:?}"),
    }

    let Planning::Partial(cursor) = s.store.continue_range(s.store.start_range(&req).expect("start"), 2).expect("part")
    else {
        panic!("ten keys took one part of two");
    };
    let s = s.reopen();
    assert!(matches!(s.store.continue_range(cursor, 100), Err(Error::Internal(_))));
}

/// A range planned at R reads R's rows from a snapshot taken with the plan, whatever the store
/// writes and compacts afterwards: the store actor reads large ranges this way, off its thread,
/// while writes go on.
#[test]
fn a_range_plan_reads_its_revision_from_its_snapshot_after_later_writes_and_compaction() {
    let mut s = TestStore::new();
    // k00..k19 at revisions 2..21, 30 puts of another key, k05 again at 52: the prefix's rows
    // lie close together in history (read by one scan), k04..k06's do not (a lookup each).
    for i in 0..20 {
        s.put(&format!("k{i:02}"), &format!("one-{:02}", 19 - i));
    }
    for _ in 0..30 {
        s.put("z", "other");
    }
    s.put("k05", "one-again");
    let plain = RangeRequest::new(KeyRange::prefix("k"));
    let sparse = RangeRequest::new(KeyRange::interval("k04", "k07"));
    let by_value = RangeRequest {
        limit: 5,
        sort_order: watchkv::SortOrder::Descend,
        sort_target: watchkv::SortTarget::Value,
        ..RangeRequest::new(KeyRange::prefix("k"))
    };
    let by_create = RangeRequest {
        limit: 3,
        sort_order: watchkv::SortOrder::Descend,
        sort_target: watchkv::SortTarget::Create,
        keys_only: true,
        ..RangeRequest::new(KeyRange::prefix("k"))
    };
    let requests = [plain, sparse, by_value, by_create];
    let expected: Vec<_> = requests.iter().map(|r| s.store.range(r).expect("range")).collect();
    let plans: Vec<_> = requests.iter().map(|r| s.store.plan_range(r).expect("plan")).collect();
    let snapshot = s.store.reader().snapshot();
    let at = expected[0].revision;
    assert_eq!(expected[0].kvs.len(), 20);
    assert_eq!(expected[1].kvs.len(), 3);

    for i in 0..20 {
        s.put(&format!("k{i:02}"), "two");
    }
    s.del(KeyRange::single("k00"));
    let now = s.store.current_rev();
    s.store.compact(now).expect("compact").wait().expect("physical");
    assert!(matches!(
        s.store.range(&RangeRequest { revision: at, ..RangeRequest::new(KeyRange::prefix("k")) }),
        Err(Error::Compacted { .. })
    ));

    for ((plan, want), req) in plans.into_iter().zip(expected).zip(&requests) {
        assert_eq!(plan.finish_from(&snapshot).expect("read from the snapshot"), want, "{req:?}");
    }
}
