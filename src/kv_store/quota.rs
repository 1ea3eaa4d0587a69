//! Owns the store's alarms and space quota at work (etcd: server/etcdserver/apply.go
//! `applierV3Capped`, `applierV3Corrupt`; quota.go `backendQuota.Available`; v3_server.go
//! `Alarm`): the gate every request passes, raising `NOSPACE` when a write would go over the
//! quota, activating and deactivating alarms, and keeping them in the `meta` keyspace so that
//! they survive a restart.

use super::KvStore;
use crate::alarm::{self, AlarmMember, AlarmType};
use crate::error::{Error, Result};
use crate::request::{PutRequest, TxnRequest};

/// Meta keys of raised alarms: this prefix, the member id (8 bytes, big-endian) and the
/// alarm's wire number (1 byte).
const META_ALARM_PREFIX: &[u8] = b"alarm/";

fn alarm_key(a: AlarmMember) -> Vec<u8> {
    let mut key = META_ALARM_PREFIX.to_vec();
    key.extend_from_slice(&a.member_id.to_be_bytes());
    key.push(u8::try_from(a.alarm.wire()).unwrap_or(0));
    key
}

/// What kind of request passes the gate.
pub(super) enum Gate<'a> {
    /// A compaction: refused only under `CORRUPT`.
    Compact,
    /// A delete or a lease revoke: refused only under `CORRUPT` (they free space).
    Free,
    /// A put.
    Put(&'a PutRequest),
    /// A txn: under `NOSPACE` only one without puts passes.
    Txn(&'a TxnRequest),
    /// A lease grant.
    LeaseGrant,
}

impl KvStore {
    /// Loads the alarms persisted by an earlier run (on open).
    pub(super) fn restore_alarms(&mut self) -> Result<()> {
        for (key, value) in self.backend.meta_with_prefix(META_ALARM_PREFIX)? {
            let member = key.get(META_ALARM_PREFIX.len()..META_ALARM_PREFIX.len() + 8);
            let member_id = member.and_then(|m| m.try_into().ok()).map(u64::from_be_bytes);
            let kind = i32::try_from(value).ok().and_then(AlarmType::from_wire);
            match (member_id, kind) {
                (Some(member_id), Some(alarm)) => {
                    self.alarms.insert(AlarmMember { member_id, alarm });
                }
                _ => {
                    return Err(Error::Corrupt {
                        revision: String::from_utf8_lossy(&key).into_owned(),
                        reason: format!("malformed alarm record (value {value})"),
                    })
                }
            }
        }
        Ok(())
    }

    /// Lets a write through or refuses it, as etcd's capped and corrupt appliers do (reads
    /// are never refused: etcd serves them outside the appliers, alarms or not); a write
    /// that would go over the quota raises `NOSPACE` first (etcd raises it before the request
    /// reaches raft).
    pub(super) fn admit(&mut self, gate: Gate<'_>) -> Result<()> {
        if self.alarms.is_raised(AlarmType::Corrupt) {
            return Err(Error::CorruptAlarm);
        }
        let cost = match gate {
            Gate::Compact | Gate::Free => return Ok(()),
            Gate::Put(p) => alarm::cost_put(p),
            // etcd's capped applier refuses a txn that costs anything: one with a put.
            Gate::Txn(t) => match alarm::cost_txn(t) {
                0 => return Ok(()),
                cost => cost,
            },
            Gate::LeaseGrant => alarm::LEASE_OVERHEAD,
        };
        if self.alarms.is_raised(AlarmType::NoSpace) {
            return Err(Error::NoSpace);
        }
        if self.within_quota(cost) {
            return Ok(());
        }
        let raised = AlarmMember { member_id: self.config.member_id(), alarm: AlarmType::NoSpace };
        tracing::warn!(quota = ?self.config.quota_backend_bytes(), size = self.backend.data_bytes(), "space quota exceeded; raising NOSPACE");
        self.activate_alarm(raised)?;
        Err(Error::NoSpace)
    }

    /// Whether `cost` more bytes stay under the quota (etcd `Available`: size + cost < quota).
    fn within_quota(&self, cost: u64) -> bool {
        self.config.quota_backend_bytes().is_none_or(|quota| self.backend.data_bytes().saturating_add(cost) < quota)
    }

    /// Returns the active alarms, all of them (`None`) or of one kind (etcd `Alarm` GET).
    #[must_use]
    pub fn alarms(&self, kind: Option<AlarmType>) -> Vec<AlarmMember> {
        self.alarms.list(kind)
    }

    /// Raises `alarm` and persists it; returns whether it was new (etcd `Alarm` ACTIVATE).
    ///
    /// # Errors
    /// A storage error (the alarm is then active in memory only).
    pub fn activate_alarm(&mut self, alarm: AlarmMember) -> Result<bool> {
        if !self.alarms.insert(alarm) {
            return Ok(false);
        }
        let mut batch = self.backend.batch();
        batch.put_meta(&alarm_key(alarm), i64::from(alarm.alarm.wire()));
        batch.commit()?;
        self.backend.sync()?;
        Ok(true)
    }

    /// Clears `alarm` and persists that; returns whether it was active (etcd `Alarm`
    /// DEACTIVATE). A `NOSPACE` alarm cleared while the store is still over its quota is raised
    /// again by the next write that adds data, as in etcd.
    ///
    /// # Errors
    /// A storage error.
    pub fn deactivate_alarm(&mut self, alarm: AlarmMember) -> Result<bool> {
        if !self.alarms.contains(alarm) {
            return Ok(false);
        }
        // On disk first: a disarm that fails to persist leaves the alarm raised, rather than
        // clear it until a restart brings it back.
        let mut batch = self.backend.batch();
        batch.delete_meta(&alarm_key(alarm));
        batch.commit()?;
        self.backend.sync()?;
        Ok(self.alarms.remove(alarm))
    }
}
