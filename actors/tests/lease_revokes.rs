//! A keep-alive of a lease past its deadline answers TTL 0 only once the lease's keys are gone
//! (etcd: lessor.go `Renew` waits for the revoke): the lease is revoked on its own, whatever
//! other leases are due (the lease tick takes those, at most 500 a turn); when the store refuses
//! the revoke (`CORRUPT` raised), the keep-alive gets that error and the keys stay until it is
//! cleared.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{TestSystem, DEADLINE};
use watchkv::alarm::{AlarmMember, AlarmType};
use watchkv::{Error, KeyRange, PutRequest, RangeRequest};
use watchkv_actors::protocol::{Alarm, LeaseTick};
use watchkv_actors::Handle;

/// A system whose leases may live one second, the shortest etcd grants on a fast network.
async fn system() -> (TestSystem, u64) {
    let member = Rc::new(Cell::new(0));
    let seen = Rc::clone(&member);
    let sys = TestSystem::with(false, move |c| {
        let store = c.store().clone().with_min_lease_ttl(1);
        seen.set(store.member_id());
        c.with_store(store)
    })
    .await;
    (sys, member.get())
}

/// How many keys `key` names (0 or 1).
async fn count(handle: &Handle, key: &str) -> i64 {
    let req = RangeRequest { count_only: true, ..RangeRequest::new(KeyRange::Single(key.into())) };
    handle.range(req).await.expect("range").count
}

/// Waits for `deadline` to pass: a wait for a time, not for another thread.
async fn until(deadline: Instant) {
    assert!(deadline < Instant::now() + DEADLINE, "a deadline past the test's");
    while Instant::now() <= deadline {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_due_lease_is_revoked_for_its_keep_alive_and_the_other_due_ones_wait_for_the_tick() {
    let (sys, _) = system().await;
    let mut leases = Vec::new();
    for i in 0..3 {
        let (lease, ttl, _) = sys.handle.lease_grant(0, 1).await.expect("grant");
        assert_eq!(ttl, 1);
        sys.handle.put(PutRequest::new(format!("k/{i}"), "v").lease(lease)).await.expect("put");
        leases.push(lease);
    }
    until(Instant::now() + Duration::from_millis(1100)).await;
    assert_eq!(count(&sys.handle, "k/2").await, 1, "nothing revoked yet: no lease timer in tests");

    // The last granted, not the longest overdue: revoked first all the same.
    let (ttl, revision) = sys.handle.lease_keep_alive_answer(leases[2]).await.expect("keep-alive");
    assert_eq!(ttl, 0, "the lease is gone");
    assert_eq!(count(&sys.handle, "k/2").await, 0, "TTL 0, so its key is gone too");
    assert_eq!(revision, 5, "three puts after revision 1, then the one revoke");
    assert_eq!(count(&sys.handle, "k/0").await, 1, "the other due leases wait for the tick");

    sys.handle.store_addr().send(LeaseTick(None)).await.expect("tick");
    assert_eq!((count(&sys.handle, "k/0").await, count(&sys.handle, "k/1").await), (0, 0), "the tick took them");
}

#[actix_rt::test]
async fn a_due_lease_whose_revoke_is_refused_keeps_its_keys_and_its_keep_alive_is_refused() {
    let (sys, member) = system().await;
    let (lease, _, _) = sys.handle.lease_grant(0, 1).await.expect("grant");
    let granted = Instant::now();
    sys.handle.put(PutRequest::new("held", "v").lease(lease)).await.expect("put");
    let corrupt = AlarmMember { member_id: member, alarm: AlarmType::Corrupt };
    sys.handle.alarm(Alarm::Activate(corrupt)).await.expect("raise CORRUPT");
    until(granted + Duration::from_millis(1100)).await;

    let refused = sys.handle.lease_keep_alive_answer(lease).await;
    assert!(matches!(refused, Err(Error::CorruptAlarm)), "the store's refusal, not TTL 0: {refused:?}");
    assert_eq!(count(&sys.handle, "held").await, 1, "the key stays while the revoke is refused");
    let (status, _) = sys.handle.lease_time_to_live_answer(lease, true).await.expect("time-to-live");
    assert_eq!((status.ttl, status.keys), (0, vec![b"held".to_vec()]), "due, not gone");

    sys.handle.alarm(Alarm::Deactivate(corrupt)).await.expect("clear CORRUPT");
    let (ttl, _) = sys.handle.lease_keep_alive_answer(lease).await.expect("keep-alive");
    assert_eq!(ttl, 0, "revoked now");
    assert_eq!(count(&sys.handle, "held").await, 0, "with its key");
}
