//! Owns the store's alarms (etcd: server/etcdserver/api/v3alarm/alarms.go `AlarmStore`) and the
//! space quota that raises one (etcd: server/etcdserver/quota.go `backendQuota`): which alarms
//! are active, what each refuses, and what a request costs against the quota. Persisting them
//! is the store's (`KvStore::activate_alarm`); the list survives a restart as in etcd.

use std::collections::BTreeSet;

use crate::request::{PutRequest, RequestOp, TxnRequest};

/// An alarm's kind, with etcd's wire numbers (`etcdserverpb.AlarmType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmType {
    /// The store is over its space quota: writes that add data are refused until an operator
    /// compacts, defragments and disarms (etcd `NOSPACE`).
    NoSpace,
    /// The store's data failed an integrity check: every write and compaction is refused, reads
    /// are served (etcd `CORRUPT`).
    Corrupt,
}

impl AlarmType {
    /// The alarm's `etcdserverpb.AlarmType` number.
    #[must_use]
    pub fn wire(self) -> i32 {
        match self {
            Self::NoSpace => 1,
            Self::Corrupt => 2,
        }
    }

    /// The alarm for an `etcdserverpb.AlarmType` number; `None` for `NONE` (0) and unknown
    /// numbers.
    #[must_use]
    pub fn from_wire(n: i32) -> Option<Self> {
        match n {
            1 => Some(Self::NoSpace),
            2 => Some(Self::Corrupt),
            _ => None,
        }
    }

    /// etcd's name of the alarm (`NOSPACE`, `CORRUPT`), as `/health` and `alarm list` show it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::NoSpace => "NOSPACE",
            Self::Corrupt => "CORRUPT",
        }
    }
}

/// One raised alarm: which member raised it and what it is (etcd `AlarmMember`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlarmMember {
    /// The member the alarm is about.
    pub member_id: u64,
    /// The alarm.
    pub alarm: AlarmType,
}

/// The set of active alarms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alarms {
    active: BTreeSet<AlarmMember>,
}

impl Alarms {
    /// Returns the active alarms, all of them (`None`) or of one kind, ordered by member and kind.
    #[must_use]
    pub fn list(&self, kind: Option<AlarmType>) -> Vec<AlarmMember> {
        self.active.iter().filter(|a| kind.is_none_or(|k| a.alarm == k)).copied().collect()
    }

    /// Whether an alarm of `kind` is active for any member.
    #[must_use]
    pub fn is_raised(&self, kind: AlarmType) -> bool {
        self.active.iter().any(|a| a.alarm == kind)
    }

    /// Whether no alarm is active.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Adds `alarm`; returns whether it was new.
    pub fn insert(&mut self, alarm: AlarmMember) -> bool {
        self.active.insert(alarm)
    }

    /// Whether `alarm` is active.
    #[must_use]
    pub fn contains(&self, alarm: AlarmMember) -> bool {
        self.active.contains(&alarm)
    }

    /// Removes `alarm`; returns whether it was active.
    pub fn remove(&mut self, alarm: AlarmMember) -> bool {
        self.active.remove(&alarm)
    }
}

/// etcd's default space quota: 2 GiB (etcd `DefaultQuotaBytes`).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 << 30;

/// What etcd counts for each key-value beyond its key and value (etcd quota.go `kvOverhead`).
const KV_OVERHEAD: u64 = 256;
/// What etcd counts for a lease grant (etcd quota.go `leaseOverhead`).
pub const LEASE_OVERHEAD: u64 = 64;

/// What a put costs against the quota (etcd `costPut`).
#[must_use]
pub fn cost_put(p: &PutRequest) -> u64 {
    KV_OVERHEAD + p.key.len() as u64 + p.value.len() as u64
}

/// What a txn costs: the dearer of its branches' puts, nested txns included (etcd `costTxn`,
/// `costTxnReq`).
#[must_use]
pub fn cost_txn(t: &TxnRequest) -> u64 {
    fn branch(ops: &[RequestOp]) -> u64 {
        ops.iter()
            .map(|op| match op {
                RequestOp::Put(p) => cost_put(p),
                RequestOp::Txn(t) => cost_txn(t),
                RequestOp::Range(_) | RequestOp::DeleteRange(_) | RequestOp::Empty => 0,
            })
            .sum()
    }
    branch(&t.success).max(branch(&t.failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeleteRangeRequest, KeyRange, RangeRequest};

    #[test]
    fn wire_numbers_and_names_are_etcds() {
        assert_eq!(AlarmType::from_wire(1), Some(AlarmType::NoSpace));
        assert_eq!(AlarmType::from_wire(2), Some(AlarmType::Corrupt));
        assert_eq!(AlarmType::from_wire(0), None);
        assert_eq!(AlarmType::Corrupt.wire(), 2);
        assert_eq!(AlarmType::NoSpace.name(), "NOSPACE");
    }

    #[test]
    fn costs_follow_etcd() {
        let put = PutRequest::new("key", "value");
        assert_eq!(cost_put(&put), 256 + 3 + 5);
        let txn = TxnRequest {
            success: vec![RequestOp::Put(put.clone()), RequestOp::Put(put.clone())],
            failure: vec![RequestOp::Put(put.clone())],
            ..TxnRequest::default()
        };
        assert_eq!(cost_txn(&txn), 2 * 264);
        let no_puts = TxnRequest {
            success: vec![RequestOp::Range(RangeRequest::new(KeyRange::single("a")))],
            failure: vec![RequestOp::DeleteRange(DeleteRangeRequest::new(KeyRange::single("a")))],
            ..TxnRequest::default()
        };
        assert_eq!(cost_txn(&no_puts), 0, "reads and deletes cost nothing: they pass under NOSPACE");
    }

    #[test]
    fn alarms_list_by_kind() {
        let mut a = Alarms::default();
        assert!(a.insert(AlarmMember { member_id: 7, alarm: AlarmType::NoSpace }));
        assert!(!a.insert(AlarmMember { member_id: 7, alarm: AlarmType::NoSpace }));
        a.insert(AlarmMember { member_id: 7, alarm: AlarmType::Corrupt });
        assert_eq!(a.list(None).len(), 2);
        assert_eq!(a.list(Some(AlarmType::Corrupt)), vec![AlarmMember { member_id: 7, alarm: AlarmType::Corrupt }]);
        assert!(a.is_raised(AlarmType::NoSpace));
        assert!(a.remove(AlarmMember { member_id: 7, alarm: AlarmType::NoSpace }));
        assert!(!a.is_raised(AlarmType::NoSpace));
    }
}
