//! Owns `watchkv import`: reading a running etcd's keyspace (or one prefix of it) at one
//! revision R through etcd's own KV API, with the gRPC client generated from the vendored protos
//! (no `protoc`, no `etcd-client`), and importing it into a new data directory with
//! [`watchkv::KvStore::begin_import`]: upstream's key-values at R, with their revisions, versions
//! and lease ids, and R as the local compact revision (docs/etcd-semantics.md "Importing from
//! etcd").
//!
//! The read is etcd's own paginated consistent range (etcd: client/v3/mirror/syncer.go
//! `SyncBase`, what `etcdctl make-mirror` starts with): a first linearizable page at revision 0
//! gives R in its header, every later page asks for `revision = R` from the last key + `"\0"`
//! until `more` is false, so the pages together are one consistent view. No sort is asked for:
//! a range returns keys in key order, and for any explicit sort etcd reads the whole range
//! before it applies `limit` (etcd 3.4: etcdserver/apply.go `applierV3backend.Range`). Where `SyncBase` fails on a compaction past R before the last page,
//! the import starts over at a new R (a bounded number of times). Upstream's URLs, TLS and
//! credentials are [`UpstreamEtcd`]'s.

use std::path::Path;
use std::time::Duration;

use tonic::{Code, Status};
use watchkv::{ImportedSnapshot, KeyValue, KvStore, StoreConfig, UpstreamOrigin};

use crate::api::pb::etcdserverpb::kv_client::KvClient;
use crate::api::pb::etcdserverpb::RangeRequest;
use crate::grpc::convert::from_key_value;
use crate::upstream::{authorized, status_text, ChannelOptions, UpstreamEtcd};

/// Keys asked for per page by default.
pub const DEFAULT_PAGE_SIZE: i64 = 1000;
/// Attempts (each a whole read from a fresh start) before an import gives up by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// How long one upstream request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The pause before the second pass over the endpoints by default; it doubles each pass.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(200);
/// The longest pause between two passes over the endpoints.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// What to import and from where.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Upstream: its endpoints, tried in turn, TLS and credentials (the import authenticates
    /// and sends the token with every request).
    pub upstream: UpstreamEtcd,
    /// Only the keys under this prefix; empty = the whole keyspace.
    pub prefix: Vec<u8>,
    /// Keys asked for per range request (etcd `limit`).
    pub page_size: i64,
    /// Whole reads to try before giving up (a compaction upstream, an endpoint down).
    pub max_attempts: u32,
    /// The pause before an attempt that starts a new pass over the endpoints (none between the
    /// endpoints of one pass); it doubles each pass, up to 5 s. With the defaults, one endpoint
    /// that is down gets five attempts over 3 s: long enough for an etcd member to restart.
    pub retry_delay: Duration,
}

