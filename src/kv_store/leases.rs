//! Owns the store's side of leases: grant, keep-alive, time-to-live, revoke (a write deleting the
//! lease's keys in one revision) and expiry (etcd `lease/lessor.go`: `Grant`, `Renew`,
//! `Revoke`, `expireExists`; the in-memory table is [`crate::lease`]).

use std::time::Instant;

use super::quota::Gate;
use super::{Committed, KvStore};
use crate::codec::LeaseRecord;
use crate::config::MAX_LEASE_TTL;
use crate::error::{Error, Result};
use crate::key_range::KeyRange;
use crate::kv::LeaseId;
use crate::lease::deadline_after;
use crate::request::DeleteRangeRequest;

/// Revokes a lease, deleting its keys in one revision (etcd `LeaseRevoke`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRevokeRequest(pub LeaseId);

/// A lease as `time_to_live` reports it (etcd `LeaseTimeToLiveResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease id.
    pub id: LeaseId,
    /// Remaining seconds, rounded up.
    pub ttl: i64,
    /// The TTL it was granted with.
    pub granted_ttl: i64,
    /// Attached keys in key order, if asked for.
    pub keys: Vec<Vec<u8>>,
}

impl KvStore {
    /// Grants a lease (etcd `LeaseGrant`). `id` 0 asks the store to pick one; a TTL below
    /// `min_lease_ttl` is raised to it. Returns the id and the granted TTL.
    ///
    /// # Errors
    /// `LeaseExists`, `LeaseTtlTooLarge`, or a storage error.
    pub fn lease_grant(&mut self, id: LeaseId, ttl: i64, now: Instant) -> Result<(LeaseId, i64)> {
        self.check_writable()?;
        self.admit(Gate::LeaseGrant)?;
        if ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(self.config.min_lease_ttl());
        let id = if id == 0 { self.fresh_lease_id() } else { id };
        // An id imported keys carry is taken too: see `foreign_leases`.
        if self.lessor.contains(id) || self.foreign_leases.contains(&id) {
            return Err(Error::LeaseExists);
        }
        let mut batch = self.backend.batch();
        batch.put_lease(&LeaseRecord { id, ttl });
        // A lease of its own makes the store more than upstream's copy: a mirror could not
        // re-bootstrap over it (`begin_reimport` refuses local leases).
        if self.upstream_origin.take().is_some() {
            super::UpstreamOrigin::delete_with(&mut batch);
        }
        if let Err(e) = batch.commit() {
            self.poison(&e);
            return Err(e);
        }
        self.unpersisted = true;
        self.persist()?;
        self.lessor.insert(id, ttl, deadline_after(now, ttl));
        Ok((id, ttl))
    }

    fn fresh_lease_id(&self) -> LeaseId {
        loop {
            // Positive, non-zero, unused: etcd's server-chosen ids are random too.
            let id = rand::random::<i64>() & i64::MAX;
            if id != 0 && !self.lessor.contains(id) && !self.foreign_leases.contains(&id) {
                return id;
            }
        }
    }

    /// Revokes a lease: deletes its keys in one revision (DELETE events in key order) and the
    /// lease itself (etcd `LeaseRevoke`). Returns the revision after it.
    ///
    /// # Errors
    /// `LeaseNotFound`, or a storage error.
    pub fn lease_revoke(&mut self, id: LeaseId) -> Result<Committed<i64>> {
        self.write(LeaseRevokeRequest(id))
    }

    /// Renews a lease: its deadline becomes `now + ttl`. Returns the TTL.
    ///
    /// # Errors
    /// `LeaseNotFound` (also for a lease that expired but was not yet revoked).
    pub fn lease_keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<i64> {
        let ttl = match self.lessor.get(id) {
            Some(l) if l.deadline > now => l.ttl,
            _ => return Err(Error::LeaseNotFound),
        };
        self.lessor.set_deadline(id, deadline_after(now, ttl));
        Ok(ttl)
    }

    /// Whether lease `id` exists and its deadline has passed: it is due to be revoked.
    #[must_use]
    pub fn is_lease_due(&self, id: LeaseId, now: Instant) -> bool {
        self.lessor.get(id).is_some_and(|l| l.deadline <= now)
    }

    /// Reports a lease's remaining and granted TTL, and its keys if `with_keys`.
    ///
    /// # Errors
    /// `LeaseNotFound`.
    pub fn lease_time_to_live(&self, id: LeaseId, now: Instant, with_keys: bool) -> Result<LeaseStatus> {
        let lease = self.lessor.get(id).ok_or(Error::LeaseNotFound)?;
        Ok(LeaseStatus {
            id,
            ttl: lease.remaining_secs(now),
            granted_ttl: lease.ttl,
            keys: if with_keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
        })
    }

    /// Returns every lease id, the soonest to expire first, as etcd's `LeaseLeases` lists them.
    #[must_use]
    pub fn leases(&self) -> Vec<LeaseId> {
        self.lessor.ids_by_expiry()
    }

    /// Returns when the next lease expires, so a runtime knows when to call
    /// [`Self::expire_leases`].
    #[must_use]
    pub fn next_lease_deadline(&self) -> Option<Instant> {
        self.lessor.next_deadline()
    }

    /// Revokes every lease whose deadline is at or before `now`, each in its own write (as
    /// etcd's lessor does), with one persist for all. Returns what each revoke produced.
    pub fn expire_leases(&mut self, now: Instant) -> Vec<(LeaseId, Result<Committed<i64>>)> {
        self.expire_leases_at_most(now, usize::MAX)
    }

    /// As [`Self::expire_leases`], for at most `limit` leases, the longest overdue first; the
    /// rest stay due for the next call (etcd: lessor.go `revokeExpiredLeases` revokes at most
    /// `leaseRevokeRate / 2` per 500 ms, so that many leases expiring at once do not hold the
    /// store for one long turn).
    pub fn expire_leases_at_most(&mut self, now: Instant, limit: usize) -> Vec<(LeaseId, Result<Committed<i64>>)> {
        let mut expired = self.lessor.expired(now);
        expired.truncate(limit);
        let mut group = self.group();
        let applied: Vec<_> = expired.iter().map(|&id| (id, group.apply(LeaseRevokeRequest(id)))).collect();
        let persisted = group.persist();
        applied.into_iter().map(|(id, a)| (id, a.settle(&persisted))).collect()
    }

    /// Deletes the lease's keys in one revision and the lease itself, without persisting.
    pub(super) fn apply_lease_revoke(&mut self, id: LeaseId) -> Result<Committed<i64>> {
        self.admit(Gate::Free)?;
        self.apply_write(
            id,
            |store, &id| if store.lessor.contains(id) { Ok(Vec::new()) } else { Err(Error::LeaseNotFound) },
            |store, w, id, _| {
                let keys: Vec<Vec<u8>> =
                    store.lessor.get(id).map(|l| l.keys.iter().cloned().collect()).unwrap_or_default();
                for key in keys {
                    store.exec_delete(w, &DeleteRangeRequest::new(KeyRange::Single(key)))?;
                }
                store.lessor.remove(id);
                store.group.delete_lease(id);
                Ok(0)
            },
            |revision, rev| *revision = rev,
        )
    }
}
