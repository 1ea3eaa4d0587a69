//! Owns the store's lease handlers: grant, keep-alive, time-to-live, the list, and the lease
//! tick that expires due leases (a revoke is a write and goes through the group commit).

use std::time::Instant;

use actix::prelude::*;
use watchkv::{LeaseId, LeaseStatus, Result};

use super::{PerStream, StoreActor};
use crate::protocol::{LeaseGrant, LeaseKeepAlive, LeaseLeases, LeaseTick, LeaseTimeToLive};

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

    fn handle(&mut self, msg: LeaseKeepAlive, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        let ttl = store.lease_keep_alive(msg.0, Instant::now())?;
        Ok((ttl, store.current_rev()))
    }
}

impl Handler<LeaseTimeToLive> for StoreActor {
    type Result = Result<(LeaseStatus, i64)>;

    fn handle(&mut self, msg: LeaseTimeToLive, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        Ok((store.lease_time_to_live(msg.id, Instant::now(), msg.keys)?, store.current_rev()))
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

    fn handle(&mut self, msg: LeaseTick, _: &mut Self::Context) {
        let now = msg.0.unwrap_or_else(Instant::now);
        let Some(store) = self.store.as_mut() else { return };
        if store.next_lease_deadline().is_none_or(|d| d > now) {
            return;
        }
        let results = store.expire_leases(now);
        self.publish();
        let mut out = PerStream::default();
        for (id, result) in results {
            match result {
                Ok(c) => self.committed(vec![c.events], &mut out),
                Err(e) => tracing::error!(lease = id, error = %e, "lease expiry failed"),
            }
        }
        self.deliver(out);
    }
}