impl ImportOptions {
    /// Options for importing the whole keyspace from `upstream`.
    #[must_use]
    pub fn new(upstream: UpstreamEtcd) -> Self {
        Self {
            upstream,
            prefix: Vec::new(),
            page_size: DEFAULT_PAGE_SIZE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_delay: DEFAULT_RETRY_DELAY,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The store's state: revision R, keys, keys with an upstream lease.
    pub imported: ImportedSnapshot,
    /// The endpoint the read that succeeded came from.
    pub endpoint: String,
    /// Whole reads it took (1 unless upstream compacted or an endpoint failed).
    pub attempts: u32,
}

/// Why an import failed. The data directory is left as empty as it was found.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Options that cannot work.
    #[error("import: {0}")]
    Invalid(String),
    /// The data directory is not missing or empty.
    #[error("import: data-dir {0:?} not empty or could not be read")]
    DirNotEmpty(String),
    /// Upstream refused a request for a reason retrying does not cure.
    #[error("import: upstream {endpoint}: {status}")]
    Upstream {
        /// The endpoint that refused.
        endpoint: String,
        /// etcd's error.
        status: String,
    },
    /// Every attempt failed for a reason retrying might have cured.
    #[error("import: gave up after {attempts} attempts; the last: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's failure.
        last: String,
    },
    /// The local store failed or refused (its own texts: `import: …`, `mvcc: …`).
    #[error("{0}")]
    Store(#[from] watchkv::Error),
}

/// How one attempt ended when it did not import.
enum Failed {
    /// Another attempt may succeed: a compaction upstream, an endpoint unreachable.
    Retry(String),
    /// Another attempt would fail the same way.
    Fatal(ImportError),
}

impl From<watchkv::Error> for Failed {
    fn from(e: watchkv::Error) -> Self {
        Self::Fatal(ImportError::Store(e))
    }
}

/// Imports upstream's keyspace (or `options.prefix`) into the store directory of `config`,
/// which must be missing or empty. On failure the directory is left as empty as it was found.
///
/// # Errors
/// [`ImportError`]: a non-empty directory, bad options, upstream's refusal, repeated
/// compactions or unreachable endpoints, a local storage failure.
pub async fn import_from_etcd(config: StoreConfig, options: &ImportOptions) -> Result<ImportReport, ImportError> {
    check_options(options)?;
    let dir = config.path().to_path_buf();
    let existed = dir.exists();
    if existed && std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_some()) {
        return Err(ImportError::DirNotEmpty(dir.display().to_string()));
    }
    let (imported, endpoint, attempts) =
        with_attempts(options, |endpoint| import_once(config.clone(), endpoint, options), || clean_dir(&dir, existed))
            .await?;
    Ok(ImportReport { imported, endpoint, attempts })
}

/// Reads upstream's keyspace (or `options.prefix`) at one revision into memory: the revision
/// and its live key-values in key order (a mirror's re-bootstrap, [`crate::mirror`]). Starts
/// over as [`import_from_etcd`] does.
///
/// # Errors
/// As [`import_from_etcd`], without the directory's.
pub async fn read_keyspace(options: &ImportOptions) -> Result<(i64, Vec<KeyValue>), ImportError> {
    check_options(options)?;
    let read = with_attempts(options, |endpoint| read_once(endpoint, options), || {}).await?;
    Ok(read.0)
}

fn check_options(options: &ImportOptions) -> Result<(), ImportError> {
    if options.page_size < 1 {
        return Err(ImportError::Invalid(format!("page size {} below 1", options.page_size)));
    }
    Ok(())
}

/// Runs `once` against the endpoints in turn until it succeeds, fails for good, or
/// `options.max_attempts` attempts have failed; `after_failure` runs after each failed one.
/// Answers with what `once` gave, its endpoint and the attempts it took.
async fn with_attempts<T, Fut>(
    options: &ImportOptions,
    mut once: impl FnMut(String) -> Fut,
    mut after_failure: impl FnMut(),
) -> Result<(T, String, u32), ImportError>
where
    Fut: std::future::Future<Output = Result<T, Failed>>,
{
    let endpoints = options.upstream.endpoints();
    let attempts = options.max_attempts.max(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        let pause = pause_before(attempt, endpoints.len(), options.retry_delay);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let endpoint = endpoints[(attempt as usize - 1) % endpoints.len()].clone();
        let outcome = once(endpoint.clone()).await;
        if outcome.is_err() {
            after_failure();
        }
        match outcome {
            Ok(done) => return Ok((done, endpoint, attempt)),
            Err(Failed::Fatal(e)) => return Err(e),
            Err(Failed::Retry(why)) => {
                tracing::warn!(endpoint = %endpoint, attempt, reason = %why, "upstream read starts over");
                last = format!("{endpoint}: {why}");
            }
        }
    }
    Err(ImportError::GaveUp { attempts, last })
}

