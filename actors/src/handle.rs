//! Owns [`Handle`], the typed async API over the running actors that every transport and
//! embedder uses (one message per client operation, each with its own reply), and
//! [`WatchStream`], a watch stream read as a `futures::Stream`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use actix::prelude::*;
use futures::Stream;
use watchkv::watch::response::WatchResponse;
use watchkv::watch::watcher::WatchId;
use watchkv::{
    DeleteRangeRequest, DeleteRangeResponse, Error, ImportedSnapshot, KeyValue, LeaseId, LeaseRevokeRequest,
    LeaseStatus, PutRequest, PutResponse, RangeRequest, RangeResponse, Result, TxnRequest, TxnResponse,
    UpstreamRevision, Write,
};

use crate::api::auth::AuthStamp;
use crate::config::ActorsConfig;
use crate::mirror_status::UpstreamStatus;
use crate::protocol::{
    Alarm, AuthChange, CancelWatch, CheckHealth, CloseStream, Compact, CreateWatch, DbSize, Defragment, GetStoreStats,
    GetSyncerStats, GetVictimStats, Health, LeaseGrant, LeaseKeepAlive, LeaseLeases, LeaseTimeToLive, PlanHashKv,
    Range, ReadTxn, RequestStreamProgress, Shutdown, SnapshotWholeStore, StoreStats, SubmitWrite, SubmitWrites,
    SyncerStats, TakeSnapshot, VictimStats, WatchCreate,
};
use crate::reply_route::Reply;
use crate::response_queue::{response_queue, QueueReceiver};
use crate::sink::WatchSink;
use crate::store::{ReimportUpstream, StoreActor};
use crate::stream_actor::{BufferedResponses, StreamActor};
use crate::syncer_actor::SyncerActor;
use crate::system::{stopped, Runtime};
use crate::victim_actor::VictimActor;

/// Responses buffered between a [`WatchStream`]'s actor and its reader.
const WATCH_STREAM_BUFFER: usize = 16;

/// State of every actor at one moment (each answered in turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SystemStats {
    /// The store actor.
    pub store: StoreStats,
    /// The syncer.
    pub syncer: SyncerStats,
    /// The victim actor.
    pub victims: VictimStats,
    /// Events delivered to stream mailboxes.
    pub events_sent: u64,
    /// Responses delivered to stream mailboxes.
    pub responses_sent: u64,
    /// Watchers cancelled by the slow-consumer policy.
    pub slow_cancels: u64,
    /// Write batches committed.
    pub write_batches: u64,
    /// Total time spent committing write batches, in microseconds.
    pub write_micros: u64,
}

struct Inner {
    runtime: Runtime,
    config: Arc<ActorsConfig>,
    next_stream: AtomicU64,
    seq: Arc<AtomicU64>,
    /// The store's, the syncer's and the victim actor's threads, taken on shutdown.
    arbiters: Mutex<Vec<Arbiter>>,
    /// The revision [`Handle::apply_upstream`] reached last (mirror mode only): what a
    /// forwarded write or a linearizable read waits on ([`Handle::wait_for_revision`]).
    applied: tokio::sync::watch::Sender<i64>,
    /// What the mirror's follower records about its upstream watch (mirror mode only).
    upstream: Option<Arc<UpstreamStatus>>,
}

/// The running store. Cloning is shallow.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("current_revision", &self.current_revision()).finish_non_exhaustive()
    }
}

impl Handle {
    /// Wraps a started runtime and the threads its actors run on.
    pub(crate) fn new(config: Arc<ActorsConfig>, runtime: Runtime, arbiters: Vec<Arbiter>) -> Self {
        let upstream = config.is_mirror().then(Arc::default);
        Self {
            inner: Arc::new(Inner {
                config,
                next_stream: AtomicU64::new(1),
                seq: Arc::new(AtomicU64::new(1)),
                applied: tokio::sync::watch::Sender::new(runtime.clock.current()),
                upstream,
                runtime,
                arbiters: Mutex::new(arbiters),
            }),
        }
    }

