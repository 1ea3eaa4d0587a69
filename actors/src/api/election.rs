//! Owns the Election service's calls as both transports serve them (etcd:
//! server/etcdserver/api/v3election/election.go over client/v3/concurrency/election.go): a
//! candidate's key is `name/hex(lease)` holding its value; the leader is the key created first
//! under `name/`. `Campaign` waits to lead, `Proclaim` changes the leader's value, `Leader`
//! reads it, `Observe` streams every value the leaders proclaim, `Resign` deletes the key.
//!
//! On a mirror, `Campaign`, `Proclaim` and `Resign` go to upstream's Election service and are
//! answered once the mirror has applied their revision. `Leader` and `Observe` are reads: as
//! etcd's recipe reads the leader with a linearizable `Get`, they first wait for the mirror to
//! reach upstream's current revision (a quorum read, as a linearizable `Range` on a mirror),
//! then read and watch the mirror's own copy, which holds upstream's keys with upstream's
//! revisions: an observer never sees a value the mirror does not hold yet, and upstream carries
//! no stream per observer.

use std::collections::VecDeque;

use futures::Stream;
use watchkv::{EventKind, KeyRange, KeyValue, LeaseId, RangeRequest, RequestOp, TxnRequest};

use super::auth::Caller;
use super::coordination::{self, next_watch_response, revision, Cleanup, Coordination, WaitFailed, WatchNext};
use super::pb::v3electionpb as pb;
use super::ApiError;
use crate::forward::Upstream;
use crate::WatchStream;

/// A leadership (etcd `LeaderKey`): the election, the key that exists while it is held, the
/// key's create revision and its lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leadership {
    /// The election's name.
    pub name: Vec<u8>,
    /// The ownership key (`name/hex(lease)`).
    pub key: Vec<u8>,
    /// The key's create revision.
    pub rev: i64,
    /// The key's lease.
    pub lease: LeaseId,
}

impl From<pb::LeaderKey> for Leadership {
    fn from(l: pb::LeaderKey) -> Self {
        Self { name: l.name, key: l.key, rev: l.rev, lease: l.lease }
    }
}

impl From<Leadership> for pb::LeaderKey {
    fn from(l: Leadership) -> Self {
        Self { name: l.name, key: l.key, rev: l.rev, lease: l.lease }
    }
}

/// A won campaign: the response's revision (that of the campaign's own write, as in etcd) and
/// the leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elected {
    /// The response header's revision.
    pub revision: i64,
    /// The leadership won.
    pub leader: Leadership,
}

/// A leader's proclamation as `Leader` and `Observe` give it: the response's revision and
/// the leader's key-value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proclamation {
    /// The response header's revision.
    pub revision: i64,
    /// The leader's key and value.
    pub kv: KeyValue,
}

impl Coordination {
    /// etcd's `Campaign` (v3election/election.go `Campaign`, election.go `Campaign`): puts the
    /// caller's key with the value unless it exists (a second campaign with the same lease
    /// proclaims the new value instead), then waits for every key created before it to go.
    /// Dropping the future while it waits resigns, as etcd does when the request is cancelled.
    ///
    /// # Errors
    /// A lease that does not exist (`etcdserver: requested lease not found`), the caller's key
    /// deleted while it waited (`election: not leader`; etcd would wait on and then answer as
    /// if elected), or a store error; all with code `Unknown`, as etcd's server relays them.
    /// On a mirror, upstream's error with its code and text.
    pub async fn campaign(&self, req: pb::CampaignRequest) -> Result<Elected, ApiError> {
        if let Some(upstream) = &self.upstream {
            let resp = upstream.campaign(req).await?;
            let leader = resp.leader.map(Leadership::from).unwrap_or_default();
            return Ok(Elected { revision: revision(resp.header.as_ref()), leader });
        }
        let lease = self.session_lease(req.lease).await?;
        let mut prefix = req.name.clone();
        prefix.push(b'/');
        let key = coordination::own_key(&prefix, lease);
        let put = TxnRequest {
            compare: vec![coordination::created_at(&key, 0)],
            success: vec![coordination::put(&key, req.value.clone(), lease)],
            failure: vec![RequestOp::Range(RangeRequest::new(KeyRange::single(key.clone())))],
        };
        let resp = self.txn(put).await?;
        let mut leader = Leadership { name: req.name, key, rev: resp.revision, lease };
        if !resp.succeeded {
            if let Some(kv) = coordination::range_kvs(&resp, 0).first() {
                leader.rev = kv.create_revision;
                if kv.value != req.value {
                    if let Err(e) = self.proclaim_as(&leader, req.value).await {
                        let _ = self.txn(resign(&leader)).await;
                        return Err(e);
                    }
                }
            }
        }
        let cleanup = Cleanup::new(&self.handle, resign(&leader));
        let waited = self.wait_deletes(&prefix, leader.rev - 1, &leader.key).await;
        // etcd resigns only when the request was cancelled; after an error the key stays.
        let _ = cleanup.disarm();
        match waited {
            Ok(_) => Ok(Elected { revision: resp.revision, leader }),
            Err(WaitFailed::OwnKeyLost) => Err(ApiError::ElectionNotLeader),
            Err(WaitFailed::Error(e)) => Err(e),
        }
    }

