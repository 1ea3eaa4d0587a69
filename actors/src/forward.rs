//! Owns mirror mode's forwarding (docs/etcd-semantics.md "Mirror mode"): a mirror's writes
//! (Put, DeleteRange, a Txn that writes, Compact), lease calls and the Lock and Election
//! services' writes (Lock, Unlock, Campaign, Proclaim, Resign), from gRPC and the gateway
//! alike, go to upstream with the generated gRPC clients, and a forwarded write is answered only
//! once the mirror has applied its revision, so its client reads its own writes and a watch it
//! opens next sees them; a linearizable read learns upstream's current revision from a quorum
//! read and waits for the mirror to reach it before it is answered locally. Upstream's answers
//! keep their revisions and fields, with the mirror's header identity; upstream's errors keep
//! their code and text. Every forwarded call carries the upstream user's token
//! ([`UpstreamEtcd::call`]: a refused token is replaced once and the call made again; a
//! keep-alive stream is opened the same way, its client's requests read from one shared source
//! so an attempt that could not connect loses none).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::transport::Channel;
use tonic::{Response, Status, Streaming};

use crate::api::pb::etcdserverpb as pb;
use crate::api::pb::etcdserverpb::kv_client::KvClient;
use crate::api::pb::etcdserverpb::lease_client::LeaseClient;
use crate::api::pb::v3electionpb::election_client::ElectionClient;
use crate::api::pb::v3lockpb::lock_client::LockClient;
use crate::api::pb::{v3electionpb, v3lockpb};
use crate::api::Header;
use crate::handle::Handle;
use crate::mirror::MirrorOptions;
use crate::upstream::{authorized, never_sent, ChannelOptions, UpstreamEtcd, CONNECT_TIMEOUT};

/// How long a forwarded write or a linearizable read waits for the mirror to apply upstream's
/// revision before it fails with etcd's timeout: generous, since the follower may be resuming
/// on another member.
const APPLY_DEADLINE: Duration = Duration::from_secs(60);

/// How long a forwarded call may wait for upstream's answer (a channel whose every endpoint is
/// down would otherwise hold it for ever).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause before a call that failed is made again (see [`made_again`]).
const RESEND_PAUSE: Duration = Duration::from_millis(20);

/// Makes `attempt` again while it fails in a way `safe` says repeating cures and cannot harm,
/// for up to [`CONNECT_TIMEOUT`]; then its last error. Writes are repeated only when they never
/// left ([`never_sent`]), reads on any `Unavailable` (etcd: clientv3/retry_interceptor.go
/// `isSafeRetryMutableRPC`, `isSafeRetryImmutableRPC`). The balanced channel hands a call to an
/// endpoint it cannot connect to (a member that is down refuses at once, and so counts as ready)
/// about as often as to any other: without this, a mirror's forwarded writes and linearizable
/// reads failed with `tcp connect error` while one member of a healthy cluster was down. The
/// next try is balanced again and lands on a member that is up.
async fn made_again<T, Fut>(safe: fn(&Status) -> bool, mut attempt: impl FnMut() -> Fut) -> Result<T, Status>
where
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let give_up = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        match attempt().await {
            Err(status) if safe(&status) && tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(RESEND_PAUSE).await;
            }
            answered => return answered,
        }
    }
}

/// Whether a read failed in a way that trying again may cure: `Unavailable`, from the
/// connection or from etcd (no leader, leader changed; etcd: clientv3/retry_interceptor.go
/// `isSafeRetryImmutableRPC`).
fn read_may_retry(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable
}

/// Awaits one forwarded call: upstream's answer, or upstream's error as a fresh status with its
/// code and text (not upstream's transport metadata), or etcd's timeout after `deadline`
/// (`None`: as long as upstream takes, for a Lock or a Campaign, which wait for the holder to
/// let go).
async fn relay_within<T>(
    deadline: Option<Duration>,
    call: impl std::future::Future<Output = Result<Response<T>, Status>>,
) -> Result<T, Status> {
    let answer = match deadline {
        Some(deadline) => tokio::time::timeout(deadline, call).await,
        None => Ok(call.await),
    };
    match answer {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(fresh(&status)),
        // etcd: api/v3rpc/rpctypes ErrGRPCTimeout.
        Err(_) => Err(Status::unavailable("etcdserver: request timed out")),
    }
}

