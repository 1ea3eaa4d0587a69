//! Owns the in-memory lease table: each lease's TTL, deadline and attached keys, and the
//! reverse map from key to lease (etcd `lease/lessor.go`). Time is whatever `Instant` the caller
//! passes in, so tests control it. Persistence and the deletes that revoke/expiry cause belong
//! to `kv_store`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::kv::LeaseId;

/// One granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease id (never 0).
    pub id: LeaseId,
    /// The granted TTL in seconds.
    pub ttl: i64,
    /// When the lease expires unless kept alive.
    pub deadline: Instant,
    /// Keys attached to the lease, in key order (revoke deletes them in this order).
    pub keys: BTreeSet<Vec<u8>>,
}

impl Lease {
    /// Returns the remaining TTL in whole seconds, truncated as etcd's `LeaseTimeToLive` does
    /// (`int64(Remaining().Seconds())`): 59 right after a 60 s grant; 0 once expired.
    #[must_use]
    pub fn remaining_secs(&self, now: Instant) -> i64 {
        i64::try_from(self.deadline.saturating_duration_since(now).as_secs()).unwrap_or(i64::MAX)
    }
}

/// The lease table.
#[derive(Debug, Default)]
pub struct Lessor {
    leases: HashMap<LeaseId, Lease>,
    key_lease: HashMap<Vec<u8>, LeaseId>,
}

/// Returns the deadline `ttl` seconds after `now`, saturating far in the future.
#[must_use]
pub fn deadline_after(now: Instant, ttl: i64) -> Instant {
    let secs = u64::try_from(ttl.max(0)).unwrap_or(0);
    now.checked_add(Duration::from_secs(secs)).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Lessor {
    /// Returns the lease `id`.
    #[must_use]
    pub fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Returns whether lease `id` exists.
    #[must_use]
    pub fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// Adds a lease with no keys.
    pub fn insert(&mut self, id: LeaseId, ttl: i64, deadline: Instant) {
        self.leases.insert(id, Lease { id, ttl, deadline, keys: BTreeSet::new() });
    }

    /// Removes a lease and detaches its keys; returns it.
    pub fn remove(&mut self, id: LeaseId) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        for key in &lease.keys {
            self.key_lease.remove(key);
        }
        Some(lease)
    }

    /// Moves a lease's deadline.
    pub fn set_deadline(&mut self, id: LeaseId, deadline: Instant) -> Option<&Lease> {
        let lease = self.leases.get_mut(&id)?;
        lease.deadline = deadline;
        Some(lease)
    }

    /// Returns the lease `key` is attached to (0 = none).
    #[must_use]
    pub fn lease_of(&self, key: &[u8]) -> LeaseId {
        self.key_lease.get(key).copied().unwrap_or(0)
    }

    /// Attaches `key` to lease `id` (0 = detach), leaving any previous lease.
    pub fn attach(&mut self, key: &[u8], id: LeaseId) {
        if id == 0 && self.key_lease.is_empty() {
            return;
        }
        let old = self.lease_of(key);
        if old == id {
            return;
        }
        if old != 0 {
            if let Some(lease) = self.leases.get_mut(&old) {
                lease.keys.remove(key);
            }
            self.key_lease.remove(key);
        }
        if id != 0 {
            if let Some(lease) = self.leases.get_mut(&id) {
                lease.keys.insert(key.to_vec());
                self.key_lease.insert(key.to_vec(), id);
            }
        }
    }

    /// Returns the ids of leases whose deadline is at or before `now`, oldest deadline first.
    #[must_use]
    pub fn expired(&self, now: Instant) -> Vec<LeaseId> {
        let mut out: Vec<(Instant, LeaseId)> =
            self.leases.values().filter(|l| l.deadline <= now).map(|l| (l.deadline, l.id)).collect();
        out.sort_unstable();
        out.into_iter().map(|(_, id)| id).collect()
    }

    /// Returns the earliest deadline, so a runtime knows when to tick next.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }

    /// Returns every lease id, the soonest to expire first (etcd: lessor.go `Leases` sorts by
    /// remaining time); leases expiring at the same instant in id order.
    #[must_use]
    pub fn ids_by_expiry(&self) -> Vec<LeaseId> {
        let mut ids: Vec<(Instant, LeaseId)> = self.leases.values().map(|l| (l.deadline, l.id)).collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Returns the number of leases.
    #[must_use]
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Returns whether there is no lease.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_moves_keys_between_leases() {
        let now = Instant::now();
        let mut l = Lessor::default();
        l.insert(1, 10, deadline_after(now, 10));
        l.insert(2, 10, deadline_after(now, 10));
        l.attach(b"a", 1);
        l.attach(b"b", 1);
        l.attach(b"a", 2);
        assert_eq!(l.get(1).map(|x| x.keys.len()), Some(1));
        assert_eq!(l.lease_of(b"a"), 2);
        l.attach(b"b", 0);
        assert_eq!(l.lease_of(b"b"), 0);
        assert!(l.get(1).is_some_and(|x| x.keys.is_empty()));
        l.attach(b"c", 99); // unknown lease: nothing attached
        assert_eq!(l.lease_of(b"c"), 0);
        let removed = l.remove(2).expect("lease 2");
        assert_eq!(removed.keys.into_iter().collect::<Vec<_>>(), vec![b"a".to_vec()]);
        assert_eq!(l.lease_of(b"a"), 0);
    }

    #[test]
    fn remaining_ttl_truncates_and_expiry_is_ordered() {
        let now = Instant::now();
        let mut l = Lessor::default();
        l.insert(7, 5, now + Duration::from_millis(4500));
        l.insert(8, 1, now + Duration::from_secs(1));
        assert_eq!(l.get(7).map(|x| x.remaining_secs(now)), Some(4));
        assert_eq!(l.expired(now), Vec::<LeaseId>::new());
        assert_eq!(l.expired(now + Duration::from_secs(10)), vec![8, 7]);
        assert_eq!(l.next_deadline(), Some(now + Duration::from_secs(1)));
        assert_eq!(l.ids_by_expiry(), vec![8, 7]);
        l.set_deadline(8, now + Duration::from_secs(9));
        l.insert(3, 9, now + Duration::from_secs(9));
        assert_eq!(l.ids_by_expiry(), vec![7, 3, 8], "soonest first, ties by id");
    }
}