    /// Returns the configuration.
    #[must_use]
    pub fn config(&self) -> &ActorsConfig {
        &self.inner.config
    }

    /// Returns the last durable revision.
    #[must_use]
    pub fn current_revision(&self) -> i64 {
        self.inner.runtime.clock.current()
    }

    /// Returns what the follower records about the upstream watch (`crate::mirror_status`),
    /// `None` unless the store is a mirror.
    #[must_use]
    pub fn upstream_status(&self) -> Option<&Arc<UpstreamStatus>> {
        self.inner.upstream.as_ref()
    }

    /// The `Maintenance.Status` error line of a mirror whose upstream watch is down
    /// ([`crate::mirror_status::UpstreamReport::status_error`]); `None` otherwise.
    #[must_use]
    pub fn upstream_error(&self) -> Option<String> {
        self.upstream_status()?.report(self.upstream_applied()).status_error()
    }

    /// Returns the compact revision.
    #[must_use]
    pub fn compact_revision(&self) -> i64 {
        self.inner.runtime.clock.compact()
    }

    /// Returns the store actor's address (for tests that send ticks by hand).
    #[must_use]
    pub fn store_addr(&self) -> &Addr<StoreActor> {
        &self.inner.runtime.store
    }

    /// Returns the syncer's address.
    #[must_use]
    pub fn syncer_addr(&self) -> &Addr<SyncerActor> {
        &self.inner.runtime.syncer
    }

    /// Returns the victim actor's address.
    #[must_use]
    pub fn victim_addr(&self) -> &Addr<VictimActor> {
        &self.inner.runtime.victims
    }

    /// Submits one client write to the store's group commit and waits for its own answer; a
    /// mirror refuses it (its writes come from upstream only).
    async fn write<W: Write>(&self, request: W) -> Result<W::Response> {
        self.write_checked(request, None).await
    }

    /// A write whose permissions were checked against the auth store at `auth`: refused with
    /// `etcdserver: revision of auth store is old` if the auth store has changed by the time
    /// the write is applied (a permission revoked meanwhile, a user deleted), as etcd refuses
    /// it; the client retries it. Transports pass the stamp they took before their check.
    async fn write_checked<W: Write>(&self, request: W, auth: Option<AuthStamp>) -> Result<W::Response> {
        if self.inner.config.is_mirror() {
            return Err(Error::MirrorWrite);
        }
        self.submit(request, auth).await?.await.unwrap_or(Err(Error::Stopped))
    }

    /// [`Self::put`] for a client whose permissions were checked at `auth`
    /// (`Auth::stamp`, taken before the check): refused if the auth store changed since.
    ///
    /// # Errors
    /// As [`Self::put`], or `etcdserver: revision of auth store is old`.
    pub async fn put_checked(&self, req: PutRequest, auth: AuthStamp) -> Result<PutResponse> {
        self.write_checked(req, Some(auth)).await
    }

    /// [`Self::delete_range`] for a client whose permissions were checked at `auth`.
    ///
    /// # Errors
    /// As [`Self::delete_range`], or `etcdserver: revision of auth store is old`.
    pub async fn delete_range_checked(&self, req: DeleteRangeRequest, auth: AuthStamp) -> Result<DeleteRangeResponse> {
        self.write_checked(req, Some(auth)).await
    }

    /// [`Self::txn`] for a client whose permissions were checked at `auth`; a txn that only
    /// reads is a read, as there.
    ///
    /// # Errors
    /// As [`Self::txn`], or `etcdserver: revision of auth store is old`.
    pub async fn txn_checked(&self, req: TxnRequest, auth: AuthStamp) -> Result<TxnResponse> {
        if !req.writes() {
            return self.txn(req).await;
        }
        self.write_checked(req, Some(auth)).await
    }

