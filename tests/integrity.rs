//! The integrity self-check's building blocks on a real store: `HashKV` of a revision stays the
//! same while writes add later revisions, a compaction starts a new reference, and a row changed
//! on disk under the reference makes the check report a mismatch (what raises `CORRUPT`).

mod common;

use common::TestStore;
use watchkv::codec;
use watchkv::hash::{IntegrityCheck, IntegrityVerdict};
use watchkv::{KeyValue, Revision};

fn check(s: &TestStore, c: &mut IntegrityCheck) -> IntegrityVerdict {
    let plan = s.store.hash_kv_plan(c.next_revision(s.store.compact_rev())).expect("plan");
    c.observe(plan.run().expect("hash"))
}

#[test]
fn a_row_changed_on_disk_is_a_mismatch_and_writes_or_compactions_are_not() {
    let mut s = TestStore::new();
    for i in 0..20 {
        s.put(&format!("k{}", i % 7), &format!("v{i}"));
    }
    let mut c = IntegrityCheck::default();
    assert_eq!(check(&s, &mut c), IntegrityVerdict::Recorded);
    assert_eq!(check(&s, &mut c), IntegrityVerdict::Consistent);
    // Later writes only add revisions above the reference.
    for i in 0..10 {
        s.put(&format!("k{i}"), "later");
    }
    assert_eq!(check(&s, &mut c), IntegrityVerdict::Consistent);
    // A compaction changes what HashKV counts: a new reference, no alarm.
    let rev = s.store.current_rev();
    s.store.compact(rev - 5).expect("compact").wait().expect("physical compaction");
    assert_eq!(check(&s, &mut c), IntegrityVerdict::Recorded);
    assert_eq!(check(&s, &mut c), IntegrityVerdict::Consistent);

    // Damage: rewrite the row of revision `rev - 2` with another value, as a bad disk would.
    let damaged = Revision::new(rev - 2, 0);
    let kv = KeyValue {
        key: b"k9".to_vec(),
        create_revision: rev - 2,
        mod_revision: rev - 2,
        version: 1,
        value: b"flipped".to_vec(),
        lease: 0,
    };
    let backend = s.store.backend_handle();
    let mut batch = backend.batch();
    batch.put_row(damaged.to_key(false), codec::encode_row(&kv, None));
    batch.commit().expect("write the damaged row");
    assert!(
        matches!(check(&s, &mut c), IntegrityVerdict::Mismatch { .. }),
        "a changed row under the reference revision is found"
    );
}
