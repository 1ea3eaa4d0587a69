//! Alarms and the space quota in the core (etcd: quota.go, apply.go `applierV3Capped`,
//! `applierV3Corrupt`): a store over its quota raises `NOSPACE` and refuses what adds data
//! until an operator compacts, defragments and disarms; the alarm survives a restart; `CORRUPT`
//! refuses every write and compaction but not reads.

mod common;

use std::time::Instant;

use common::TestStore;
use watchkv::alarm::{AlarmMember, AlarmType};
use watchkv::config::DEFAULT_MEMBER_ID;
use watchkv::{DeleteRangeRequest, Error, KeyRange, PutRequest, RangeRequest, RequestOp, TxnRequest};

const VALUE_BYTES: usize = 64 * 1024;

/// `VALUE_BYTES` that do not compress (fjall compresses what it writes), different per `seed`.
fn incompressible(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..VALUE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn nospace() -> AlarmMember {
    AlarmMember { member_id: DEFAULT_MEMBER_ID, alarm: AlarmType::NoSpace }
}

fn put_txn(key: &str) -> TxnRequest {
    TxnRequest { success: vec![RequestOp::Put(PutRequest::new(key, "v"))], ..TxnRequest::default() }
}

fn delete_txn(key: &str) -> TxnRequest {
    TxnRequest {
        success: vec![RequestOp::DeleteRange(DeleteRangeRequest::new(KeyRange::single(key)))],
        ..TxnRequest::default()
    }
}

#[test]
fn over_quota_raises_nospace_until_compact_defragment_and_disarm() {
    let probe = TestStore::new();
    let empty = probe.store.disk_space().expect("size of an empty store");
    drop(probe);
    let quota = empty + (2 << 20);
    let mut s = TestStore::with(|c| c.with_quota_backend_bytes(Some(quota)));

    // Writes go through until the store would pass its quota.
    let mut written = 0u64;
    let refused = loop {
        match s.store.put(PutRequest::new(format!("big/{written:04}"), incompressible(written))) {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 200, "a 2 MiB quota still not reached after {written} puts of 64 KiB");
    };
    assert!(matches!(refused, Error::NoSpace), "{refused:?}");
    assert!(written >= 8, "the quota counts the data, not the journal's preallocation: {written} puts");
    assert_eq!(s.store.alarms(None), vec![nospace()]);
    assert_eq!(s.store.alarms(Some(AlarmType::Corrupt)), vec![]);
    let size_full = s.store.disk_space().expect("size");

    // Under NOSPACE: what adds data is refused, what frees it or reads passes.
    assert!(matches!(s.store.put(PutRequest::new("small", "v")), Err(Error::NoSpace)));
    assert!(matches!(s.store.txn(put_txn("small")), Err(Error::NoSpace)));
    assert!(matches!(s.store.lease_grant(0, 60, Instant::now()), Err(Error::NoSpace)));
    assert!(s.store.txn(delete_txn("big/0000")).is_ok(), "a txn without puts passes");
    let rev = s.store.current_rev();
    s.store.range(&RangeRequest::new(KeyRange::prefix("big/"))).expect("reads pass");

    // The alarm is on disk: a restart keeps refusing.
    let mut s = s.reopen();
    assert_eq!(s.store.alarms(None), vec![nospace()]);
    assert!(matches!(s.store.put(PutRequest::new("small", "v")), Err(Error::NoSpace)));

    // etcd's recovery: delete or compact history away, defragment, disarm.
    let deleted = s.store.delete_range(DeleteRangeRequest::new(KeyRange::prefix("big/"))).expect("delete");
    assert_eq!(deleted.response.deleted, i64::try_from(written).unwrap_or(0) - 1);
    let ticket = s.store.compact(s.store.current_rev()).expect("compact");
    ticket.wait().expect("physical compaction");
    s.store.backend_handle().defragment().expect("defragment");
    let size_after = s.store.disk_space().expect("size");
    assert!(size_after < size_full / 2, "defragment reclaims the deleted values: {size_full} -> {size_after} bytes");
    // Still raised until disarmed.
    assert!(matches!(s.store.put(PutRequest::new("small", "v")), Err(Error::NoSpace)));
    assert!(s.store.deactivate_alarm(nospace()).expect("disarm"));
    assert!(!s.store.deactivate_alarm(nospace()).expect("disarm twice"), "nothing left to disarm");
    assert!(s.store.alarms(None).is_empty());
    let after = s.store.put(PutRequest::new("small", "v")).expect("writes pass again");
    assert!(after.response.revision > rev);
    let s = s.reopen();
    assert!(s.store.alarms(None).is_empty(), "the disarm is on disk too");
}

#[test]
fn no_quota_never_raises_and_a_small_write_under_the_quota_passes() {
    let probe = TestStore::new();
    let empty = probe.store.disk_space().expect("size of an empty store");
    drop(probe);
    // 40 puts of 64 KiB pass a 1 MiB quota: a small write under it passes, then they raise it.
    let mut quota = TestStore::with(|c| c.with_quota_backend_bytes(Some(empty + (1 << 20))));
    quota.store.put(PutRequest::new("small", "v")).expect("a small write under the quota");
    let refused = (0..40).find_map(|i| quota.store.put(PutRequest::new(format!("k{i}"), incompressible(i))).err());
    assert!(matches!(refused, Some(Error::NoSpace)), "{refused:?}");
    // The same puts with no quota at all (not etcd's 2 GiB default) raise nothing.
    let mut s = TestStore::with(|c| c.with_quota_backend_bytes(None));
    assert_eq!(s.store.config().quota_backend_bytes(), None);
    for i in 0..40 {
        s.store.put(PutRequest::new(format!("k{i}"), incompressible(i))).expect("no quota");
    }
    assert!(s.store.alarms(None).is_empty());
}

#[test]
fn corrupt_refuses_writes_and_compaction_but_serves_reads() {
    let mut s = TestStore::new();
    s.put("k", "v");
    let corrupt = AlarmMember { member_id: 42, alarm: AlarmType::Corrupt };
    assert!(s.store.activate_alarm(corrupt).expect("activate"));
    assert!(!s.store.activate_alarm(corrupt).expect("activate twice"), "already raised");
    assert!(matches!(s.store.put(PutRequest::new("k", "w")), Err(Error::CorruptAlarm)));
    assert!(matches!(s.store.delete_range(DeleteRangeRequest::new(KeyRange::single("k"))), Err(Error::CorruptAlarm)));
    assert!(matches!(s.store.txn(delete_txn("k")), Err(Error::CorruptAlarm)));
    assert!(matches!(s.store.compact(1), Err(Error::CorruptAlarm)));
    assert!(matches!(s.store.lease_grant(0, 60, Instant::now()), Err(Error::CorruptAlarm)));
    let read = s.store.range(&RangeRequest::new(KeyRange::single("k"))).expect("reads are served");
    assert_eq!(read.kvs.len(), 1);
    // A txn that only reads is a read, by either door; one that could delete is refused.
    let read_txn = TxnRequest {
        success: vec![RequestOp::Range(RangeRequest::new(KeyRange::single("k")))],
        ..TxnRequest::default()
    };
    assert_eq!(s.store.read_txn(&read_txn).expect("a read-only txn is served").responses.len(), 1);
    let committed = s.store.txn(read_txn.clone()).expect("a read-only txn is served by `txn` too");
    assert!(committed.events.is_empty());
    let mut may_delete = read_txn;
    may_delete.failure = delete_txn("k").success;
    assert!(matches!(s.store.txn(may_delete), Err(Error::CorruptAlarm)));
    assert_eq!(Error::CorruptAlarm.to_string(), "etcdserver: corrupt cluster");
    assert!(s.store.deactivate_alarm(corrupt).expect("deactivate"));
    s.store.put(PutRequest::new("k", "w")).expect("writes after the disarm");
}