    /// Queues one write in the store's group commit; returns where its answer will come.
    async fn submit<W: Write>(
        &self,
        request: W,
        auth: Option<AuthStamp>,
    ) -> Result<futures::channel::oneshot::Receiver<Result<W::Response>>> {
        // The answer comes from the store's turn to this thread (see `SubmitWrite`). On a
        // client-port thread the write joins the thread's outbox, sent once the handlers already
        // queued there have added theirs (`crate::outbox`); elsewhere it goes alone. A full
        // store mailbox does not hold it back for long (actix 0.13 lets a fresh address clone
        // past the bound): the writers waiting for their answers are what bound the queue.
        let (reply, answer) = Reply::channel();
        let store = &self.inner.runtime.store;
        let Some(write) = crate::outbox::queue(store, crate::store::queued(SubmitWrite { request, reply, auth }))
        else {
            return Ok(answer);
        };
        match store.try_send(SubmitWrites(vec![write])) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => store.send(msg).await.map_err(stopped)?,
            Err(SendError::Closed(_)) => return Err(Error::Stopped),
        }
        Ok(answer)
    }

    /// Applies upstream revisions in order (mirror mode, `crate::mirror`), each one write of the
    /// store's group commit with upstream's revision number; every revision is queued before
    /// the first answer is awaited, so several can share one persist. Their events reach the
    /// mirror's watchers as a local write's do. Returns the last revision applied.
    ///
    /// # Errors
    /// The first revision's failure ([`watchkv::KvStore::apply_upstream`]), or `Stopped`; the
    /// revisions queued after a refused one are refused too (each names the one before it as
    /// `after`, which the store never reached).
    pub async fn apply_upstream(&self, revisions: Vec<UpstreamRevision>) -> Result<i64> {
        let mut answers = Vec::with_capacity(revisions.len());
        for revision in revisions {
            answers.push(self.submit(revision, None).await?);
        }
        let mut applied = self.current_revision();
        for answer in answers {
            applied = answer.await.unwrap_or(Err(Error::Stopped))?;
            self.confirm_upstream(applied);
        }
        Ok(applied)
    }

    /// Replaces the store's whole state with upstream's key-values at `revision` (mirror mode:
    /// the re-bootstrap after upstream compacted what the mirror needed next; see
    /// `store/reimport.rs`). Watchers that needed a revision up to `revision` get a compaction
    /// notice.
    ///
    /// # Errors
    /// As [`watchkv::KvStore::begin_reimport`], or `Stopped`.
    pub async fn reimport_upstream(&self, revision: i64, kvs: Vec<KeyValue>) -> Result<ImportedSnapshot> {
        let imported = self.inner.runtime.store.send(ReimportUpstream { revision, kvs }).await.map_err(stopped)??;
        self.confirm_upstream(imported.revision);
        Ok(imported)
    }

    /// The upstream revision a mirror holds everything up to: the last revision it applied, or
    /// a later one its follower saw pass with nothing under its prefix ([`Self::confirm_upstream`]).
    /// The store's current revision on a server that is not a mirror.
    #[must_use]
    pub fn upstream_applied(&self) -> i64 {
        (*self.inner.applied.borrow()).max(self.current_revision())
    }

    /// Records that the mirror holds everything upstream had up to `revision` although its
    /// store did not move (a prefix mirror: upstream revisions outside the prefix); wakes
    /// [`Self::wait_for_revision`]. Never moves backwards.
    pub fn confirm_upstream(&self, revision: i64) {
        self.inner.applied.send_if_modified(|applied| {
            let moved = revision > *applied;
            if moved {
                *applied = revision;
            }
            moved
        });
    }

    /// Waits until the store holds `revision` (mirror mode: until the follower has applied it)
    /// or `deadline` has passed; returns whether it does. Woken by [`Handle::apply_upstream`],
    /// so a mirror's forwarded write waits without polling.
    pub async fn wait_for_revision(&self, revision: i64, deadline: std::time::Duration) -> bool {
        let mut applied = self.inner.applied.subscribe();
        if self.current_revision() >= revision {
            return true;
        }
        let reached = tokio::time::timeout(deadline, applied.wait_for(|&r| r >= revision)).await;
        matches!(reached, Ok(Ok(_))) || self.upstream_applied() >= revision
    }

    /// Writes a key (etcd `Put`).
    ///
    /// # Errors
    /// As [`watchkv::KvStore::put`], or `Stopped`.
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.write(req).await
    }

    /// Deletes a range (etcd `DeleteRange`).
    ///
    /// # Errors
    /// As [`watchkv::KvStore::delete_range`], or `Stopped`.
    pub async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.write(req).await
    }

    /// Runs a transaction (etcd `Txn`).
    ///
    /// # Errors
    /// As [`watchkv::KvStore::txn`], or `Stopped`.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        if !req.writes() {
            // A read-only txn is a read: served beside the group commit, by a mirror too.
            return self.inner.runtime.store.send(ReadTxn(req)).await.map_err(stopped)?;
        }
        self.write(req).await
    }

    /// Reads a range (etcd `Range`).
    ///
    /// # Errors
    /// As [`watchkv::KvStore::range`], or `Stopped`.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.inner.runtime.store.send(Range(req)).await.map_err(stopped)?
    }

    /// Compacts at `revision`; with `physical`, returns once the rows are gone. Returns the
    /// current revision.
    ///
    /// # Errors
    /// As [`watchkv::KvStore::compact`], or `Stopped`.
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<i64> {
        self.inner.runtime.store.send(Compact { revision, physical }).await.map_err(stopped)?
    }

    /// Grants a lease (`id` 0: the store picks). Returns id, TTL and the current revision.
    ///
    /// # Errors
    /// As [`watchkv::KvStore::lease_grant`], or `Stopped`.
    pub async fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<(LeaseId, i64, i64)> {
        if self.inner.config.is_mirror() {
            return Err(Error::MirrorWrite);
        }
        self.inner.runtime.store.send(LeaseGrant { id, ttl }).await.map_err(stopped)?
    }

    /// Revokes a lease, deleting its keys; returns the revision after it. A revoke is a write:
    /// it joins the group commit like any other.
    ///
    /// # Errors
    /// `LeaseNotFound`, or `Stopped`.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<i64> {
        self.write(LeaseRevokeRequest(id)).await
    }

    /// Renews a lease once; returns its TTL and the current revision.
    ///
    /// # Errors
    /// `LeaseNotFound`, or `Stopped`.
    pub async fn lease_keep_alive(&self, id: LeaseId) -> Result<(i64, i64)> {
        self.inner.runtime.store.send(LeaseKeepAlive(id)).await.map_err(stopped)?
    }

    /// Returns a lease's remaining TTL (and keys) and the current revision.
    ///
    /// # Errors
    /// `LeaseNotFound`, or `Stopped`.
    pub async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<(LeaseStatus, i64)> {
        self.inner.runtime.store.send(LeaseTimeToLive { id, keys }).await.map_err(stopped)?
    }

    /// etcd's `LeaseKeepAlive` answer, as every transport gives it: the TTL and the current
    /// revision, with TTL 0 for an unknown lease instead of an error (etcd's v3rpc layer).
    ///
    /// # Errors
    /// `Stopped`, or a storage error.
    pub async fn lease_keep_alive_answer(&self, id: LeaseId) -> Result<(i64, i64)> {
        match self.lease_keep_alive(id).await {
            Err(Error::LeaseNotFound) => Ok((0, self.current_revision())),
            other => other,
        }
    }

    /// etcd's `LeaseTimeToLive` answer, as every transport gives it: an unknown lease is TTL
    /// -1 with no keys rather than an error (`etcdctl` prints "already expired").
    ///
    /// # Errors
    /// `Stopped`, or a storage error.
    pub async fn lease_time_to_live_answer(&self, id: LeaseId, keys: bool) -> Result<(LeaseStatus, i64)> {
        match self.lease_time_to_live(id, keys).await {
            Err(Error::LeaseNotFound) => {
                Ok((LeaseStatus { id, ttl: -1, granted_ttl: 0, keys: Vec::new() }, self.current_revision()))
            }
            other => other,
        }
    }

    /// Returns every lease id and the current revision.
    ///
    /// # Errors
    /// `Stopped`.
    pub async fn leases(&self) -> Result<(Vec<LeaseId>, i64)> {
        self.inner.runtime.store.send(LeaseLeases).await.map_err(stopped)?
    }

    /// Opens a watch stream whose responses go to `sink`; the transport sends it
    /// [`CreateWatch`], [`CancelWatch`], [`RequestStreamProgress`] and finally [`CloseStream`].
    /// The actor lives on the caller's arbiter.
    #[must_use]
    pub fn open_stream(&self, sink: Arc<dyn WatchSink>) -> Addr<StreamActor> {
        self.new_stream_actor(sink).start()
    }

    /// Opens a watch stream like [`Handle::open_stream`], with its actor on `arbiter`: for
    /// transports whose tasks run outside an actix arbiter (tonic spawns its connections with
    /// `tokio::spawn`).
    #[must_use]
    pub fn open_stream_on(&self, arbiter: &ArbiterHandle, sink: Arc<dyn WatchSink>) -> Addr<StreamActor> {
        let actor = self.new_stream_actor(sink);
        StreamActor::start_in_arbiter(arbiter, move |_| actor)
    }

    fn new_stream_actor(&self, sink: Arc<dyn WatchSink>) -> StreamActor {
        let id = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        StreamActor::new(
            id,
            Arc::clone(&self.inner.runtime.stream_peers),
            sink,
            Arc::clone(&self.inner.config),
            Arc::clone(&self.inner.runtime.clock),
            Arc::clone(&self.inner.seq),
        )
    }

    /// Opens a watch stream read as a [`futures::Stream`] of responses. Dropping it closes the
    /// stream and cancels its watchers.
    #[must_use]
    pub fn watch_stream(&self) -> WatchStream {
        self.watch_stream_with(WATCH_STREAM_BUFFER, None)
    }

    /// Opens a watch stream like [`Handle::watch_stream`], with `buffer` responses between its
    /// actor and the reader, and the actor on `arbiter` (`None`: the caller's arbiter). The
    /// transports use it: tonic spawns its connections with `tokio::spawn`, outside any arbiter.
    #[must_use]
    pub fn watch_stream_with(&self, buffer: usize, arbiter: Option<&ArbiterHandle>) -> WatchStream {
        let (tx, rx) = response_queue(buffer);
        let actor = self.new_stream_actor(Arc::new(tx));
        let buffered = actor.buffered_gauge();
        let stream = match arbiter {
            Some(arbiter) => StreamActor::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        };
        WatchStream { rx, stream, buffered }
    }

    /// Opens a stream with one watcher: the first item is its `created` response.
    #[must_use]
    pub fn watch(&self, create: WatchCreate) -> WatchStream {
        let stream = self.watch_stream();
        stream.create(create);
        stream
    }

    /// Returns the bytes the store occupies on disk.
    ///
    /// # Errors
    /// `Stopped`, or an I/O error.
    pub async fn db_size(&self) -> Result<u64> {
        self.inner.runtime.store.send(DbSize).await.map_err(stopped)?
    }

    /// Changes each time the store lets go of its database to reopen it after a storage
    /// failure; a long task holding a view of the database (a snapshot stream) ends when it
    /// does, so that the store can reopen.
    #[must_use]
    pub fn storage_releases(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.runtime.storage_releases.subscribe()
    }

    /// Turns true when [`Handle::shutdown`] starts: the client port then asks each gRPC
    /// connection to go (HTTP/2 GOAWAY) while the calls in flight finish, as etcd's
    /// `GracefulStop` does, instead of cutting them when the process ends.
    #[must_use]
    pub fn shutting_down(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.runtime.shutting_down.subscribe()
    }

    /// Computes `HashKV` up to `revision` (0 = the current one) as etcd does. The store only
    /// takes a snapshot and the compaction keep set; the scan runs on a blocking thread, so
    /// writes and watchers go on meanwhile.
    ///
    /// # Errors
    /// `Compacted`, `FutureRev`, `Stopped`, or a storage error.
    pub async fn hash_kv(&self, revision: i64) -> Result<watchkv::hash::KvHash> {
        let plan = self.inner.runtime.store.send(PlanHashKv(revision)).await.map_err(stopped)??;
        actix_rt::task::spawn_blocking(move || plan.run()).await.map_err(|_| Error::Stopped)?
    }

    /// Computes the whole-store hash (`Maintenance.Hash`) and returns it with the revision of
    /// the snapshot it covers; like [`Self::hash_kv`], the scan runs off the store's thread.
    ///
    /// # Errors
    /// `Stopped`, or a storage error.
    pub async fn hash(&self) -> Result<(u32, i64)> {
        let (snapshot, revision) = self.inner.runtime.store.send(SnapshotWholeStore).await.map_err(stopped)??;
        let hash = actix_rt::task::spawn_blocking(move || snapshot.hash()).await.map_err(|_| Error::Stopped)??;
        Ok((hash, revision))
    }

    /// Authentication and permission checks (the transports' shared `Auth`).
    #[must_use]
    pub fn auth(&self) -> &Arc<crate::api::auth::Auth> {
        &self.inner.runtime.auth
    }

    /// Changes the auth store (passwords already hashed: `Auth::hash_password`). Ends the
    /// tokens a change makes invalid: a deleted user's, one whose password changed, all of them
    /// when auth is disabled.
    ///
    /// # Errors
    /// etcd's auth error for the request, `Stopped`, or a storage error.
    pub async fn auth_change(&self, op: watchkv::auth::AuthOp) -> Result<()> {
        use watchkv::auth::AuthOp;
        let invalidates = match &op {
            AuthOp::UserDelete(name) | AuthOp::UserChangePassword { name, .. } => Some(Some(name.clone())),
            AuthOp::Disable => Some(None),
            _ => None,
        };
        self.inner.runtime.store.send(AuthChange(op)).await.map_err(stopped)??;
        if let Some(user) = invalidates {
            self.auth().invalidate(user.as_deref());
        }
        Ok(())
    }

    /// Lists, raises or clears alarms (etcd `Maintenance.Alarm`).
    ///
    /// # Errors
    /// `Stopped`, or a storage error persisting the change.
    pub async fn alarm(&self, request: Alarm) -> Result<Vec<watchkv::alarm::AlarmMember>> {
        self.inner.runtime.store.send(request).await.map_err(stopped)?
    }

    /// What `/health` reports: active alarms, a poisoned or stopped store.
    pub async fn health(&self) -> Health {
        self.inner.runtime.store.send(CheckHealth).await.unwrap_or(Health {
            alarms: Vec::new(),
            poisoned: false,
            stopped: true,
        })
    }

    /// Defragments the store (etcd `Maintenance.Defragment`): flushes and compacts fjall's
    /// tables on a blocking thread; writes, reads and watchers go on meanwhile (see
    /// `watchkv::backend::Backend::defragment`). Returns the store's size afterwards.
    ///
    /// # Errors
    /// `Stopped`, or a storage error.
    pub async fn defragment(&self) -> Result<u64> {
        let backend = self.inner.runtime.store.send(Defragment).await.map_err(stopped)??;
        actix_rt::task::spawn_blocking(move || {
            backend.defragment()?;
            Ok(backend.data_bytes())
        })
        .await
        .map_err(|_| Error::Stopped)?
    }

    /// Takes a point-in-time snapshot of the whole store (every acknowledged write, at the
    /// current revision); encode it on another thread: the store goes on meanwhile.
    ///
    /// # Errors
    /// `Stopped`, or `Poisoned` after a storage failure.
    pub async fn snapshot(&self) -> Result<watchkv::StoreSnapshot> {
        self.inner.runtime.store.send(TakeSnapshot).await.map_err(stopped)?
    }

    /// Returns every actor's state.
    ///
    /// # Errors
    /// `Stopped`.
    pub async fn stats(&self) -> Result<SystemStats> {
        let store = self.inner.runtime.store.send(GetStoreStats).await.map_err(stopped)?;
        let syncer = self.inner.runtime.syncer.send(GetSyncerStats).await.map_err(stopped)?;
        let victims = self.inner.runtime.victims.send(GetVictimStats).await.map_err(stopped)?;
        let c = &self.inner.runtime.counters;
        Ok(SystemStats {
            store,
            syncer,
            victims,
            events_sent: c.events_sent.load(Ordering::Relaxed),
            responses_sent: c.responses_sent.load(Ordering::Relaxed),
            slow_cancels: c.slow_cancels.load(Ordering::Relaxed),
            write_batches: c.write_batches.load(Ordering::Relaxed),
            write_micros: c.write_micros.load(Ordering::Relaxed),
        })
    }

    /// Finishes in-flight writes, syncs the store to disk, closes it, stops the actors' threads
    /// and waits for them to end (so the directory can be opened again as soon as this
    /// returns). Calls after it fail with `Stopped`.
    ///
    /// # Errors
    /// A storage error from the final sync.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.runtime.shutting_down.send_replace(true);
        let result = match self.inner.runtime.store.send(Shutdown).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        };
        let arbiters = match self.inner.arbiters.lock() {
            Ok(mut a) => std::mem::take(&mut *a),
            Err(_) => Vec::new(),
        };
        // Wait for the threads to end, so that every handle on the store (the syncer's
        // snapshot reader) is dropped and the directory can be opened again at once. The
        // catch-up thread may run at idle priority and get the CPU only late on a busy machine.
        let joined = actix_rt::task::spawn_blocking(move || {
            for arbiter in &arbiters {
                arbiter.stop();
            }
            for arbiter in arbiters {
                let _ = arbiter.join();
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!("a runtime thread panicked while stopping");
        }
        result
    }
}