/// The pause before attempt `attempt` (from 1) over `endpoints` endpoints: none within a pass
/// over them (the next endpoint may be up), `first` before the second pass, doubling each pass
/// after, at most [`MAX_RETRY_DELAY`].
fn pause_before(attempt: u32, endpoints: usize, first: Duration) -> Duration {
    let done = attempt.saturating_sub(1) as usize;
    if done == 0 || !done.is_multiple_of(endpoints.max(1)) {
        return Duration::ZERO;
    }
    let passes = u32::try_from(done / endpoints.max(1)).unwrap_or(u32::MAX);
    first.saturating_mul(2u32.saturating_pow(passes - 1)).min(MAX_RETRY_DELAY)
}

/// One whole read from `endpoint` into a fresh store.
async fn import_once(
    config: StoreConfig,
    endpoint: String,
    options: &ImportOptions,
) -> Result<ImportedSnapshot, Failed> {
    let mut pages = Pages::open(&endpoint, options).await?;
    let mut store = KvStore::open(config)?;
    let origin = UpstreamOrigin { prefix: options.prefix.clone(), cluster_id: pages.cluster_id };
    let mut import = store.begin_import(pages.revision)?.from_upstream(origin);
    while let Some(kvs) = pages.next_page().await? {
        for kv in kvs {
            import.push(kv)?;
        }
    }
    pages.check_count(import.keys())?;
    Ok(import.finish()?)
}

/// One whole read from `endpoint` into memory.
async fn read_once(endpoint: String, options: &ImportOptions) -> Result<(i64, Vec<KeyValue>), Failed> {
    let mut pages = Pages::open(&endpoint, options).await?;
    let mut all = Vec::new();
    while let Some(kvs) = pages.next_page().await? {
        all.extend(kvs);
    }
    pages.check_count(all.len())?;
    Ok((pages.revision, all))
}

/// One paginated consistent read of upstream's keyspace at one revision (etcd:
/// client/v3/mirror/syncer.go `SyncBase`): the first page, read at revision 0, gives the
/// revision in its header; each later page asks for that revision from the last key + `"\0"`.
struct Pages<'a> {
    options: &'a ImportOptions,
    endpoint: &'a str,
    channel: tonic::transport::Channel,
    kv: KvClient<tonic::transport::Channel>,
    range_end: Vec<u8>,
    /// Upstream's revision of the read.
    revision: i64,
    /// Upstream's cluster id, from the first page's header.
    cluster_id: u64,
    /// Keys upstream counted at that revision.
    expected_keys: i64,
    /// The first page, until [`Self::next_page`] hands it out.
    first: Option<Vec<KeyValue>>,
    /// Where the next page starts; `None` once the last page has been read.
    next_key: Option<Vec<u8>>,
}

impl<'a> Pages<'a> {
    async fn open(endpoint: &'a str, options: &'a ImportOptions) -> Result<Self, Failed> {
        let channel = options
            .upstream
            .connect(endpoint, ChannelOptions { request_timeout: Some(REQUEST_TIMEOUT), ..ChannelOptions::default() })
            .await
            .map_err(|e| Failed::Retry(format!("cannot connect: {e}")))?;
        let kv = KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
        let (key, range_end) = key_range(&options.prefix);
        let mut pages = Self {
            options,
            endpoint,
            channel,
            kv,
            range_end,
            revision: 0,
            cluster_id: 0,
            expected_keys: 0,
            first: None,
            next_key: None,
        };
        let (first, next_key) = pages.read(key, None).await?;
        pages.first = Some(first);
        pages.next_key = next_key;
        Ok(pages)
    }