/// Upstream's code and text as a status of the mirror's own.
fn fresh(status: &Status) -> Status {
    Status::new(status.code(), status.message().to_owned())
}

/// A mirror's way to upstream: one channel over every upstream endpoint, shared by every call.
#[derive(Clone)]
pub struct Upstream {
    upstream: UpstreamEtcd,
    /// The channel the clients below use, and `Authenticate` too.
    channel: Channel,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    lock: LockClient<Channel>,
    election: ElectionClient<Channel>,
    handle: Handle,
    header: Header,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

impl Upstream {
    /// A lazily connected channel over `options`' endpoints (calls are balanced over the ones
    /// that answer), answering with `header`'s identity and waiting on `handle`'s revision.
    /// Must be called within a tokio runtime.
    ///
    #[must_use]
    pub fn new(handle: Handle, header: Header, options: &MirrorOptions) -> Self {
        // Pings while a call is open: a Lock, a Campaign or a keep-alive stream on a member
        // that vanished without closing the connection fails instead of waiting for ever.
        let channel =
            options.upstream.balanced(ChannelOptions { keepalive: ChannelOptions::KEEPALIVE, ..Default::default() });
        Self {
            upstream: options.upstream.clone(),
            kv: KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX),
            // A lease's keys (`LeaseTimeToLive` with keys) and the lease list are as large as
            // upstream makes them, as a range's rows are.
            lease: LeaseClient::new(channel.clone()).max_decoding_message_size(usize::MAX),
            lock: LockClient::new(channel.clone()),
            election: ElectionClient::new(channel.clone()),
            channel,
            handle,
            header,
        }
    }

