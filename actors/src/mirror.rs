//! Owns mirror mode's follower (`watchkv --upstream URL`, docs/etcd-semantics.md "Mirror
//! mode"): bootstrapping an empty data directory with [`crate::import`], then one upstream
//! Watch from the applied revision + 1, its responses reassembled from fragments, grouped by
//! revision and applied through the store's group commit with upstream's revision numbers
//! ([`Handle::apply_upstream`]), so the mirror's own watchers see upstream's revisions exactly
//! as a local write's. Every response already received when the follower is ready is applied
//! with the others (`Gathered`): a mirror that falls behind takes many upstream revisions per
//! group commit and per watcher response, and so catches up. A lost stream or member is resumed
//! from the applied revision + 1 on the next endpoint; a resume point upstream has compacted
//! makes the mirror read upstream's keyspace again and replace its state with it (a
//! re-bootstrap, [`Handle::reimport_upstream`]), its watchers behind the new compact revision
//! answered with etcd's compaction notice.
//!
//! The applied revision moves only with events, never with a progress response: etcd 3.4.23
//! can send a progress notification before the events of its revision (etcd #15220), and every
//! upstream revision carries at least one event. A prefix mirror watches the whole keyspace too
//! and keeps only its prefix's events, so the revisions outside it still prove how far it has
//! followed ([`Handle::confirm_upstream`]).
//!
//! What the follower knows about its upstream (connected, on which endpoint, upstream's last
//! reported revision, when it last applied) goes to [`crate::mirror_status::UpstreamStatus`]
//! for `/health`, `Status` and `/metrics`.
//!
//! Upstream's URLs, TLS and credentials are [`UpstreamEtcd`]'s: each watch carries the user's
//! token; a watch upstream cancels for its token is opened again with a new one, as clientv3
//! does, and credentials upstream refuses stop the follower ([`MirrorError::Credentials`]).

use std::path::Path;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tonic::metadata::MetadataValue;
use watchkv::{KvStore, StoreConfig, UpstreamChange, UpstreamRevision};

use crate::api::pb::etcdserverpb::watch_client::WatchClient;
use crate::api::pb::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest, WatchResponse};
use crate::api::pb::mvccpb;
use crate::grpc::convert::from_key_value;
use crate::handle::Handle;
use crate::import::{import_from_etcd, key_range, read_keyspace, ImportError, ImportOptions, ImportReport};
use crate::mirror_status::UpstreamStatus;
use crate::upstream::{
    authorized, credentials_refused, status_text, watch_token_refused, ChannelOptions, UpstreamEtcd,
};

/// The watch's channel: pings while it is open, so a member that vanished without closing the
/// connection is noticed; no deadline (the watch lasts).
const WATCH_CHANNEL: ChannelOptions = ChannelOptions { keepalive: ChannelOptions::KEEPALIVE, request_timeout: None };
/// The first wait before resuming after a failure; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between resumes.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a mirror follows.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// Upstream: its endpoints, tried in turn, TLS and credentials.
    pub upstream: UpstreamEtcd,
    /// Only the keys under this prefix; empty = the whole keyspace.
    pub prefix: Vec<u8>,
}

