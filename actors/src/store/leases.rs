//! Owns the store's lease handlers: grant, keep-alive, time-to-live, the list, and the lease
//! tick that expires due leases (a revoke is a write and goes through the group commit).

use std::time::Instant;

use actix::prelude::*;
use watchkv::{Error, LeaseId, LeaseStatus, Result};

use super::{PerStream, StoreActor};
use crate::protocol::{LeaseGrant, LeaseKeepAlive, LeaseLeases, LeaseTick, LeaseTimeToLive};

/// Most leases one tick revokes: etcd's `leaseRevokeRate` (1000 per second) over its 500 ms
/// revoke loop, the default tick here. The rest wait for the next tick.
pub const LEASE_REVOKES_PER_TICK: usize = 500;

impl Handler<LeaseGrant> for StoreActor {
    type Result = Result<(LeaseId, i64, i64)>;

    fn handle(&mut self, msg: LeaseGrant, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        let (id, ttl) = store.lease_grant(msg.id, msg.ttl, Instant::now())?;
        Ok((id, ttl, store.current_rev()))
    }
}

impl Handler<LeaseKeepAlive> for StoreActor {
    type Result = Result<(i64, i64)>;

    /// A lease past its deadline but not revoked yet (the tick has not come, or the store
    /// could not write) is revoked first, on its own (the tick takes the other due leases), so
    /// that the keep-alive's TTL 0 means its keys are
    /// gone, as in etcd, whose `Renew` of an expired lease waits for its revoke
    /// (etcd: lessor.go `Renew`). When the revoke cannot be written the answer is the store's
    /// error, which a client retries, not TTL 0: a session ended while its keys stay would
    /// leave them held by no one once the store recovers and the lease lives again. So is a
    /// revoke the store refuses (the `CORRUPT` alarm's error), where etcd's keep-alive waits.
    fn handle(&mut self, msg: LeaseKeepAlive, ctx: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        if self.store.as_ref().is_some_and(|s| s.is_lease_due(msg.0, now)) {
            self.revoke_due_lease(msg.0, ctx)?;
        }
        let store = self.store()?;
        match store.lease_keep_alive(msg.0, now) {
            Ok(ttl) => Ok((ttl, store.current_rev())),
            // A revoke whose persist failed took the lease out of memory only: whether it is
            // gone is known once the store recovers (and reopens what the disk holds).
            Err(Error::LeaseNotFound) if store.is_poisoned() => Err(Error::Poisoned),
            Err(e) => Err(e),
        }
    }
}

impl Handler<LeaseTimeToLive> for StoreActor {
    type Result = Result<(LeaseStatus, i64)>;

    fn handle(&mut self, msg: LeaseTimeToLive, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        match store.lease_time_to_live(msg.id, Instant::now(), msg.keys) {
            Ok(status) => Ok((status, store.current_rev())),
            // As for a keep-alive: a revoke that was not persisted is not reported as done.
            Err(Error::LeaseNotFound) if store.is_poisoned() => Err(Error::Poisoned),
            Err(e) => Err(e),
        }
    }
}

impl Handler<LeaseLeases> for StoreActor {
    type Result = Result<(Vec<LeaseId>, i64)>;

    fn handle(&mut self, _: LeaseLeases, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        Ok((store.leases(), store.current_rev()))
    }
}

impl Handler<LeaseTick> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: LeaseTick, ctx: &mut Self::Context) {
        self.expire_due_leases(msg.0.unwrap_or_else(Instant::now), ctx);
    }
}

impl StoreActor {
    /// Revokes lease `id`, due, on its own (a keep-alive waits for it) and notifies watchers
    /// of its keys' deletions. The error is the store's when it cannot write or refuses the
    /// revoke; a persist that fails starts the recovery.
    fn revoke_due_lease(&mut self, id: LeaseId, ctx: &mut Context<Self>) -> Result<()> {
        if self.failure.is_some() {
            return Err(Error::Poisoned);
        }
        let store = self.store()?;
        if store.is_poisoned() {
            return Err(Error::Poisoned);
        }
        match store.lease_revoke(id) {
            Ok(c) => {
                self.publish();
                let mut out = PerStream::default();
                self.committed(vec![c.events], &mut out);
                self.deliver(out);
                Ok(())
            }
            Err(e) => {
                if store.is_poisoned() {
                    self.check_storage(ctx);
                }
                Err(e)
            }
        }
    }

    /// Revokes the leases due at `now`, at most [`LEASE_REVOKES_PER_TICK`], each a write of its
    /// own with one persist for all, and notifies watchers of their deletions. Nothing while the
    /// store cannot write (poisoned, or recovering): the leases stay due until it can. A persist
    /// that fails publishes nothing, as a failed group commit (`commit.rs`), and starts the
    /// recovery.
    pub(super) fn expire_due_leases(&mut self, now: Instant, ctx: &mut Context<Self>) {
        if self.failure.is_some() {
            return;
        }
        let Some(store) = self.store.as_mut() else { return };
        if store.is_poisoned() || store.next_lease_deadline().is_none_or(|d| d > now) {
            return;
        }
        let results = store.expire_leases_at_most(now, LEASE_REVOKES_PER_TICK);
        if store.is_poisoned() {
            let error = results.into_iter().find_map(|(_, r)| r.err());
            tracing::error!(error = ?error, "lease expiry failed: the leases stay due until the store recovers");
            self.check_storage(ctx);
            return;
        }
        self.publish();
        let mut out = PerStream::default();
        // Refused revokes (the `CORRUPT` alarm refuses them all, tick after tick) are logged as
        // one line per tick, not one per lease.
        let mut refused: Option<(LeaseId, Error)> = None;
        let mut refused_count = 0usize;
        for (id, result) in results {
            match result {
                Ok(c) => self.committed(vec![c.events], &mut out),
                Err(e) => {
                    refused_count += 1;
                    refused.get_or_insert((id, e));
                }
            }
        }
        if let Some((lease, error)) = refused {
            tracing::error!(leases = refused_count, first = lease, error = %error, "lease expiry failed: those leases stay due");
        }
        self.deliver(out);
    }
}