    /// etcd's `Proclaim`: puts the value under the leader key if it still exists with its
    /// create revision; returns the revision of the put.
    ///
    /// # Errors
    /// No leader key (`"leader" field must be provided`), a leadership that is gone
    /// (`election: not leader`), or a store error; on a mirror, upstream's.
    pub async fn proclaim(&self, req: pb::ProclaimRequest) -> Result<i64, ApiError> {
        if let Some(upstream) = &self.upstream {
            return Ok(revision(upstream.proclaim(req).await?.header.as_ref()));
        }
        let mut leader = Leadership::from(req.leader.ok_or(ApiError::MissingLeaderKey)?);
        leader.lease = self.session_lease(leader.lease).await?;
        self.proclaim_as(&leader, req.value).await
    }

    /// etcd: election.go `Proclaim`.
    async fn proclaim_as(&self, leader: &Leadership, value: Vec<u8>) -> Result<i64, ApiError> {
        let txn = TxnRequest {
            compare: vec![coordination::created_at(&leader.key, leader.rev)],
            success: vec![coordination::put(&leader.key, value, leader.lease)],
            failure: Vec::new(),
        };
        let resp = self.txn(txn).await?;
        if !resp.succeeded {
            return Err(ApiError::ElectionNotLeader);
        }
        Ok(resp.revision)
    }

    /// etcd's `Leader`: the key created first under `name/`.
    ///
    /// # Errors
    /// No candidate (`election: no leader`), or a store error; on a mirror also the quorum
    /// read's error, or etcd's timeout when the mirror does not catch up.
    pub async fn leader(&self, req: pb::LeaderRequest) -> Result<Proclamation, ApiError> {
        if let Some(upstream) = &self.upstream {
            upstream.linearize().await?;
        }
        let resp = self.range(coordination::first_create(&election_prefix(req.name))).await?;
        let kv = resp.kvs.into_iter().next().ok_or(ApiError::ElectionNoLeader)?;
        Ok(Proclamation { revision: resp.revision, kv })
    }

    /// etcd's `Resign`: deletes the leader key if it still exists with its create revision
    /// (nothing happens otherwise); returns the revision after it.
    ///
    /// # Errors
    /// No leader key (`"leader" field must be provided`), or a store error; on a mirror,
    /// upstream's.
    pub async fn resign(&self, req: pb::ResignRequest) -> Result<i64, ApiError> {
        if let Some(upstream) = &self.upstream {
            return Ok(revision(upstream.resign(req).await?.header.as_ref()));
        }
        let mut leader = Leadership::from(req.leader.ok_or(ApiError::MissingLeaderKey)?);
        // etcd opens a session with the leader's lease here too, granting one for lease 0.
        leader.lease = self.session_lease(leader.lease).await?;
        Ok(self.txn(resign(&leader)).await?.revision)
    }

    /// etcd's `Observe` (election.go `observe`): the current leader's key-value (or, with no
    /// candidate, the first one put), then every later put to that key, and when the key is
    /// deleted the next leader the same way. The stream ends when a read or watch fails (etcd
    /// closes it without an error); dropping it ends its watches. On a mirror the first read
    /// waits for upstream's current revision; the stream ends if that fails.
    pub fn observe(&self, req: pb::LeaderRequest) -> impl Stream<Item = Proclamation> + Send + 'static {
        let observer = Observer {
            coordination: self.clone(),
            prefix: election_prefix(req.name),
            state: ObserveState::Find,
            linearize: self.upstream.clone(),
        };
        futures::stream::unfold(observer, |mut o| async move { o.next().await.map(|p| (p, o)) })
    }
}

