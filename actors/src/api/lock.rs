//! Owns the Lock service's calls as both transports serve them (etcd:
//! server/etcdserver/api/v3lock/lock.go over client/v3/concurrency/mutex.go): `Lock` puts the
//! caller's key `name/hex(lease)` with its lease and holds the lock once no key under `name/`
//! was created before it; `Unlock` deletes the key. On a mirror both go to upstream's Lock
//! service.

use watchkv::{RequestOp, TxnRequest};

use super::coordination::{self, revision, Cleanup, Coordination, WaitFailed};
use super::pb::v3lockpb as pb;
use super::ApiError;

/// A held lock: the key that exists while it is held, and the revision of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    /// The response header's revision.
    pub revision: i64,
    /// The ownership key (`name/hex(lease)`).
    pub key: Vec<u8>,
}

impl Coordination {
    /// etcd's `Lock` (v3lock/lock.go `Lock`, mutex.go `Lock`): one txn puts the caller's key
    /// unless it exists (the same lease locking twice is one acquisition) and reads the first
    /// key created under the prefix; if that is not the caller's, waits for every key created
    /// before it to go. Dropping the future while it waits deletes the key, as etcd does when
    /// the request is cancelled. On a mirror, upstream locks, and the answer comes once the
    /// mirror has applied its revision.
    ///
    /// # Errors
    /// A lease that does not exist (`etcdserver: requested lease not found`), the caller's key
    /// deleted while it waited (`mutex: session is expired`; etcd notices only once the earlier
    /// keys are gone), or a store error; all with code `Unknown`, as etcd's server relays them.
    /// On a mirror, upstream's error with its code and text.
    pub async fn lock(&self, req: pb::LockRequest) -> Result<Locked, ApiError> {
        if let Some(upstream) = &self.upstream {
            let resp = upstream.lock(req).await?;
            return Ok(Locked { revision: revision(resp.header.as_ref()), key: resp.key });
        }
        let lease = self.session_lease(req.lease).await?;
        let mut prefix = req.name;
        prefix.push(b'/');
        let key = coordination::own_key(&prefix, lease);
        // etcd: mutex.go `tryAcquire`.
        let acquire = TxnRequest {
            compare: vec![coordination::created_at(&key, 0)],
            success: vec![
                coordination::put(&key, Vec::new(), lease),
                RequestOp::Range(coordination::first_create(&prefix)),
            ],
            failure: vec![
                RequestOp::Range(watchkv::RangeRequest::new(watchkv::KeyRange::single(key.clone()))),
                RequestOp::Range(coordination::first_create(&prefix)),
            ],
        };
        let resp = self.txn(acquire).await?;
        let my_rev = if resp.succeeded {
            resp.revision
        } else {
            coordination::range_kvs(&resp, 0).first().map_or(resp.revision, |kv| kv.create_revision)
        };
        let owner = coordination::range_kvs(&resp, 1).first().map(|kv| kv.create_revision);
        if owner.is_none_or(|rev| rev == my_rev) {
            return Ok(Locked { revision: resp.revision, key });
        }
        let unlock = TxnRequest { compare: Vec::new(), success: vec![coordination::delete(&key)], failure: Vec::new() };
        let cleanup = Cleanup::new(&self.handle, unlock);
        let waited = self.wait_deletes(&prefix, my_rev - 1, &key).await;
        let unlock = cleanup.disarm();
        match waited {
            Ok(revision) => Ok(Locked { revision, key }),
            Err(WaitFailed::OwnKeyLost) => Err(ApiError::SessionExpired),
            Err(WaitFailed::Error(e)) => {
                // etcd: mutex.go `Lock` releases the key when the wait fails.
                if let Some(unlock) = unlock {
                    let _ = self.handle.txn(unlock).await;
                }
                Err(e)
            }
        }
    }

    /// etcd's `Unlock` (v3lock/lock.go `Unlock`): deletes the key; returns the revision after
    /// it (the current one when there was no such key).
    ///
    /// # Errors
    /// A store error, with code `Unknown` as etcd relays it; on a mirror, upstream's.
    pub async fn unlock(&self, req: pb::UnlockRequest) -> Result<i64, ApiError> {
        if let Some(upstream) = &self.upstream {
            return Ok(revision(upstream.unlock(req).await?.header.as_ref()));
        }
        let resp = self
            .handle
            .delete_range(watchkv::DeleteRangeRequest::new(watchkv::KeyRange::single(req.key)))
            .await
            .map_err(ApiError::relayed)?;
        Ok(resp.revision)
    }
}