/// Why the follower stopped. A stream or member lost is not one of them: the follower resumes.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Options that cannot work.
    #[error("mirror: {0}")]
    Invalid(String),
    /// Upstream refused the user and password (etcd's `ErrAuthFailed`): following stops
    /// rather than serve ever staler data.
    #[error("mirror: upstream {endpoint} refused the credentials of user {user:?}: {status}")]
    Credentials {
        /// The endpoint that answered.
        endpoint: String,
        /// The user.
        user: String,
        /// etcd's error.
        status: String,
    },
    /// The bootstrap import failed, or the read of upstream's keyspace after upstream compacted
    /// what the mirror needed next.
    #[error("mirror: bootstrap: {0}")]
    Bootstrap(#[from] ImportError),
    /// The local store refused or failed (an upstream revision that does not continue it).
    #[error("{0}")]
    Store(#[from] watchkv::Error),
}

/// Imports upstream's keyspace (or prefix) at one revision into `config`'s directory if it is
/// missing or empty (the mirror's first start) or holds an import that was cut off (a crash
/// during a bootstrap or a re-bootstrap: the directory is emptied first, since all it holds is
/// upstream's); returns `None` for a directory that holds upstream's keys under the same
/// prefix and nothing of its own ([`KvStore::upstream_origin`]: a mirror's, or `watchkv
/// import`'s not written to since), which resumes from its own applied revision once
/// [`follow`] has seen that upstream is the cluster it came from.
///
/// # Errors
/// As [`import_from_etcd`]; the directory cannot be read or emptied; `Invalid` for a directory
/// that holds another prefix, or a store that did not come from upstream or has taken writes of
/// its own (following upstream from its revision would mix the two keyspaces).
pub async fn bootstrap(config: &StoreConfig, options: &MirrorOptions) -> Result<Option<ImportReport>, MirrorError> {
    if !dir_is_empty(config.path()) {
        let Some(revision) = KvStore::unfinished_import(config)? else {
            check_resumable(config, &options.prefix)?;
            return Ok(None);
        };
        tracing::warn!(dir = %config.path().display(), revision,
            "mirror: the data directory holds an import that did not finish; importing from upstream again");
        std::fs::remove_dir_all(config.path())
            .map_err(|e| MirrorError::Invalid(format!("cannot empty {}: {e}", config.path().display())))?;
    }
    let mut import = ImportOptions::new(options.upstream.clone());
    import.prefix.clone_from(&options.prefix);
    Ok(Some(import_from_etcd(config.clone(), &import).await?))
}

/// Whether the store in `config`'s directory may follow upstream under `prefix`.
fn check_resumable(config: &StoreConfig, prefix: &[u8]) -> Result<(), MirrorError> {
    let dir = config.path().display();
    match KvStore::upstream_origin_in(config)?.map(|origin| origin.prefix) {
        Some(held) if held == prefix => Ok(()),
        Some(held) => Err(MirrorError::Invalid(format!(
            "{dir} mirrors {}, not {}: start with --upstream-prefix {:?}, or remove the directory to mirror \
             the new prefix",
            describe_prefix(&held),
            describe_prefix(prefix),
            String::from_utf8_lossy(&held)
        ))),
        None => Err(MirrorError::Invalid(format!(
            "{dir} holds a store that did not come from upstream or has taken writes of its own since: a mirror \
             cannot follow upstream from it; remove the directory (the mirror then copies upstream's keyspace), \
             or serve it without --upstream"
        ))),
    }
}

fn describe_prefix(prefix: &[u8]) -> String {
    if prefix.is_empty() {
        "upstream's whole keyspace".to_owned()
    } else {
        format!("upstream's prefix {:?}", String::from_utf8_lossy(prefix))
    }
}

fn dir_is_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Follows upstream for as long as the store runs: one watch at a time, resumed from the
/// applied revision + 1 on the next endpoint after any failure. When upstream has compacted
/// that revision, the mirror reads upstream's keyspace again at a new revision R and replaces
/// its state with it ([`Handle::reimport_upstream`]): R becomes the local compact revision, and
/// every local watcher that still needed a revision up to R gets etcd's compaction notice. Returns
/// only on a failure that resuming cannot cure, or `Ok` once the store has stopped.
///
/// # Errors
/// A refused upstream revision, refused credentials, a re-bootstrap upstream refuses.
pub async fn follow(handle: Handle, options: MirrorOptions) -> Result<(), MirrorError> {
    let endpoints = options.upstream.endpoints();
    // A handle that is not a mirror's (an embedder's own follower) keeps its status here.
    let status = handle.upstream_status().cloned().unwrap_or_default();
    let mut backoff = FIRST_BACKOFF;
    for endpoint in endpoints.iter().cycle() {
        let start = handle.upstream_applied() + 1;
        status.trying(endpoint);
        let ended = watch_once(&handle, &status, &options.upstream, endpoint, &options.prefix, start).await;
        status.lost();
        match ended {
            Ok(()) => {}
            Err(Stop::Fatal(MirrorError::Store(watchkv::Error::Stopped))) => return Ok(()),
            Err(Stop::Fatal(e)) => {
                tracing::error!(endpoint = %endpoint, error = %e, "mirror: stopped following upstream");
                return Err(e);
            }
            Err(Stop::Resume(why)) => {
                tracing::warn!(endpoint = %endpoint, from = handle.current_revision() + 1, reason = %why,
                    "mirror: upstream watch lost; resuming");
            }
            Err(Stop::Compacted(compact_revision)) => {
                tracing::warn!(endpoint = %endpoint, needed = start, compact_revision,
                    "mirror: upstream compacted the revisions the mirror needs next; reading its keyspace again");
                match rebootstrap(&handle, &options).await {
                    Ok(()) => {
                        status.applied();
                        backoff = FIRST_BACKOFF;
                        continue;
                    }
                    Err(MirrorError::Store(watchkv::Error::Stopped)) => return Ok(()),
                    // Upstream unreachable, or compacting faster than it can be read: later.
                    Err(
                        e @ (MirrorError::Bootstrap(ImportError::GaveUp { .. })
                        | MirrorError::Store(watchkv::Error::Poisoned)),
                    ) => {
                        tracing::warn!(error = %e, "mirror: re-bootstrap failed; trying again");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "mirror: stopped following upstream");
                        return Err(e);
                    }
                }
            }
        }
        if handle.upstream_applied() >= start {
            // The watch made progress before it failed: resume at once.
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    Ok(())
}

/// How one upstream watch ended.
enum Stop {
    /// Resume on the next endpoint.
    Resume(String),
    /// Upstream has compacted the revision the mirror needs next (upstream's compact
    /// revision): bootstrap again.
    Compacted(i64),
    /// Give up.
    Fatal(MirrorError),
}

/// Reads upstream's keyspace (or prefix) again at its current revision R and replaces the
/// store's state with it: R becomes the local compact revision, and local watchers that still
/// needed a revision up to R get etcd's compaction notice (`store/reimport.rs`). The keyspace is
/// held in memory once while it is handed to the store.
async fn rebootstrap(handle: &Handle, options: &MirrorOptions) -> Result<(), MirrorError> {
    let mut read = ImportOptions::new(options.upstream.clone());
    read.prefix.clone_from(&options.prefix);
    let (revision, kvs) = read_keyspace(&read).await?;
    let imported = handle.reimport_upstream(revision, kvs).await?;
    tracing::warn!(revision = imported.revision, keys = imported.keys, "mirror: bootstrapped again from upstream");
    Ok(())
}

/// One upstream watch from `start`, applying what it sends until it fails.
async fn watch_once(
    handle: &Handle,
    status: &UpstreamStatus,
    upstream: &UpstreamEtcd,
    endpoint: &str,
    prefix: &[u8],
    start: i64,
) -> Result<(), Stop> {
    let channel =
        upstream.connect(endpoint, WATCH_CHANNEL).await.map_err(|e| Stop::Resume(format!("cannot connect: {e}")))?;
    let token = upstream.token(&channel).await.map_err(|s| {
        if credentials_refused(&s) {
            let user = upstream.user().unwrap_or_default().to_owned();
            Stop::Fatal(MirrorError::Credentials {
                endpoint: endpoint.to_owned(),
                user,
                status: s.message().to_owned(),
            })
        } else {
            Stop::Resume(format!("authenticate: {}", status_text(&s, endpoint)))
        }
    })?;
    // The whole keyspace even for a prefix mirror: every upstream revision then arrives as at
    // least one event, so having seen revision R proves that nothing under the prefix up to R
    // is missing, on any etcd version (etcd 3.4.23's progress responses prove nothing: etcd
    // #15220). Events outside the prefix are dropped here.
    let (key, range_end) = key_range(&[]);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            range_end,
            start_revision: start,
            // Large revisions come in fragments rather than past the message size limit.
            fragment: true,
            ..WatchCreateRequest::default()
        })),
    };
    // The request stream stays open: etcd ends a watch stream whose client side has ended.
    let requests = futures::stream::iter([create]).chain(futures::stream::pending());
    let mut request = authorized(requests, token.as_ref());
    // etcd: clientv3 WithRequireLeader (rpctypes.MetadataRequireLeaderKey): a member cut off
    // from its cluster's leader ends the stream instead of keeping the mirror on stale data.
    request.metadata_mut().insert("hasleader", MetadataValue::from_static("true"));
    let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut responses = client
        .watch(request)
        .await
        .map_err(|s| Stop::Resume(format!("watch: {}: {}", s.code(), s.message())))?
        .into_inner();
    // Up only once upstream has created the watch (`Gathered::take_ready`): etcd answers a
    // refused watch (permission denied, say) with its headers and a canceled `created`, and a
    // watch that is refused on every attempt must count as down, so that `/health` says so.
    tracing::info!(endpoint = %endpoint, from = start, "mirror: following upstream");
    // The follower is the mirror's only writer: what it applied last is the store's revision
    // (below `start - 1` on a prefix mirror whose last revisions were outside the prefix).
    let mut applied = handle.current_revision();
    let mut gathered = Gathered::default();
    // The cluster the store's state was copied from, while nothing else was written to it: the
    // stream's first response must come from that cluster, or its revisions would be applied
    // on top of another cluster's keys.
    let mut origin_cluster = handle.stats().await.ok().and_then(|s| s.store.upstream_cluster_id);
    loop {
        let first = responses.next().await;
        if let (Some(expected), Some(Ok(response))) = (origin_cluster.take(), &first) {
            let cluster = response.header.as_ref().map_or(0, |h| h.cluster_id);
            if cluster != expected {
                return Err(Stop::Fatal(MirrorError::Invalid(format!(
                    "upstream {endpoint} is etcd cluster {cluster:x}, not cluster {expected:x} that the data \
                     directory was copied from: point --upstream at that cluster, or remove the directory to \
                     mirror this one"
                ))));
            }
        }
        let ended = gathered.take_ready(first, &mut responses, status);
        if gathered.token_refused {
            // etcd: clientv3/watch.go shouldRetryWatch: the next watch authenticates again.
            upstream.forget_token(token.as_ref()).await;
            gathered.token_refused = false;
        }
        // What came whole before the stream ended or failed is applied first: the resume then
        // starts after it.
        if let Some((events, seen)) = gathered.whole(prefix) {
            if !events.is_empty() {
                let revisions = by_revision(applied, events).map_err(Stop::Fatal)?;
                applied = handle.apply_upstream(revisions).await.map_err(|e| match e {
                    // A storage failure the store recovers from by itself (`store/recovery.rs`):
                    // resume from whatever it holds once it has.
                    watchkv::Error::Poisoned => {
                        Stop::Resume("the local store failed; resuming once it has recovered".into())
                    }
                    e => Stop::Fatal(e.into()),
                })?;
            }
            // Everything up to the last response's last revision is applied or outside the prefix.
            handle.confirm_upstream(seen);
            status.applied();
        }
        if let Some(stop) = ended {
            return Err(stop);
        }
    }
}