    /// The next page's key-values, `None` after the last.
    async fn next_page(&mut self) -> Result<Option<Vec<KeyValue>>, Failed> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let Some(key) = self.next_key.take() else { return Ok(None) };
        let (kvs, next_key) = self.read(key, Some(self.revision)).await?;
        self.next_key = next_key;
        Ok(Some(kvs))
    }

    /// Fails unless the read returned as many keys as upstream counted at its revision.
    fn check_count(&self, sent: usize) -> Result<(), Failed> {
        if i64::try_from(sent).ok() == Some(self.expected_keys) {
            return Ok(());
        }
        Err(Failed::Fatal(ImportError::Upstream {
            endpoint: self.endpoint.to_owned(),
            status: format!("counted {} keys at revision {} but sent {sent}", self.expected_keys, self.revision),
        }))
    }

    /// One page from `key` at `revision` (`None`: the first page, at upstream's current
    /// revision); answers its key-values and where the next page starts.
    async fn read(&mut self, key: Vec<u8>, revision: Option<i64>) -> Result<(Vec<KeyValue>, Option<Vec<u8>>), Failed> {
        let request = RangeRequest {
            key,
            range_end: self.range_end.clone(),
            limit: self.options.page_size,
            revision: revision.unwrap_or(0),
            ..RangeRequest::default()
        };
        let kv = self.kv.clone();
        let resp = self
            .options
            .upstream
            .call(&self.channel, move |token| {
                let (mut kv, request) = (kv.clone(), authorized(request.clone(), token.as_ref()));
                async move { kv.range(request).await }
            })
            .await
            .map_err(|s| classify(self.endpoint, &s, revision))?
            .into_inner();
        if revision.is_none() {
            self.revision = resp.header.as_ref().map_or(0, |h| h.revision);
            self.cluster_id = resp.header.as_ref().map_or(0, |h| h.cluster_id);
            self.expected_keys = resp.count;
        }
        let next_key = resp.kvs.last().filter(|_| resp.more).map(|last| {
            let mut key = last.key.clone();
            key.push(0);
            key
        });
        let kvs = resp.kvs.into_iter().map(from_key_value).collect();
        Ok((kvs, next_key))
    }
}

/// Whether another attempt may cure a failed upstream request.
fn classify(endpoint: &str, status: &Status, revision: Option<i64>) -> Failed {
    // etcd: api/v3rpc/rpctypes ErrGRPCCompacted (OutOfRange).
    if status.code() == Code::OutOfRange && status.message().contains("required revision has been compacted") {
        let at = revision.map_or_else(String::new, |r| format!(" past revision {r}"));
        return Failed::Retry(format!("upstream compacted{at} during the read"));
    }
    match status.code() {
        // A connection lost mid-call comes back from tonic as `Unknown` ("transport error")
        // or `Internal` (an h2 reset or GOAWAY) where grpc-go says `Unavailable`; and etcd's
        // "too many requests" is `ResourceExhausted`. The import only reads: any retry is safe.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::Unknown
        | Code::Internal => Failed::Retry(status_text(status, endpoint)),
        _ => Failed::Fatal(ImportError::Upstream {
            endpoint: endpoint.to_owned(),
            status: status_text(status, endpoint),
        }),
    }
}

/// The range request's `key` and `range_end` for `prefix` (etcd clientv3 `GetPrefixRangeEnd`);
/// the empty prefix is the whole keyspace (`"\0"` to `"\0"`).
pub(crate) fn key_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.to_vec(), end);
        }
    }
    // Every byte is 0xff: no key sorts after the prefix, so the range runs to the end.
    (prefix.to_vec(), vec![0])
}

