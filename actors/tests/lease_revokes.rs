//! A keep-alive of a lease past its deadline answers TTL 0 only once the lease's keys are gone
//! (etcd: lessor.go `Renew` waits for the revoke): when the lease is not among the oldest the
//! expiry takes in one turn, it is revoked on its own; when the store refuses the revoke
//! (`CORRUPT` raised), the keep-alive gets that error and the keys stay until it is cleared.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{TestSystem, DEADLINE};
use watchkv::alarm::{AlarmMember, AlarmType};
use watchkv::{Error, KeyRange, PutRequest, RangeRequest};
use watchkv_actors::protocol::Alarm;
use watchkv_actors::Handle;

/// Most leases one expiry turn revokes (`store::leases::LEASE_REVOKES_PER_TICK`, etcd's
/// `leaseRevokeRate / 2`).
const REVOKES_PER_TURN: usize = 500;

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
async fn a_due_lease_past_one_turns_share_is_revoked_for_its_keep_alive() {
    let (sys, _) = system().await;
    let mut leases = Vec::new();
    for i in 0..=REVOKES_PER_TURN {
        let (lease, ttl, _) = sys.handle.lease_grant(0, 1).await.expect("grant");
        assert_eq!(ttl, 1);
        sys.handle.put(PutRequest::new(format!("k/{i:04}"), "v").lease(lease)).await.expect("put");
        leases.push(lease);
    }
    // Granted last, the last lease is due last: one turn takes the 500 before it.
    until(Instant::now() + Duration::from_millis(1100)).await;
    let last = format!("k/{REVOKES_PER_TURN:04}");
    assert_eq!(count(&sys.handle, &last).await, 1, "nothing revoked yet: no lease timer in tests");

    let (ttl, revision) = sys.handle.lease_keep_alive_answer(leases[REVOKES_PER_TURN]).await.expect("keep-alive");
    assert_eq!(ttl, 0, "the lease is gone");
    assert_eq!(count(&sys.handle, &last).await, 0, "TTL 0, so its key is gone too");
    assert_eq!(count(&sys.handle, "k/0000").await, 0, "the oldest went in the same turn");
    // One revision per revoke, 501 in all (the key counts above tell which path took which).
    let puts_done = 1 + REVOKES_PER_TURN as i64;
    assert_eq!(revision, 1 + puts_done + REVOKES_PER_TURN as i64 + 1, "revision after the revokes");
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