/// Most bytes of events the follower gathers from responses already received before it applies
/// them: one apply (one group commit) then holds at most about this much, besides one response.
const GATHER_MAX_BYTES: usize = 4 << 20;
/// Most responses the follower gathers before it applies them.
const GATHER_MAX_RESPONSES: usize = 1000;

/// The upstream responses taken since the last apply. Upstream sends a synced watch one
/// response per revision, so a follower that applied each response alone took one group commit
/// (one `fdatasync`) and one delivery to each local stream per upstream revision, and could not
/// catch up once behind. Everything already received is applied together instead: the further
/// the mirror falls behind, the more revisions share a commit and a watcher's response, as
/// etcd's victims get multi-revision batches (etcd: mvcc/watchable_store.go moveVictims).
#[derive(Default)]
struct Gathered {
    /// Events of the whole responses taken, in upstream's order.
    events: Vec<mvccpb::Event>,
    /// The fragments of a response not yet complete (etcd's `fragment` flag).
    fragments: Vec<mvccpb::Event>,
    /// The last revision of the last whole response with events.
    seen: Option<i64>,
    /// Key and value bytes of `events` and `fragments`.
    bytes: usize,
    /// Responses taken since the last apply.
    responses: usize,
    /// Upstream cancelled the watch for its token: the next watch authenticates again.
    token_refused: bool,
}

