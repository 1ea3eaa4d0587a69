//! Owns what the lock and election services share ([`Coordination`]): etcd's client-side
//! concurrency recipes (etcd: client/v3/concurrency `session.go`, `key.go`) run on the server
//! over the [`Handle`], as etcd's v3lock and v3election servers run them over an internal client:
//! the session lease, the ownership key `prefix + hex(lease)`, "who was first" by create
//! revision, waiting for the deletion of every earlier key, and the cleanup of a key whose
//! caller went away. The services themselves are in [`super::lock`] and [`super::election`].
//! On a mirror ([`Coordination::with_upstream`]) the writing calls go to upstream's own
//! services instead (docs/etcd-semantics.md "Mirror mode"): the one branch both transports
//! take.

use actix_rt::ArbiterHandle;
use futures::StreamExt;
use watchkv::watch::response::WatchResponse;
use watchkv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventKind, KeyRange, KeyValue, LeaseId, PutRequest,
    RangeRequest, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
};

use super::auth::Caller;
use super::ApiError;
use crate::forward::Upstream;
use crate::{Handle, WatchCreate, WatchStream};

/// TTL of the lease a session grants when the request names none (etcd: concurrency/session.go
/// `defaultSessionTTL`).
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// Responses buffered between a recipe's watch stream and the recipe (it reads them at once).
const WATCH_BUFFER: usize = 4;

/// What the lock and election services run on: the store, and where their watch streams'
/// actors live (`None`: the caller's arbiter, as in the gateway; gRPC hands one over because
/// tonic's tasks run outside any arbiter), and on a mirror its upstream. Cloning is shallow.
#[derive(Clone, Debug)]
pub struct Coordination {
    pub(super) handle: Handle,
    streams: Option<ArbiterHandle>,
    /// Mirror mode: Lock, Unlock, Campaign, Proclaim and Resign are forwarded here, and
    /// Leader and Observe read locally after a linearizing quorum read.
    pub(super) upstream: Option<Upstream>,
}

/// How waiting for the earlier keys ended without acquiring.
pub(super) enum WaitFailed {
    /// The caller's own key was deleted meanwhile (its lease expired or was revoked, or a
    /// client deleted it): it can no longer win.
    OwnKeyLost,
    /// A read or the watch failed.
    Error(ApiError),
}

impl From<ApiError> for WaitFailed {
    fn from(e: ApiError) -> Self {
        Self::Error(e)
    }
}

impl Coordination {
    /// Returns the services' recipes over `handle`, their watch streams' actors on `streams`
    /// (`None`: the arbiter of the task that calls them).
    #[must_use]
    pub fn new(handle: Handle, streams: Option<ArbiterHandle>) -> Self {
        Self { handle, streams, upstream: None }
    }

    /// Returns these services forwarding to `upstream` when it is given (mirror mode,
    /// [`crate::forward`]): the mirror's store refuses client writes.
    #[must_use]
    pub fn with_upstream(mut self, upstream: Option<Upstream>) -> Self {
        self.upstream = upstream;
        self
    }

    /// The lease a call's keys are attached to (etcd: concurrency/session.go `NewSession` with
    /// `WithLease`, then `Orphan`): 0 grants a new lease of [`DEFAULT_SESSION_TTL`] seconds
    /// that nobody keeps alive; any other id is used as given, and a write with a lease that
    /// does not exist fails with etcd's `requested lease not found`. The server never keeps a
    /// caller's lease alive: the caller does.
    pub(super) async fn session_lease(&self, lease: LeaseId) -> Result<LeaseId, ApiError> {
        if lease != 0 {
            return Ok(lease);
        }
        let (id, _, _) = self.handle.lease_grant(0, DEFAULT_SESSION_TTL).await.map_err(ApiError::relayed)?;
        Ok(id)
    }