    /// One unary call on `client` with the upstream user's token, made again once with a new
    /// token if upstream refuses it, and again while it fails as `safe` says ([`made_again`]);
    /// bounded by `deadline` (see [`relay_within`]).
    async fn unary<Client, Req, Resp, Fut>(
        &self,
        client: &Client,
        deadline: Option<Duration>,
        safe: fn(&Status) -> bool,
        request: Req,
        call: impl Fn(Client, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, Status>
    where
        Client: Clone,
        Req: Clone,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        relay_within(
            deadline,
            made_again(safe, || {
                self.upstream
                    .call(&self.channel, |token| call(client.clone(), authorized(request.clone(), token.as_ref())))
            }),
        )
        .await
    }

    /// One unary KV call, as [`Upstream::unary`] bounded by [`UPSTREAM_TIMEOUT`].
    async fn kv<Req, Resp, Fut>(
        &self,
        request: Req,
        call: impl Fn(KvClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        self.unary(&self.kv, Some(UPSTREAM_TIMEOUT), never_sent, request, call).await
    }

    /// As [`Upstream::kv`], for the Lease service.
    async fn lease<Req, Resp, Fut>(
        &self,
        request: Req,
        call: impl Fn(LeaseClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        self.unary(&self.lease, Some(UPSTREAM_TIMEOUT), never_sent, request, call).await
    }

    /// Upstream's header with the mirror's identity and upstream's revision.
    fn header(&self, header: Option<pb::ResponseHeader>) -> Option<pb::ResponseHeader> {
        Some(self.header.at(header.map_or(0, |h| h.revision)))
    }

    /// Waits until the mirror has applied `revision` (a prefix mirror: applied, or seen pass
    /// outside its prefix).
    async fn applied(&self, revision: i64) -> Result<(), Status> {
        if self.handle.wait_for_revision(revision, APPLY_DEADLINE).await {
            return Ok(());
        }
        // etcd: api/v3rpc/rpctypes ErrGRPCTimeout.
        Err(Status::unavailable("etcdserver: request timed out"))
    }

    /// Waits until the mirror holds everything upstream had when this was called: upstream's
    /// current revision comes from a linearizable (quorum) range of one key, count only.
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout when the mirror does not catch up.
    pub async fn linearize(&self) -> Result<(), Status> {
        let probe = pb::RangeRequest { key: vec![0], limit: 1, count_only: true, ..Default::default() };
        let resp =
            self.unary(&self.kv, Some(UPSTREAM_TIMEOUT), read_may_retry, probe, |mut kv, r| async move {
                kv.range(r).await
            })
            .await?;
        self.applied(resp.header.map_or(0, |h| h.revision)).await
    }

    /// Forwards a Put; answers once the mirror has applied it.
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout.
    pub async fn put(&self, req: pb::PutRequest) -> Result<Response<pb::PutResponse>, Status> {
        let mut resp = self.kv(req, |mut kv, r| async move { kv.put(r).await }).await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    /// Forwards a DeleteRange; answers once the mirror has applied it.
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout.
    pub async fn delete_range(&self, req: pb::DeleteRangeRequest) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let mut resp = self.kv(req, |mut kv, r| async move { kv.delete_range(r).await }).await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    /// Forwards a Txn that writes; answers once the mirror has applied its revision. The
    /// headers of its branch's responses are upstream's (etcd fills in only their revision).
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout.
    pub async fn txn(&self, req: pb::TxnRequest) -> Result<Response<pb::TxnResponse>, Status> {
        let mut resp = self.kv(req, |mut kv, r| async move { kv.txn(r).await }).await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    /// Forwards a Compact: upstream compacts; the mirror's own history is kept by its own
    /// auto-compaction. Answered once the mirror holds the answer's revision, as every
    /// forwarded call is, so a read at that revision on the mirror is not a future one.
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout.
    pub async fn compact(&self, req: pb::CompactionRequest) -> Result<Response<pb::CompactionResponse>, Status> {
        let mut resp = self.kv(req, |mut kv, r| async move { kv.compact(r).await }).await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    /// Forwards a LeaseGrant; answers once the mirror holds the answer's revision.
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout.
    pub async fn lease_grant(&self, req: pb::LeaseGrantRequest) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let mut resp = self.lease(req, |mut lease, r| async move { lease.lease_grant(r).await }).await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    /// Forwards a LeaseRevoke; answers once the mirror has applied the deletion of its keys.
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout.
    pub async fn lease_revoke(&self, req: pb::LeaseRevokeRequest) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let mut resp = self.lease(req, |mut lease, r| async move { lease.lease_revoke(r).await }).await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    /// Forwards a LeaseTimeToLive. The keys come sorted, as a watchkv node lists them
    /// (docs/etcd-semantics.md §12 item 3), not in upstream's Go map order, which changes from
    /// call to call. Answered once the mirror holds the answer's revision, so the keys it names
    /// are on the mirror.
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout.
    pub async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let mut resp = self.lease(req, |mut lease, r| async move { lease.lease_time_to_live(r).await }).await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        resp.keys.sort_unstable();
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    /// Forwards a LeaseLeases; answers once the mirror holds the answer's revision.
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout.
    pub async fn lease_leases(&self, req: pb::LeaseLeasesRequest) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let mut resp = self.lease(req, |mut lease, r| async move { lease.lease_leases(r).await }).await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    /// Forwards a KeepAlive stream: the client's requests go to one upstream stream as they
    /// come, upstream's answers come back in order; the client ending its side (or failing)
    /// ends upstream's.
    ///
    /// # Errors
    /// Upstream's error opening the stream.
    pub async fn lease_keep_alive(
        &self,
        requests: Streaming<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<BoxStream<pb::LeaseKeepAliveResponse>>, Status> {
        let requests = requests.take_while(|r| futures::future::ready(r.is_ok())).filter_map(|r| async { r.ok() });
        // Opened as a unary call is made (a new token on refusal, another member while the one
        // picked cannot be reached). Each attempt reads the client's requests from one shared
        // source: an attempt that could not connect sent nothing, so none is lost.
        let source = Arc::new(tokio::sync::Mutex::new(Box::pin(requests)));
        let open = |mut lease: LeaseClient<Channel>, req: tonic::Request<()>| {
            let (metadata, extensions, ()) = req.into_parts();
            let requests = futures::stream::unfold(Arc::clone(&source), |source| async move {
                let next = source.lock().await.next().await;
                next.map(|request| (request, source))
            });
            async move { lease.lease_keep_alive(tonic::Request::from_parts(metadata, extensions, requests)).await }
        };
        let responses = self.unary(&self.lease, Some(UPSTREAM_TIMEOUT), read_may_retry, (), open).await?;
        let this = self.clone();
        let responses = responses.map(move |r| match r {
            Ok(mut resp) => {
                resp.header = this.header(resp.header);
                Ok(resp)
            }
            Err(status) => Err(fresh(&status)),
        });
        Ok(Response::new(Box::pin(responses)))
    }
}

/// The Lock and Election services' writes, forwarded to upstream's own services (etcd:
/// server/etcdserver/api/v3lock, v3election), which run etcd's recipes there: each is answered
/// once the mirror has applied the revision of upstream's answer, so the caller's key (or its
/// deletion) is on the mirror when the answer comes. Answers keep upstream's header; the API
/// layer ([`crate::api::Coordination`]) keeps its revision and reports the mirror's identity.
/// A Lock or Campaign waits as long as upstream makes it wait; the caller going away drops the
/// upstream call, and upstream then undoes the waiter's key as for its own clients. A grant
/// whose caller goes away, or whose revision the mirror does not reach in time, is given back
/// upstream ([`Undo`]), unless the caller's lease held its key before the call: etcd's recipes
/// then re-enter (the key is reused, and the caller already held the lock or had already
/// campaigned), and giving it back would end a hold the caller still counts on.
impl Upstream {
    /// Forwards a Lock (no deadline: it waits for the holder to let go).
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout waiting for the mirror.
    pub async fn lock(&self, req: v3lockpb::LockRequest) -> Result<v3lockpb::LockResponse, Status> {
        let held_before = self.holds_own_key(&req.name, req.lease).await?;
        let resp = self.unary(&self.lock, None, never_sent, req, |mut c, r| async move { c.lock(r).await }).await?;
        let undo = (!held_before)
            .then(|| Undo::new(self, UndoCall::Unlock(v3lockpb::UnlockRequest { key: resp.key.clone() })));
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        if let Some(undo) = undo {
            undo.disarm();
        }
        Ok(resp)
    }

    /// Forwards an Unlock.
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout.
    pub async fn unlock(&self, req: v3lockpb::UnlockRequest) -> Result<v3lockpb::UnlockResponse, Status> {
        let resp = self.unlock_upstream(req).await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        Ok(resp)
    }

    /// An Unlock upstream, not waiting for the mirror.
    async fn unlock_upstream(&self, req: v3lockpb::UnlockRequest) -> Result<v3lockpb::UnlockResponse, Status> {
        self.unary(&self.lock, Some(UPSTREAM_TIMEOUT), never_sent, req, |mut c, r| async move { c.unlock(r).await })
            .await
    }

    /// Forwards a Campaign (no deadline: it waits for the leaders before it to go).
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout waiting for the mirror.
    pub async fn campaign(&self, req: v3electionpb::CampaignRequest) -> Result<v3electionpb::CampaignResponse, Status> {
        let held_before = self.holds_own_key(&req.name, req.lease).await?;
        let resp =
            self.unary(&self.election, None, never_sent, req, |mut c, r| async move { c.campaign(r).await }).await?;
        let undo = (!held_before)
            .then(|| Undo::new(self, UndoCall::Resign(v3electionpb::ResignRequest { leader: resp.leader.clone() })));
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        if let Some(undo) = undo {
            undo.disarm();
        }
        Ok(resp)
    }

    /// Forwards a Proclaim.
    ///
    /// # Errors
    /// Upstream's error (`election: not leader`, code `Unknown`, as etcd relays it), or etcd's
    /// timeout.
    pub async fn proclaim(&self, req: v3electionpb::ProclaimRequest) -> Result<v3electionpb::ProclaimResponse, Status> {
        let resp =
            self.unary(&self.election, Some(UPSTREAM_TIMEOUT), never_sent, req, |mut c, r| async move {
                c.proclaim(r).await
            })
            .await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        Ok(resp)
    }

    /// Forwards a Resign.
    ///
    /// # Errors
    /// Upstream's error, or etcd's timeout.
    pub async fn resign(&self, req: v3electionpb::ResignRequest) -> Result<v3electionpb::ResignResponse, Status> {
        let resp = self.resign_upstream(req).await?;
        self.applied(resp.header.as_ref().map_or(0, |h| h.revision)).await?;
        Ok(resp)
    }

    /// Whether `lease` already holds its ownership key under `name/` upstream (a Lock or
    /// Campaign with it re-enters). Lease 0 starts a new session lease, so a new key. A
    /// concurrent call with the same lease can still create the key between this read and the
    /// call; etcd's own recipes give a caller that races itself no guarantee either.
    async fn holds_own_key(&self, name: &[u8], lease: i64) -> Result<bool, Status> {
        if lease == 0 {
            return Ok(false);
        }
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        let key = crate::api::coordination::own_key(&prefix, lease);
        let probe = pb::RangeRequest { key, count_only: true, ..Default::default() };
        let resp =
            self.unary(&self.kv, Some(UPSTREAM_TIMEOUT), read_may_retry, probe, |mut kv, r| async move {
                kv.range(r).await
            })
            .await?;
        Ok(resp.count > 0)
    }

    /// A Resign upstream, not waiting for the mirror.
    async fn resign_upstream(&self, req: v3electionpb::ResignRequest) -> Result<v3electionpb::ResignResponse, Status> {
        self.unary(&self.election, Some(UPSTREAM_TIMEOUT), never_sent, req, |mut c, r| async move { c.resign(r).await })
            .await
    }
}

/// A lock or a leadership upstream granted whose caller will not hear of it: the wait for the
/// mirror to apply its revision failed or the caller went away meanwhile. Unless disarmed, it
/// gives the grant back upstream (an `Unlock` or a `Resign`, in a task of its own), as etcd's
/// recipe undoes a waiter's key when its call fails (etcd: concurrency/mutex.go `Lock`); else
/// every other caller would wait behind a holder that never knew it held.
struct Undo {
    upstream: Option<(Upstream, UndoCall)>,
}

/// What gives a grant back.
enum UndoCall {
    Unlock(v3lockpb::UnlockRequest),
    Resign(v3electionpb::ResignRequest),
}

impl Undo {
    fn new(upstream: &Upstream, call: UndoCall) -> Self {
        Self { upstream: Some((upstream.clone(), call)) }
    }

    /// The caller has its answer: nothing to undo.
    fn disarm(mut self) {
        self.upstream = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let Some((upstream, call)) = self.upstream.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let undone = match call {
                UndoCall::Unlock(req) => upstream.unlock_upstream(req).await.map(drop),
                UndoCall::Resign(req) => upstream.resign_upstream(req).await.map(drop),
            };
            if let Err(status) = undone {
                tracing::warn!(code = ?status.code(), message = status.message(),
                    "mirror: could not give back upstream a lock or leadership its caller never heard of");
            }
        });
    }
}

impl Upstream {
    /// Renews a lease once on upstream (the gateway's keep-alive, which answers one request at
    /// a time): its TTL (0 for an unknown lease, as etcd answers) and upstream's revision.
    ///
    /// # Errors
    /// Upstream's error, or `Unavailable` when upstream ends the stream without an answer.
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<(i64, i64), Status> {
        // Opened as a unary call is made: with a new token if upstream refuses the user's, and
        // again on another member while the one picked cannot be reached (a renewal is safe to
        // repeat). The request side stays open until the answer is in: etcd ends the stream at
        // the client's end, perhaps before answering.
        let open = |mut lease: LeaseClient<Channel>, req: tonic::Request<pb::LeaseKeepAliveRequest>| {
            let (metadata, extensions, request) = req.into_parts();
            let requests = futures::stream::iter([request]).chain(futures::stream::pending());
            async move { lease.lease_keep_alive(tonic::Request::from_parts(metadata, extensions, requests)).await }
        };
        let mut responses = self
            .unary(&self.lease, Some(UPSTREAM_TIMEOUT), read_may_retry, pb::LeaseKeepAliveRequest { id }, open)
            .await?;
        match tokio::time::timeout(UPSTREAM_TIMEOUT, responses.message()).await {
            Ok(Ok(Some(resp))) => Ok((resp.ttl, resp.header.map_or(0, |h| h.revision))),
            Ok(Ok(None)) => Err(Status::unavailable("upstream ended the keep-alive stream without an answer")),
            Ok(Err(status)) => Err(fresh(&status)),
            Err(_) => Err(Status::unavailable("etcdserver: request timed out")),
        }
    }
}

/// Upstream's messages as the core's responses, for the gateway's encoders (which add the
/// mirror's identity to the revision).
pub mod core {
    use watchkv::{DeleteRangeResponse, PutResponse, RangeResponse, ResponseOp, TxnResponse};

    use crate::api::pb::etcdserverpb as pb;
    use crate::grpc::convert::from_key_value;

    fn revision(header: Option<&pb::ResponseHeader>) -> i64 {
        header.map_or(0, |h| h.revision)
    }

    /// A `RangeResponse`.
    #[must_use]
    pub fn range(r: pb::RangeResponse) -> RangeResponse {
        RangeResponse {
            revision: revision(r.header.as_ref()),
            kvs: r.kvs.into_iter().map(from_key_value).collect(),
            more: r.more,
            count: r.count,
        }
    }

    /// A `PutResponse`.
    #[must_use]
    pub fn put(r: pb::PutResponse) -> PutResponse {
        PutResponse { revision: revision(r.header.as_ref()), prev_kv: r.prev_kv.map(from_key_value) }
    }

    /// A `DeleteRangeResponse`.
    #[must_use]
    pub fn delete(r: pb::DeleteRangeResponse) -> DeleteRangeResponse {
        DeleteRangeResponse {
            revision: revision(r.header.as_ref()),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(from_key_value).collect(),
        }
    }

    /// A `TxnResponse`, nested ones included.
    #[must_use]
    pub fn txn(r: pb::TxnResponse) -> TxnResponse {
        use pb::response_op::Response as Op;
        TxnResponse {
            revision: revision(r.header.as_ref()),
            succeeded: r.succeeded,
            responses: r
                .responses
                .into_iter()
                .filter_map(|op| {
                    Some(match op.response? {
                        Op::ResponseRange(r) => ResponseOp::Range(range(r)),
                        Op::ResponsePut(r) => ResponseOp::Put(put(r)),
                        Op::ResponseDeleteRange(r) => ResponseOp::DeleteRange(delete(r)),
                        Op::ResponseTxn(r) => ResponseOp::Txn(txn(r)),
                    })
                })
                .collect(),
        }
    }
}

/// Whether any branch of a txn, nested ones included, puts or deletes.
#[must_use]
pub fn txn_writes(req: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as Op;
    req.success.iter().chain(&req.failure).any(|op| match &op.request {
        Some(Op::RequestPut(_) | Op::RequestDeleteRange(_)) => true,
        Some(Op::RequestTxn(inner)) => txn_writes(inner),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::{request_op, response_op};

    fn put_op(key: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestPut(pb::PutRequest { key: key.into(), ..Default::default() })),
        }
    }

    fn range_op(key: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                key: key.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_txn_writes_if_any_branch_or_nested_txn_does() {
        let reads = pb::TxnRequest { success: vec![range_op("a")], failure: vec![range_op("b")], compare: vec![] };
        assert!(!txn_writes(&reads));
        let nested = pb::TxnRequest {
            failure: vec![pb::RequestOp {
                request: Some(request_op::Request::RequestTxn(pb::TxnRequest {
                    success: vec![put_op("c")],
                    ..Default::default()
                })),
            }],
            ..reads.clone()
        };
        assert!(txn_writes(&nested), "a put in a nested txn of the failure branch");
    }

    #[test]
    fn upstream_txn_answers_become_the_cores_with_upstreams_revisions() {
        let header = |revision| Some(pb::ResponseHeader { revision, ..Default::default() });
        let kv = crate::api::pb::mvccpb::KeyValue {
            key: b"k".to_vec(),
            create_revision: 3,
            mod_revision: 7,
            version: 2,
            value: b"v".to_vec(),
            lease: 9,
        };
        let upstream = pb::TxnResponse {
            header: header(8),
            succeeded: false,
            responses: vec![
                pb::ResponseOp {
                    response: Some(response_op::Response::ResponsePut(pb::PutResponse {
                        header: header(8),
                        prev_kv: Some(kv.clone()),
                    })),
                },
                pb::ResponseOp {
                    response: Some(response_op::Response::ResponseTxn(pb::TxnResponse {
                        header: header(8),
                        succeeded: true,
                        responses: vec![pb::ResponseOp {
                            response: Some(response_op::Response::ResponseRange(pb::RangeResponse {
                                header: header(8),
                                kvs: vec![kv],
                                more: true,
                                count: 4,
                            })),
                        }],
                    })),
                },
            ],
        };
        let txn = core::txn(upstream);
        assert_eq!((txn.revision, txn.succeeded), (8, false));
        let watchkv::ResponseOp::Put(put) = &txn.responses[0] else { panic!("{:?}", txn.responses[0]) };
        let prev = put.prev_kv.as_ref().expect("prev_kv");
        assert_eq!((prev.create_revision, prev.mod_revision, prev.version, prev.lease), (3, 7, 2, 9));
        let watchkv::ResponseOp::Txn(nested) = &txn.responses[1] else { panic!("{:?}", txn.responses[1]) };
        let watchkv::ResponseOp::Range(range) = &nested.responses[0] else { panic!("{:?}", nested.responses[0]) };
        assert_eq!((range.revision, range.count, range.more, range.kvs.len()), (8, 4, true, 1));
    }
}