impl Gathered {
    /// Takes `first` and every response that has already arrived after it, until the stream has
    /// none ready, gathering is full, or the watch ends; returns why it ended, if it did.
    fn take_ready<S>(
        &mut self,
        first: Option<Result<WatchResponse, tonic::Status>>,
        responses: &mut S,
        status: &UpstreamStatus,
    ) -> Option<Stop>
    where
        S: futures::Stream<Item = Result<WatchResponse, tonic::Status>> + Unpin,
    {
        let mut next = first;
        loop {
            let response = match next {
                Some(Ok(r)) => r,
                Some(Err(s)) => return Some(Stop::Resume(format!("{}: {}", s.code(), s.message()))),
                None => return Some(Stop::Resume("upstream ended the watch stream".into())),
            };
            if let Some(header) = &response.header {
                status.upstream_at(header.revision);
            }
            if response.created && !response.canceled {
                status.connected();
            }
            if let Some(stop) = self.take(response) {
                return Some(stop);
            }
            if self.bytes >= GATHER_MAX_BYTES || self.responses >= GATHER_MAX_RESPONSES {
                return None;
            }
            next = responses.next().now_or_never()?;
        }
    }

    /// Takes one response: its events join the gathered ones once the response is whole.
    fn take(&mut self, response: WatchResponse) -> Option<Stop> {
        if response.compact_revision != 0 {
            return Some(Stop::Compacted(response.compact_revision));
        }
        if response.canceled {
            self.token_refused = watch_token_refused(&response.cancel_reason);
            return Some(Stop::Resume(format!("upstream cancelled the watch: {}", response.cancel_reason)));
        }
        self.responses += 1;
        self.bytes += kv_bytes(&response.events);
        self.fragments.extend(response.events);
        if response.fragment {
            return None;
        }
        // The created response, or a progress notification, has no events: neither moves the
        // applied revision (etcd #15220). An event without a key-value goes on to `by_revision`,
        // which refuses it.
        if let Some(last) = self.fragments.iter().rev().find_map(|e| e.kv.as_ref()) {
            self.seen = Some(last.mod_revision);
        }
        self.events.append(&mut self.fragments);
        None
    }