    /// The permissions `Lock` and `Campaign` need, as etcd checks them inside its recipes' KV
    /// calls: read and write on `name/` ([`crate::api::Auth::check_coordination`]), and write on
    /// every key already attached to `lease`, which the call's put attaches its key to (etcd:
    /// apply_auth.go `checkLeasePuts`; without it a caller could tie a key to someone else's
    /// lease, whose owner could then neither keep it alive nor revoke it).
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`; on a mirror, upstream's error.
    pub async fn check_acquire(&self, caller: &Caller, name: &[u8], lease: LeaseId) -> Result<(), ApiError> {
        self.handle.auth().check_coordination(caller, name, true)?;
        super::auth::check_lease_attach(&self.handle, self.upstream.as_ref(), caller, lease).await
    }

    pub(super) async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, ApiError> {
        self.handle.txn(txn).await.map_err(ApiError::relayed)
    }

    pub(super) async fn range(&self, req: RangeRequest) -> Result<watchkv::RangeResponse, ApiError> {
        self.handle.range(req).await.map_err(ApiError::relayed)
    }

    /// Opens a watch stream with one watcher, its actor where this service's streams live.
    pub(super) fn watch(&self, range: &KeyRange, start_revision: i64) -> WatchStream {
        let stream = self.handle.watch_stream_with(WATCH_BUFFER, self.streams.as_ref());
        stream.create(WatchCreate::new(range, start_revision));
        stream
    }

    /// Waits until no key under `prefix` created at or before `max_create_revision` is left,
    /// and returns the revision at which none was (etcd: concurrency/key.go `waitDeletes`: the
    /// latest such key, then a watch for its deletion, again until there is none).
    ///
    /// Unlike etcd, it also gives up as soon as `own_key`, which must be under `prefix`, is
    /// gone: etcd's recipe would wait on for keys whose deletion can no longer make it win
    /// (etcd: mutex.go, "TODO: early termination if the session key is deleted").
    pub(super) async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_create_revision: i64,
        own_key: &[u8],
    ) -> Result<i64, WaitFailed> {
        loop {
            // Both reads at one revision, so the watch below misses nothing of either key.
            let mut earlier = last_create(prefix);
            earlier.max_create_revision = max_create_revision;
            let read = TxnRequest {
                compare: Vec::new(),
                success: vec![
                    RequestOp::Range(earlier),
                    RequestOp::Range(RangeRequest::new(KeyRange::single(own_key))),
                ],
                failure: Vec::new(),
            };
            let resp = self.txn(read).await?;
            let revision = resp.revision;
            let mut ranges = resp.responses.into_iter().map(|op| match op {
                ResponseOp::Range(r) => r.kvs,
                _ => Vec::new(),
            });
            let earlier = ranges.next().unwrap_or_default();
            if ranges.next().unwrap_or_default().is_empty() {
                return Err(WaitFailed::OwnKeyLost);
            }
            let Some(last) = earlier.into_iter().next() else {
                return Ok(revision);
            };
            self.wait_delete(&last.key, own_key, revision).await?;
        }
    }

    /// Waits for the deletion of `key` from `revision` on (etcd: concurrency/key.go
    /// `waitDelete`), and for the deletion of `own_key`, which ends the wait too. One stream
    /// with two single-key watchers that take only deletes, as etcd's recipe watches only the
    /// key it waits for: a waiter sees nothing of the other waiters' keys, so N waiters on one
    /// name cost O(N) deliveries, not O(N²) as a watch on the whole prefix would.
    async fn wait_delete(&self, key: &[u8], own_key: &[u8], revision: i64) -> Result<(), WaitFailed> {
        let mut watch = self.handle.watch_stream_with(WATCH_BUFFER, self.streams.as_ref());
        for watched in [key, own_key] {
            let mut create = WatchCreate::new(&KeyRange::single(watched), revision);
            create.filters.no_put = true;
            watch.create(create);
        }
        loop {
            let resp = match next_watch_response(&mut watch).await {
                WatchNext::Events(resp) => resp,
                WatchNext::Compacted(compact_rev) => {
                    return Err(ApiError::relayed(watchkv::Error::Compacted { requested: revision, compact_rev }).into())
                }
                WatchNext::Ended => return Err(ApiError::LostWatcher.into()),
            };
            // Each response is one watcher's. Should both keys go in one revision, either may
            // come first; after the awaited key's, the read in `wait_deletes` finds the
            // caller's own key gone.
            if resp.events.iter().any(|event| event.kind == EventKind::Delete && event.kv.key == key) {
                return Ok(());
            }
            if resp.events.iter().any(|event| event.kind == EventKind::Delete && event.kv.key == own_key) {
                return Err(WaitFailed::OwnKeyLost);
            }
        }
    }
}

/// The revision of a forwarded call's answer (etcd always sends a header).
pub(super) fn revision(header: Option<&crate::api::pb::etcdserverpb::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

/// What a recipe's watch gave next.
pub(super) enum WatchNext {
    /// Events (never empty).
    Events(WatchResponse),
    /// The watcher's start revision was compacted (the compact revision).
    Compacted(i64),
    /// The watcher was cancelled or the stream ended (the server is stopping).
    Ended,
}

/// The next events on a recipe's watch stream, skipping `created` responses and progress
/// notifications.
pub(super) async fn next_watch_response(watch: &mut WatchStream) -> WatchNext {
    while let Some(resp) = watch.next().await {
        if resp.compact_revision != 0 {
            return WatchNext::Compacted(resp.compact_revision);
        }
        if resp.canceled {
            return WatchNext::Ended;
        }
        if !resp.events.is_empty() {
            return WatchNext::Events(resp);
        }
    }
    WatchNext::Ended
}

/// The ownership key of `lease` under `prefix` (etcd: `fmt.Sprintf("%s%x", pfx, s.Lease())`;
/// Go prints a negative number as `-` and the hex of its magnitude).
pub(crate) fn own_key(prefix: &[u8], lease: LeaseId) -> Vec<u8> {
    let hex = if lease < 0 { format!("-{:x}", lease.unsigned_abs()) } else { format!("{lease:x}") };
    let mut key = prefix.to_vec();
    key.extend_from_slice(hex.as_bytes());
    key
}

/// The first key created under `prefix` (etcd: `clientv3.WithFirstCreate`).
pub(super) fn first_create(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..RangeRequest::new(KeyRange::prefix(prefix))
    }
}

/// The last key created under `prefix` (etcd: `clientv3.WithLastCreate`).
fn last_create(prefix: &[u8]) -> RangeRequest {
    RangeRequest { sort_order: SortOrder::Descend, ..first_create(prefix) }
}

/// `create_revision(key) == revision`.
pub(super) fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare { range: KeyRange::single(key), result: CompareResult::Equal, target: CompareTarget::Create(revision) }
}

/// A put of `value` under `key` with `lease`.
pub(super) fn put(key: &[u8], value: Vec<u8>, lease: LeaseId) -> RequestOp {
    RequestOp::Put(PutRequest { key: key.to_vec(), value, lease, ..PutRequest::default() })
}

/// A delete of `key`.
pub(super) fn delete(key: &[u8]) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest::new(KeyRange::single(key)))
}

/// The key-values of the `index`th response of a txn, if it is a range.
pub(super) fn range_kvs(resp: &TxnResponse, index: usize) -> &[KeyValue] {
    match resp.responses.get(index) {
        Some(ResponseOp::Range(r)) => &r.kvs,
        _ => &[],
    }
}

/// A write that undoes a waiting call's key when its caller goes away before the call ends
/// (the request future is dropped): etcd cleans up the same way when the request's context is
/// cancelled (mutex.go `Lock` unlocks, election.go `Campaign` resigns). Dropped while armed, it
/// runs the write on the current runtime without waiting for it.
pub(super) struct Cleanup {
    handle: Handle,
    undo: Option<TxnRequest>,
}

impl Cleanup {
    pub(super) fn new(handle: &Handle, undo: TxnRequest) -> Self {
        Self { handle: handle.clone(), undo: Some(undo) }
    }

    /// The call ended by itself: nothing to undo on drop. Returns the undo, for the caller to
    /// run if it ended with an error that etcd cleans up after.
    pub(super) fn disarm(mut self) -> Option<TxnRequest> {
        self.undo.take()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(undo) = self.undo.take() else { return };
        let handle = self.handle.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = handle.txn(undo).await {
                        tracing::debug!(error = %e, "cleaning up after an abandoned lock or campaign");
                    }
                });
            }
            Err(_) => tracing::warn!("no runtime to clean up an abandoned lock or campaign; its lease will"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_keys_are_prefix_and_go_hex() {
        assert_eq!(own_key(b"lock/", 0x694d_7b1c_2a00_0f01), b"lock/694d7b1c2a000f01".to_vec());
        assert_eq!(own_key(b"e/", 255), b"e/ff".to_vec());
        assert_eq!(own_key(b"e/", -255), b"e/-ff".to_vec());
    }

    #[test]
    fn first_and_last_create_are_one_key_by_create_revision() {
        let first = first_create(b"n/");
        assert_eq!((first.limit, first.sort_order, first.sort_target), (1, SortOrder::Ascend, SortTarget::Create));
        assert_eq!(first.range, KeyRange::interval("n/", "n0"));
        assert_eq!(last_create(b"n/").sort_order, SortOrder::Descend);
    }
}