/// Leaves `dir` as the import found it: removed if it did not exist, emptied if it did.
fn clean_dir(dir: &Path, existed: bool) {
    let cleaned = if existed {
        std::fs::read_dir(dir).and_then(|entries| {
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
            Ok(())
        })
    } else if dir.exists() {
        std::fs::remove_dir_all(dir)
    } else {
        Ok(())
    };
    if let Err(e) = cleaned {
        tracing::error!(dir = %dir.display(), error = %e, "could not clean up after a failed import");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
    use std::sync::Arc;

    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;
    use crate::api::pb::etcdserverpb::kv_server::{Kv, KvServer};
    use crate::api::pb::etcdserverpb::{RangeResponse, ResponseHeader};
    use crate::api::pb::mvccpb;

    /// An upstream KV service that serves five fixed keys, answers each first page (revision 0)
    /// at a revision one higher than the last, and refuses the next `compactions` pages at a
    /// fixed revision as compacted.
    #[derive(Clone, Default)]
    struct CompactingUpstream {
        revision: Arc<AtomicI64>,
        compactions: Arc<AtomicU32>,
    }

    impl CompactingUpstream {
        fn keys() -> Vec<mvccpb::KeyValue> {
            (0..5)
                .map(|i| mvccpb::KeyValue {
                    key: format!("k{i}").into_bytes(),
                    create_revision: 2 + i,
                    mod_revision: 2 + i,
                    version: 1,
                    value: vec![b'v'; 3],
                    lease: 0,
                })
                .collect()
        }
    }

    #[tonic::async_trait]
    impl Kv for CompactingUpstream {
        async fn range(&self, request: tonic::Request<RangeRequest>) -> Result<tonic::Response<RangeResponse>, Status> {
            let req = request.into_inner();
            let revision = if req.revision == 0 {
                self.revision.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                let refuse = self.compactions.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                if refuse.is_ok() {
                    return Err(Status::out_of_range("etcdserver: mvcc: required revision has been compacted"));
                }
                req.revision
            };
            let all: Vec<_> = Self::keys().into_iter().filter(|kv| kv.key >= req.key).collect();
            let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
            Ok(tonic::Response::new(RangeResponse {
                header: Some(ResponseHeader { revision, ..ResponseHeader::default() }),
                more: all.len() > limit,
                count: i64::try_from(all.len()).unwrap_or(i64::MAX),
                kvs: all.into_iter().take(limit).collect(),
            }))
        }
    }

    /// Serves `upstream` on a free loopback port; returns its URL.
    async fn serve(upstream: CompactingUpstream) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(KvServer::new(upstream))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        url
    }

    #[tokio::test]
    async fn a_compaction_upstream_during_the_read_starts_the_import_over_at_a_new_revision() {
        let upstream = CompactingUpstream::default();
        upstream.revision.store(9, Ordering::SeqCst);
        upstream.compactions.store(2, Ordering::SeqCst);
        let url = serve(upstream).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut options = ImportOptions::new(UpstreamEtcd::plain(&[url]).expect("upstream"));
        options.page_size = 2;
        options.retry_delay = Duration::from_millis(1);
        let report = import_from_etcd(StoreConfig::new(&data), &options).await.expect("import");
        // Revisions 10 and 11 were compacted after their first page; the third read, at 12, went through.
        assert_eq!(report.attempts, 3);
        assert_eq!(report.imported, ImportedSnapshot { revision: 12, keys: 5, leased_keys: 0 });
        let store = KvStore::open(StoreConfig::new(&data)).expect("open");
        assert_eq!((store.current_rev(), store.compact_rev()), (12, 12));
        let got = store.range(&watchkv::RangeRequest::new(watchkv::KeyRange::FromKey(vec![0]))).expect("range");
        let want: Vec<_> = CompactingUpstream::keys().into_iter().map(|kv| (kv.key, kv.mod_revision)).collect();
        assert_eq!(got.kvs.into_iter().map(|kv| (kv.key, kv.mod_revision)).collect::<Vec<_>>(), want);
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_moves_the_import_to_the_next() {
        let upstream = CompactingUpstream::default();
        upstream.revision.store(9, Ordering::SeqCst);
        let url = serve(upstream).await;
        // Nothing listens on a port the OS just handed out and took back.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
        let dir = tempfile::tempdir().expect("temp dir");
        let options =
            ImportOptions::new(UpstreamEtcd::plain(&[format!("http://{dead}"), url.clone()]).expect("upstream"));
        let report = import_from_etcd(StoreConfig::new(dir.path()), &options).await.expect("import");
        assert_eq!((report.attempts, report.endpoint.as_str(), report.imported.keys), (2, url.as_str(), 5));
    }

    #[tokio::test]
    async fn an_import_that_keeps_meeting_compactions_gives_up_and_leaves_no_directory() {
        let upstream = CompactingUpstream::default();
        upstream.revision.store(9, Ordering::SeqCst);
        upstream.compactions.store(u32::MAX, Ordering::SeqCst);
        let url = serve(upstream).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut options = ImportOptions::new(UpstreamEtcd::plain(&[url]).expect("upstream"));
        options.page_size = 2;
        options.max_attempts = 3;
        options.retry_delay = Duration::from_millis(1);
        let err = import_from_etcd(StoreConfig::new(&data), &options).await.expect_err("gives up");
        assert!(matches!(&err, ImportError::GaveUp { attempts: 3, last } if last.contains("compacted")), "{err}");
        assert!(!data.exists(), "a failed import leaves no directory behind");
    }

    #[test]
    fn retries_pause_between_passes_over_the_endpoints_doubling_up_to_five_seconds() {
        let ms = Duration::from_millis;
        let one: Vec<_> = (1..=8).map(|a| pause_before(a, 1, ms(200))).collect();
        assert_eq!(one, [ms(0), ms(200), ms(400), ms(800), ms(1600), ms(3200), ms(5000), ms(5000)]);
        let three: Vec<_> = (1..=7).map(|a| pause_before(a, 3, ms(200))).collect();
        assert_eq!(three, [ms(0), ms(0), ms(0), ms(200), ms(0), ms(0), ms(400)]);
        assert_eq!(pause_before(u32::MAX, 1, ms(200)), ms(5000));
    }

    #[tokio::test]
    async fn an_upstream_that_comes_up_during_the_retries_is_imported() {
        // A port nothing listens on yet; the upstream starts on it 300 ms after the import.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the upstream's port");
            let upstream = CompactingUpstream::default();
            upstream.revision.store(9, Ordering::SeqCst);
            tonic::transport::Server::builder()
                .add_service(KvServer::new(upstream))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let options = ImportOptions::new(UpstreamEtcd::plain(&[format!("http://{addr}")]).expect("upstream"));
        let report = import_from_etcd(StoreConfig::new(dir.path()), &options).await.expect("import");
        assert!(report.attempts > 1, "{report:?}");
        assert_eq!(report.imported.keys, 5);
    }

    #[test]
    fn prefix_ranges_are_clientv3s() {
        assert_eq!(key_range(b""), (vec![0], vec![0]));
        assert_eq!(key_range(b"a/"), (b"a/".to_vec(), b"a0".to_vec()));
        assert_eq!(key_range(b"a\xff"), (b"a\xff".to_vec(), b"b".to_vec()));
        assert_eq!(key_range(b"\xff\xff"), (b"\xff\xff".to_vec(), vec![0]));
    }

    #[test]
    fn a_compaction_or_an_unreachable_member_starts_over_and_other_refusals_do_not() {
        let compacted = Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert!(matches!(classify("e", &compacted, Some(7)), Failed::Retry(why) if why.contains("past revision 7")));
        assert!(matches!(classify("e", &Status::unavailable("no leader"), None), Failed::Retry(_)));
        // A connection lost mid-read, as tonic reports it (grpc-go would say `Unavailable`).
        assert!(matches!(classify("e", &Status::unknown("transport error"), None), Failed::Retry(_)));
        assert!(matches!(classify("e", &Status::internal("h2 protocol error: stream reset"), None), Failed::Retry(_)));
        assert!(matches!(
            classify("e", &Status::resource_exhausted("etcdserver: too many requests"), None),
            Failed::Retry(_)
        ));
        let denied = Status::permission_denied("etcdserver: permission denied");
        assert!(matches!(
            classify("e", &denied, None),
            Failed::Fatal(ImportError::Upstream { status, .. }) if status.contains("permission denied")
        ));
    }
}