    /// The events of the whole responses taken, those outside `prefix` dropped, and the last
    /// revision they prove the mirror has followed to; `None` if no whole response had events.
    /// A response still in fragments stays.
    fn whole(&mut self, prefix: &[u8]) -> Option<(Vec<mvccpb::Event>, i64)> {
        self.responses = 0;
        self.bytes = kv_bytes(&self.fragments);
        if self.events.is_empty() {
            return None;
        }
        // No revision seen: every event lacked its key-value, and `by_revision` refuses them
        // before anything is confirmed.
        let seen = self.seen.take().unwrap_or(0);
        let mut events = std::mem::take(&mut self.events);
        events.retain(|e| e.kv.as_ref().is_none_or(|kv| kv.key.starts_with(prefix)));
        Some((events, seen))
    }
}

/// The key and value bytes of `events`: what [`GATHER_MAX_BYTES`] counts.
fn kv_bytes(events: &[mvccpb::Event]) -> usize {
    events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.key.len() + kv.value.len()).sum()
}

/// Groups the events of whole watch responses (fragments joined), in upstream's order, into
/// upstream revisions chained from `applied` (each revision's `after` is the one before it).
/// etcd never splits one revision across responses (etcd: mvcc/watcher_group.go
/// `newWatcherBatch` cuts at revision boundaries), so each group is the whole revision.
fn by_revision(applied: i64, events: Vec<mvccpb::Event>) -> Result<Vec<UpstreamRevision>, MirrorError> {
    let mut revisions: Vec<UpstreamRevision> = Vec::new();
    for event in events {
        let Some(kv) = event.kv else {
            return Err(MirrorError::Invalid("upstream sent an event without a key-value".into()));
        };
        let revision = kv.mod_revision;
        let change = if event.r#type == mvccpb::event::EventType::Delete as i32 {
            UpstreamChange::Delete(kv.key)
        } else {
            UpstreamChange::Put(from_key_value(kv))
        };
        match revisions.last_mut() {
            Some(last) if last.revision == revision => last.changes.push(change),
            Some(last) if last.revision > revision => {
                return Err(MirrorError::Invalid(format!(
                    "upstream sent revision {revision} after revision {}",
                    last.revision
                )));
            }
            last => {
                let after = last.map_or(applied, |l| l.revision);
                revisions.push(UpstreamRevision { after, revision, changes: vec![change] });
            }
        }
    }
    Ok(revisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: mvccpb::event::EventType, key: &str, revision: i64) -> mvccpb::Event {
        let kv = mvccpb::KeyValue {
            key: key.into(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            value: b"v".to_vec(),
            lease: 0,
        };
        mvccpb::Event { r#type: kind as i32, kv: Some(kv), prev_kv: None }
    }

    fn response(events: Vec<mvccpb::Event>, fragment: bool) -> Result<WatchResponse, tonic::Status> {
        Ok(WatchResponse { events, fragment, ..WatchResponse::default() })
    }

    fn revisions_of(events: &[mvccpb::Event]) -> Vec<i64> {
        events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).collect()
    }

    #[test]
    fn responses_already_received_are_gathered_into_one_apply_and_a_fragmented_one_waits() {
        use mvccpb::event::EventType::Put;
        let status = UpstreamStatus::default();
        // Three whole responses and the first fragment of a fourth are ready; the rest of the
        // fourth has not arrived.
        let ready = vec![
            response(vec![event(Put, "a", 3)], false),
            response(vec![event(Put, "b", 4), event(Put, "c", 4)], false),
            response(vec![event(Put, "z", 5)], false),
            response(vec![event(Put, "d", 6)], true),
        ];
        let mut rest = futures::stream::iter(ready).chain(futures::stream::pending());
        let mut gathered = Gathered::default();
        let first = rest.next().now_or_never().flatten();
        assert!(gathered.take_ready(first, &mut rest, &status).is_none(), "the stream is still open");
        let (events, seen) = gathered.whole(b"").expect("three whole responses");
        assert_eq!(revisions_of(&events), vec![3, 4, 4, 5]);
        assert_eq!(seen, 5);
        assert!(gathered.whole(b"").is_none(), "the fragment alone is not whole");

        // The fourth's last fragment, then upstream compacts: the whole response is applied
        // before the follower stops.
        let compacted = Ok(WatchResponse { compact_revision: 7, ..WatchResponse::default() });
        let mut more = futures::stream::iter(vec![compacted]);
        let stop = gathered.take_ready(Some(response(vec![event(Put, "e", 6)], false)), &mut more, &status);
        assert!(matches!(stop, Some(Stop::Compacted(7))));
        let (events, seen) = gathered.whole(b"").expect("the fourth is whole");
        assert_eq!(revisions_of(&events), vec![6, 6]);
        assert_eq!(seen, 6);
    }

    /// A data directory is resumed as a mirror only when it holds upstream's keys under the
    /// same prefix and nothing of its own; anything else is refused before upstream is asked
    /// (the endpoint here answers nothing), so a mirror never applies upstream's revisions on
    /// top of another keyspace.
    #[tokio::test]
    async fn a_mirror_resumes_only_a_directory_holding_upstreams_keys_under_its_prefix_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = |prefix: &str| MirrorOptions {
            upstream: UpstreamEtcd::plain(&["http://127.0.0.1:1".to_owned()]).expect("upstream"),
            prefix: prefix.into(),
        };
        let kv = |key: &str| watchkv::KeyValue {
            key: key.into(),
            create_revision: 3,
            mod_revision: 3,
            version: 1,
            value: b"v".to_vec(),
            lease: 0,
        };
        let imported = StoreConfig::new(dir.path().join("imported"));
        let mut store = KvStore::open(imported.clone()).expect("open");
        let origin = watchkv::UpstreamOrigin { prefix: b"a/".to_vec(), cluster_id: 1 };
        store.begin_import(7).expect("begin").from_upstream(origin).push_all_and_finish([kv("a/x")]).expect("import");
        drop(store);
        let resumed = bootstrap(&imported, &options("a/")).await.expect("the same prefix resumes");
        assert!(resumed.is_none(), "resumed, not imported again");
        for other in ["b/", ""] {
            let refused = bootstrap(&imported, &options(other)).await.expect_err("another prefix");
            let text = refused.to_string();
            assert!(
                matches!(refused, MirrorError::Invalid(_)) && text.contains("mirrors upstream's prefix \"a/\""),
                "{text}"
            );
        }

        // A write of its own: no longer upstream's alone.
        let mut store = KvStore::open(imported.clone()).expect("reopen");
        store.put(watchkv::PutRequest::new("a/local", "v")).expect("put");
        drop(store);
        let refused = bootstrap(&imported, &options("a/")).await.expect_err("written locally");
        assert!(refused.to_string().contains("has taken writes of its own"), "{refused}");

        // A store that never came from upstream.
        let local = StoreConfig::new(dir.path().join("local"));
        KvStore::open(local.clone()).expect("open").put(watchkv::PutRequest::new("k", "v")).expect("put");
        let refused = bootstrap(&local, &options("")).await.expect_err("not upstream's");
        assert!(refused.to_string().contains("did not come from upstream"), "{refused}");
        assert_eq!(KvStore::open(local).expect("reopen").current_rev(), 2, "left as it was");
    }

    /// A watch upstream refuses (a created response that is canceled: permission denied, say)
    /// leaves the upstream watch down, so that a refusal on every attempt reaches `/health`;
    /// one upstream creates counts as up.
    #[test]
    fn the_watch_counts_as_up_only_once_upstream_has_created_it() {
        let status = UpstreamStatus::default();
        let refused = Ok(WatchResponse {
            created: true,
            canceled: true,
            cancel_reason: "rpc error: code = PermissionDenied desc = etcdserver: permission denied".into(),
            ..WatchResponse::default()
        });
        let mut rest = futures::stream::pending();
        let stop = Gathered::default().take_ready(Some(refused), &mut rest, &status);
        assert!(matches!(stop, Some(Stop::Resume(_))), "a refusal stops this attempt");
        assert!(!status.report(0).connected, "refused: still down");

        let created = Ok(WatchResponse { created: true, ..WatchResponse::default() });
        assert!(Gathered::default().take_ready(Some(created), &mut rest, &status).is_none());
        assert!(status.report(0).connected);
    }

    #[test]
    fn a_prefix_mirror_drops_other_keys_but_still_confirms_their_revisions() {
        use mvccpb::event::EventType::{Delete, Put};
        let status = UpstreamStatus::default();
        let ready = vec![response(vec![event(Put, "p/a", 3)], false), response(vec![event(Delete, "q", 4)], false)];
        let mut rest = futures::stream::iter(ready);
        let mut gathered = Gathered::default();
        let first = rest.next().now_or_never().flatten();
        let stop = gathered.take_ready(first, &mut rest, &status);
        assert!(matches!(stop, Some(Stop::Resume(ref why)) if why.contains("ended")), "the stream ended");
        let (events, seen) = gathered.whole(b"p/").expect("whole");
        assert_eq!(revisions_of(&events), vec![3]);
        assert_eq!(seen, 4, "revision 4 passed, outside the prefix");
    }

    #[test]
    fn gathering_stops_at_its_byte_bound_and_leaves_the_rest_in_the_stream() {
        use mvccpb::event::EventType::Put;
        let status = UpstreamStatus::default();
        let big = |key: &str, revision: i64| {
            let mut e = event(Put, key, revision);
            e.kv.as_mut().expect("kv").value = vec![b'v'; GATHER_MAX_BYTES / 2];
            e
        };
        let ready = vec![
            response(vec![big("a", 3)], false),
            response(vec![big("b", 4)], false),
            response(vec![big("c", 5)], false),
        ];
        let mut rest = futures::stream::iter(ready).chain(futures::stream::pending());
        let mut gathered = Gathered::default();
        let first = rest.next().now_or_never().flatten();
        assert!(gathered.take_ready(first, &mut rest, &status).is_none());
        let (events, _) = gathered.whole(b"").expect("whole");
        assert_eq!(revisions_of(&events), vec![3, 4], "full after two");
        let next = rest.next().now_or_never().flatten().expect("the third waits in the stream");
        assert_eq!(revisions_of(&next.expect("ok").events), vec![5]);
    }

    #[test]
    fn gathering_stops_at_its_response_bound_and_a_broken_event_is_refused_not_dropped() {
        use mvccpb::event::EventType::Put;
        let status = UpstreamStatus::default();
        let count = i64::try_from(GATHER_MAX_RESPONSES).expect("small") + 1;
        let ready: Vec<_> = (0..count).map(|i| response(vec![event(Put, "k", 3 + i)], false)).collect();
        let mut rest = futures::stream::iter(ready).chain(futures::stream::pending());
        let mut gathered = Gathered::default();
        let first = rest.next().now_or_never().flatten();
        assert!(gathered.take_ready(first, &mut rest, &status).is_none());
        let (events, seen) = gathered.whole(b"").expect("whole");
        assert_eq!(events.len(), GATHER_MAX_RESPONSES);
        assert_eq!(seen, 2 + count - 1);
        assert!(rest.next().now_or_never().flatten().is_some(), "the last one waits in the stream");

        // A whole response whose last event has no key-value is applied, and refused there.
        let broken = mvccpb::Event { kv: None, ..event(Put, "k", 9) };
        let mut none = futures::stream::pending();
        assert!(gathered
            .take_ready(Some(response(vec![event(Put, "k", 9), broken], false)), &mut none, &status)
            .is_none());
        let (events, seen) = gathered.whole(b"").expect("whole");
        assert_eq!(seen, 9);
        let refused = by_revision(8, events).expect_err("an event without a key-value");
        assert!(refused.to_string().contains("without a key-value"), "{refused}");
    }

    #[test]
    fn events_group_into_revisions_in_upstreams_order() {
        use mvccpb::event::EventType::{Delete, Put};
        let grouped =
            by_revision(2, vec![event(Put, "b", 4), event(Put, "a", 4), event(Delete, "c", 9)]).expect("grouped");
        let shape: Vec<(i64, i64, Vec<&[u8]>)> = grouped
            .iter()
            .map(|r| (r.after, r.revision, r.changes.iter().map(UpstreamChange::key).collect()))
            .collect();
        assert_eq!(shape, vec![(2, 4, vec![&b"b"[..], b"a"]), (4, 9, vec![&b"c"[..]])]);
        assert!(matches!(grouped[1].changes[0], UpstreamChange::Delete(_)));
        let backwards = by_revision(2, vec![event(Put, "a", 5), event(Put, "b", 4)]).expect_err("backwards");
        assert!(backwards.to_string().contains("revision 4 after revision 5"), "{backwards}");
    }
}