/// A watch stream read as a [`futures::Stream`] of [`WatchResponse`]s.
#[derive(Debug)]
pub struct WatchStream {
    rx: QueueReceiver,
    stream: Addr<StreamActor>,
    buffered: BufferedResponses,
}

impl WatchStream {
    /// Creates another watcher on this stream. Requests are taken in order. While
    /// [`CREATES_IN_FLIGHT`](crate::CREATES_IN_FLIGHT) watchers from history wait for the
    /// syncer, a create from history waits at the stream, and so do the requests sent after
    /// it; this call does not wait, so a caller creating in a loop should await
    /// [`Self::request_progress`] or the created responses now and then.
    pub fn create(&self, create: WatchCreate) {
        self.stream.do_send(CreateWatch(create));
    }

    /// Cancels a watcher of this stream.
    pub fn cancel(&self, id: WatchId) {
        self.stream.do_send(CancelWatch(id));
    }

    /// Asks for a stream-wide progress notification. Waits while the stream already has
    /// [`PROGRESS_REQUESTS_IN_FLIGHT`](crate::PROGRESS_REQUESTS_IN_FLIGHT) of them at the store,
    /// so a caller asking in a loop is held back instead of queueing them without bound. Once
    /// this future has been polled the request is on its way: dropping it does not withdraw it.
    ///
    /// # Errors
    /// `Stopped` when the stream has ended.
    pub async fn request_progress(&self) -> Result<()> {
        self.stream.send(RequestStreamProgress).await.map_err(stopped)
    }

    /// Returns the stream actor's address.
    #[must_use]
    pub fn addr(&self) -> &Addr<StreamActor> {
        &self.stream
    }

    /// Returns how many responses the stream holds that this reader has not taken yet, beyond
    /// the channel between them (bounded by `chan_buf_len`, or one delivery).
    #[must_use]
    pub fn buffered_responses(&self) -> usize {
        self.buffered.get()
    }
}

impl Stream for WatchStream {
    type Item = WatchResponse;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.stream.do_send(CloseStream);
    }
}