/// The permissions `Proclaim` needs, as etcd checks them inside its recipe's txn: read and
/// write on the leader key, and write on every key of the leader's lease, which the put attaches
/// the key to (etcd: apply_auth.go `checkLeasePuts`).
///
/// # Errors
/// `permission denied`, `user name is empty`; on a mirror, upstream's error.
pub async fn check_proclaim(
    handle: &crate::Handle,
    upstream: Option<&Upstream>,
    caller: &Caller,
    leader: &pb::LeaderKey,
) -> Result<(), ApiError> {
    handle.auth().check_leader_key(caller, &leader.key)?;
    super::auth::check_lease_attach(handle, upstream, caller, leader.lease).await
}

/// `name/`.
fn election_prefix(mut name: Vec<u8>) -> Vec<u8> {
    name.push(b'/');
    name
}

/// etcd: election.go `Resign`.
fn resign(leader: &Leadership) -> TxnRequest {
    TxnRequest {
        compare: vec![coordination::created_at(&leader.key, leader.rev)],
        success: vec![coordination::delete(&leader.key)],
        failure: Vec::new(),
    }
}

/// An `Observe` stream's state.
struct Observer {
    coordination: Coordination,
    prefix: Vec<u8>,
    state: ObserveState,
    /// On a mirror, until the first read: the upstream to linearize that read with.
    linearize: Option<Upstream>,
}

enum ObserveState {
    /// Reading (or waiting for) the current leader.
    Find,
    /// Following the leader key: the proclamations read but not yet given, and whether the key
    /// was deleted after them.
    Follow { watch: WatchStream, queued: VecDeque<Proclamation>, deleted: bool },
    /// The stream has ended.
    Done,
}

impl Observer {
    async fn next(&mut self) -> Option<Proclamation> {
        loop {
            match &mut self.state {
                ObserveState::Done => return None,
                ObserveState::Find => {
                    let Some(found) = self.find().await else {
                        self.state = ObserveState::Done;
                        return None;
                    };
                    let watch = self.coordination.watch(&KeyRange::single(found.kv.key.clone()), found.revision + 1);
                    self.state = ObserveState::Follow { watch, queued: VecDeque::new(), deleted: false };
                    return Some(found);
                }
                ObserveState::Follow { watch, queued, deleted } => {
                    if let Some(p) = queued.pop_front() {
                        return Some(p);
                    }
                    if *deleted {
                        self.state = ObserveState::Find;
                        continue;
                    }
                    let WatchNext::Events(resp) = next_watch_response(watch).await else {
                        self.state = ObserveState::Done;
                        return None;
                    };
                    for event in &resp.events {
                        if event.kind == EventKind::Delete {
                            *deleted = true;
                            break;
                        }
                        queued.push_back(Proclamation { revision: resp.revision, kv: event.kv.clone() });
                    }
                }
            }
        }
    }

    /// The current leader; with none, the first key put under the prefix from the read's
    /// revision on (only puts: a delete would make the observer spin, as etcd notes).
    async fn find(&mut self) -> Option<Proclamation> {
        // Only the first read: the watches then follow the mirror's revisions without a gap,
        // and a quorum read per observer at each change of leader would load upstream.
        if let Some(upstream) = self.linearize.take() {
            if let Err(e) = upstream.linearize().await {
                // etcd's observe closes the stream when its read fails.
                tracing::debug!(error = %e, "observe on a mirror: the linearizing read failed");
                return None;
            }
        }
        let resp = self.coordination.range(coordination::first_create(&self.prefix)).await.ok()?;
        if let Some(kv) = resp.kvs.into_iter().next() {
            return Some(Proclamation { revision: resp.revision, kv });
        }
        let mut watch = self.coordination.watch(&KeyRange::prefix(self.prefix.clone()), resp.revision);
        loop {
            let WatchNext::Events(resp) = next_watch_response(&mut watch).await else { return None };
            if let Some(put) = resp.events.iter().find(|e| e.kind == EventKind::Put) {
                // The header names the put's own revision, in case the response holds several.
                return Some(Proclamation { revision: put.kv.mod_revision, kv: put.kv.clone() });
            }
        }
    }
}
