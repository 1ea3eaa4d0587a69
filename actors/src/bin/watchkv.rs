//! The `watchkv` server: etcd's gRPC API and HTTP/JSON gateway on one client port, over a local
//! fjall data directory. Starts with no configuration (`./watchkv.data`, `127.0.0.1:2379`);
//! SIGINT/SIGTERM finish in-flight writes, sync the store and end every watch stream (over gRPC
//! with `Unavailable`, which etcd's clients retry)
//! before exiting. Where the configuration has a default and a range for a flag
//! (`watchkv::config`, `watchkv_actors::config`), the flag takes them, so a value out of range
//! is refused here with the range in the message rather than clamped.
//!
//! `watchkv snapshot restore FILE --data-dir DIR` and `watchkv snapshot status FILE` work on
//! the snapshot files `etcdctl snapshot save` takes from a running server; `watchkv import
//! --from URL --data-dir DIR` copies a running etcd's keyspace at one revision into a new data
//! directory (`watchkv_actors::import`). With `--upstream URL` the server is a mirror of that
//! etcd (`watchkv_actors::mirror`): it follows upstream's revisions and forwards writes and
//! lease calls to upstream (`watchkv_actors::forward`).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::RangedU64ValueParser;
use clap::Parser;
use watchkv::alarm::DEFAULT_QUOTA_BACKEND_BYTES;
use watchkv::auto_compaction::AutoCompaction;
use watchkv::config::{
    CHAN_BUF_LEN_RANGE, COMPACTION_BATCH_LIMIT_RANGE, DEFAULT_CHAN_BUF_LEN, DEFAULT_COMPACTION_BATCH_LIMIT,
    DEFAULT_DURABILITY, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS,
    DEFAULT_MAX_WATCHERS_PER_SYNC, DEFAULT_PROGRESS_NOTIFY_INTERVAL_MS, DEFAULT_VICTIM_RETRY_PERIOD_MS,
    DEFAULT_WATCH_BATCH_MAX_REVS, DEFAULT_WATCH_RESYNC_PERIOD_MS, MAX_BATCH_BYTES_RANGE, MAX_REQUEST_BYTES_RANGE,
    MAX_TXN_OPS_RANGE, MAX_WATCHERS_PER_SYNC_RANGE, PROGRESS_NOTIFY_INTERVAL_MS_RANGE, VICTIM_RETRY_PERIOD_MS_RANGE,
    WATCH_BATCH_MAX_REVS_RANGE, WATCH_RESYNC_PERIOD_MS_RANGE,
};
use watchkv::{Durability, StoreConfig, WatchConfig};
use watchkv_actors::api::auth::DEFAULT_BCRYPT_COST;
use watchkv_actors::config::{
    DEFAULT_CATCH_UP_PRIORITY, DEFAULT_IDLE_POLL_US, DEFAULT_MAX_WATCHERS_PER_STREAM, IDLE_POLL_US_RANGE,
    MAX_WATCHERS_PER_STREAM_RANGE, SLOW_CONSUMER_LAG_RANGE,
};
use watchkv_actors::gateway::Gateway;
use watchkv_actors::grpc::GrpcApi;
use watchkv_actors::listener::{self, PortOptions, WORKERS_RANGE};
use watchkv_actors::mirror::{self, MirrorOptions};
use watchkv_actors::tls::{ServerTls, TlsFiles};
use watchkv_actors::upstream::{Credentials, UpstreamEtcd, UpstreamTls};
use watchkv_actors::{ActorsConfig, CatchUpPriority, SlowConsumerPolicy};

/// How long a slow consumer may stay undeliverable by default when `--slow-consumer-lag` turns
/// the policy on: a flag of the binary only (the library's default policy keeps every watcher).
const DEFAULT_SLOW_CONSUMER_PARKED_SECS: u64 = 300;

/// etcd's default `--auth-token-ttl`, in seconds.
const DEFAULT_AUTH_TOKEN_TTL_SECS: u64 = 300;

/// Parses a `usize` flag inside `range`.
fn usize_in(range: RangeInclusive<usize>) -> RangedU64ValueParser<usize> {
    let bound = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    RangedU64ValueParser::new().range(bound(*range.start())..=bound(*range.end()))
}

/// Parses one of `--advertise-client-urls` as etcd does (client/pkg/types/urls.go `NewURLs`):
/// `http` and `https` URLs need a `host:port` and no path; `unix` and `unixs` are taken as given.
/// Stricter in one point: Go's `SplitHostPort` lets an empty host or port through
/// (`http://:2379`), which no client could dial.
fn client_url(value: &str) -> Result<String, String> {
    let url = value.trim();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..end];
            // Go's URL parser keeps a query and a fragment apart from the path.
            let path = rest[end..].split(['?', '#']).next().unwrap_or("");
            if !has_host_and_port(authority) {
                return Err(format!("URL address does not have the form \"host:port\": {url}"));
            }
            if !path.is_empty() {
                return Err(format!("URL must not contain a path: {url}"));
            }
            Ok(url.to_string())
        }
        "unix" | "unixs" => Ok(url.to_string()),
        _ => Err(format!("URL scheme must be http, https, unix, or unixs: {url}")),
    }
}

/// Whether `authority` is `host:port` (`[v6]:port` for an IPv6 host), as Go's
/// `net.SplitHostPort` reads it: one colon outside brackets, before a non-empty port.
fn has_host_and_port(authority: &str) -> bool {
    // Go's URL parser puts `user:password@` apart from the host.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once("]:") {
            Some((host, port)) => (host, port),
            None => return false,
        },
        None => match authority.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, port),
            _ => return false,
        },
    };
    !host.is_empty() && !port.is_empty()
}

/// Parses a Go duration flag (`2h`, `20s`, `1m30s`), as etcd's `flag.Duration` reads it.
fn go_duration(value: &str) -> Result<Duration, String> {
    watchkv::auto_compaction::parse_go_duration(value)
}

/// Parses a `u64` flag inside `range`.
fn u64_in(range: RangeInclusive<u64>) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::new().range(range)
}

/// An etcd-v3-compatible watchable key-value store (etcd gRPC API and HTTP/JSON gateway).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Without a command, the server runs.
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory of the store; created if missing.
    #[arg(long, env = "WATCHKV_DATA_DIR", default_value = "./watchkv.data")]
    data_dir: std::path::PathBuf,
    /// Client address: gRPC (HTTP/2) and the HTTP/JSON gateway (HTTP/1.1) share it, as in etcd.
    #[arg(long, env = "WATCHKV_LISTEN", default_value = "127.0.0.1:2379")]
    listen: String,
    /// The client URL, as etcd's flag (one URL, instead of --listen): `https://host:port` serves
    /// TLS and needs --cert-file and --key-file; `http://host:port` serves plain TCP even when
    /// they are given, as etcd does.
    #[arg(long, conflicts_with = "listen")]
    listen_client_urls: Option<String>,
    /// Client URLs this member reports in `MemberList` (comma-separated); by default
    /// `http://<listen>` (`https://` with TLS). Set it when listening on a wildcard address, as
    /// with etcd's flag.
    #[arg(long, value_delimiter = ',', value_parser = client_url)]
    advertise_client_urls: Vec<String>,
    /// Also serve `/metrics` and `/health` on these URLs (comma-separated `http://ip:port` or
    /// `https://ip:port`), and nothing else, as etcd's flag: for a probe or a scraper while the
    /// client port is firewalled or requires client certificates. An `https` URL uses
    /// --cert-file and --key-file (and --trusted-ca-file, --client-cert-auth) as the client
    /// port does.
    #[arg(long, value_delimiter = ',')]
    listen_metrics_urls: Vec<String>,
    /// The client port's TLS certificate (PEM, leaf first), as etcd's flag: with --key-file it
    /// turns TLS on for gRPC and the gateway.
    #[arg(long)]
    cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM), as etcd's flag.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign client certificates, as etcd's flag. As in etcd 3.4,
    /// giving it makes a client certificate signed by one of them required.
    #[arg(long)]
    trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by --trusted-ca-file, as etcd's flag; its Common
    /// Name is the user.
    #[arg(long)]
    client_cert_auth: bool,
    /// `fsync` (every acknowledged write is on disk) or `buffered` (survives a crash of the
    /// process, may lose the last seconds on power loss).
    #[arg(long, default_value_t = DEFAULT_DURABILITY)]
    durability: Durability,
    /// Responses each watch stream holds for its client before deliveries make victims (etcd
    /// chanBufLen).
    #[arg(long, default_value_t = DEFAULT_CHAN_BUF_LEN, value_parser = usize_in(CHAN_BUF_LEN_RANGE))]
    chan_buf_len: usize,
    /// Unsynced watchers handled per catch-up pass (etcd maxWatchersPerSync).
    #[arg(long, default_value_t = DEFAULT_MAX_WATCHERS_PER_SYNC, value_parser = usize_in(MAX_WATCHERS_PER_SYNC_RANGE))]
    max_watchers_per_sync: usize,
    /// Catch-up period in milliseconds (etcd watchResyncPeriod).
    #[arg(long, default_value_t = DEFAULT_WATCH_RESYNC_PERIOD_MS, value_parser = u64_in(WATCH_RESYNC_PERIOD_MS_RANGE))]
    watch_resync_period_ms: u64,
    /// Victim retry period in milliseconds.
    #[arg(long, default_value_t = DEFAULT_VICTIM_RETRY_PERIOD_MS, value_parser = u64_in(VICTIM_RETRY_PERIOD_MS_RANGE))]
    victim_retry_period_ms: u64,
    /// Most revisions in one catch-up response (etcd watchBatchMaxRevs).
    #[arg(long, default_value_t = DEFAULT_WATCH_BATCH_MAX_REVS, value_parser = usize_in(WATCH_BATCH_MAX_REVS_RANGE))]
    watch_batch_max_revs: usize,
    /// Most bytes of events joined into one watch response (a catch-up batch, a group commit, a
    /// lagging watcher's merged responses); a single larger revision still goes whole. Keep it
    /// under clients' message limit (4 MiB by default in grpc-go and tonic).
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_BYTES, value_parser = usize_in(MAX_BATCH_BYTES_RANGE))]
    watch_batch_max_bytes: usize,
    /// Period of progress notifications in milliseconds (etcd default 10 minutes; at least
    /// 100 ms, etcd's floor).
    #[arg(
        long,
        default_value_t = DEFAULT_PROGRESS_NOTIFY_INTERVAL_MS,
        value_parser = u64_in(PROGRESS_NOTIFY_INTERVAL_MS_RANGE)
    )]
    progress_notify_interval_ms: u64,
    /// Largest request body in bytes (etcd max-request-bytes); gRPC messages may be 512 KiB
    /// larger, for framing, as in etcd.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES, value_parser = usize_in(MAX_REQUEST_BYTES_RANGE))]
    max_request_bytes: usize,
    /// Origins a browser page may call the HTTP/JSON gateway from, comma-separated, `*` for
    /// any, empty for none (etcd --cors): responses carry the `Access-Control-Allow-*`
    /// headers and `OPTIONS` is answered, as etcd does.
    #[arg(long, default_value = "*")]
    cors: watchkv_actors::gateway::Cors,
    /// Most operations per txn list (etcd max-txn-ops).
    #[arg(long, default_value_t = DEFAULT_MAX_TXN_OPS, value_parser = usize_in(MAX_TXN_OPS_RANGE))]
    max_txn_ops: usize,
    /// Rows deleted per physical compaction batch.
    #[arg(
        long,
        default_value_t = DEFAULT_COMPACTION_BATCH_LIMIT,
        value_parser = usize_in(COMPACTION_BATCH_LIMIT_RANGE)
    )]
    compaction_batch_limit: usize,
    /// Most watchers on one stream.
    #[arg(
        long,
        default_value_t = DEFAULT_MAX_WATCHERS_PER_STREAM,
        value_parser = usize_in(MAX_WATCHERS_PER_STREAM_RANGE)
    )]
    max_watchers_per_stream: usize,
    /// Cancel a watcher whose client stopped reading once this many revisions have been
    /// committed while it was undeliverable (0 = never, etcd's behaviour).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=*SLOW_CONSUMER_LAG_RANGE.end()))]
    slow_consumer_lag: i64,
    /// With --slow-consumer-lag: also cancel after this many seconds undeliverable.
    #[arg(long, default_value_t = DEFAULT_SLOW_CONSUMER_PARKED_SECS)]
    slow_consumer_parked_secs: u64,
    /// CPU priority of the catch-up thread (Linux): `idle` (SCHED_IDLE: catch-up only uses
    /// cycles nothing else wants, so it never delays a write), a nice value `0`..=`19` (more
    /// catch-up progress on a fully busy machine, longer write stalls), or `unchanged`.
    #[arg(long, default_value_t = DEFAULT_CATCH_UP_PRIORITY)]
    catch_up_priority: CatchUpPriority,
    /// Microseconds a client-port thread or the store's thread keeps polling for the next
    /// request or answer instead of sleeping after a write (0 = off; not under a cgroup CPU
    /// quota, and while watch events flow only while CPU pressure is low): saves the wake-ups
    /// between a write's threads, at the price of CPU time that would otherwise idle.
    #[arg(long, default_value_t = DEFAULT_IDLE_POLL_US, value_parser = clap::value_parser!(u64).range(*IDLE_POLL_US_RANGE.start()..=*IDLE_POLL_US_RANGE.end()))]
    idle_poll_us: u64,
    /// Space quota in bytes, as etcd's flag: beyond it a write that adds data raises the NOSPACE
    /// alarm and is refused until the operator compacts, defragments and disarms. 0 = etcd's
    /// default (2 GiB); negative = no quota.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    quota_backend_bytes: i64,
    /// Automatic compaction mode, as etcd's flag: `periodic` (keep a span of time) or
    /// `revision` (keep a number of revisions).
    #[arg(long, default_value = "periodic")]
    auto_compaction_mode: String,
    /// Automatic compaction retention, as etcd's flag: for `periodic` hours (`1`) or a duration
    /// (`30m`, `1h30m`), for `revision` a number of revisions. 0 = off (etcd's default).
    #[arg(long, default_value = "0")]
    auto_compaction_retention: String,
    /// How often to check the store's history against the hash taken after the last
    /// compaction, raising the CORRUPT alarm if it changed (etcd's flag; a Go duration such as
    /// `5m`; `0s` = off).
    #[arg(long, default_value = "0s")]
    experimental_corrupt_check_time: String,
    /// Seconds an auth token may go unused before it expires (etcd's flag); 0 is taken as the
    /// default, as etcd takes it.
    #[arg(long, default_value_t = DEFAULT_AUTH_TOKEN_TTL_SECS, value_parser = clap::value_parser!(u64).range(0..=86_400 * 365))]
    auth_token_ttl: u64,
    /// bcrypt cost of password hashes (etcd's flag).
    #[arg(long, default_value_t = DEFAULT_BCRYPT_COST, value_parser = clap::value_parser!(u32).range(4..=31))]
    bcrypt_cost: u32,
    /// Worker threads serving the client port (default: one per core).
    #[arg(long, value_parser = usize_in(WORKERS_RANGE))]
    workers: Option<usize>,
    /// How long a gRPC connection may stay silent before the server pings its client, as etcd's
    /// flag (a Go duration; `0s`: no pings). A client gone without closing its socket holds its
    /// watchers until its unanswered ping closes the connection.
    #[arg(long, default_value = "2h", value_parser = go_duration)]
    grpc_keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed, as etcd's flag (a Go
    /// duration; `0s`: no pings).
    #[arg(long, default_value = "20s", value_parser = go_duration)]
    grpc_keepalive_timeout: Duration,
    /// Calls each gRPC connection may have open at a time (watch and keep-alive streams
    /// included), as etcd's flag; the default, 2^32 - 1, is no limit.
    #[arg(long, default_value_t = u32::MAX, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_streams: u32,
    /// Log level, as etcd's flag (`debug`, `info`, `warn`, `error`; `dpanic`, `panic` and
    /// `fatal` log errors). Without it `RUST_LOG` decides (a filter per module; when unset
    /// `info`, `warn` for the `snapshot` and `import` commands).
    #[arg(long)]
    log_level: Option<LogLevel>,
    /// Mirror mode: upstream etcd client URLs (`http://host:port`, `https://host:port` or
    /// `host:port`, comma-separated). An empty data directory is bootstrapped from upstream, then
    /// the node follows upstream's revisions with one watch and serves reads and watches; writes
    /// and lease calls are forwarded to upstream.
    #[arg(long, value_delimiter = ',')]
    upstream: Vec<String>,
    /// With --upstream: mirror only the keys under this prefix.
    #[arg(long, requires = "upstream")]
    upstream_prefix: Option<String>,
    /// With --upstream: trust only these CA certificates (PEM) for upstream's TLS (etcdctl's
    /// --cacert). Without it, `https://` upstreams are checked against Mozilla's roots.
    #[arg(long, requires = "upstream", value_name = "FILE")]
    upstream_cacert: Option<PathBuf>,
    /// With --upstream: the client certificate (PEM) to present to upstream (etcdctl's --cert).
    #[arg(long, requires = "upstream", value_name = "FILE")]
    upstream_cert: Option<PathBuf>,
    /// With --upstream: the client certificate's key (PEM) (etcdctl's --key).
    #[arg(long, requires = "upstream", value_name = "FILE")]
    upstream_key: Option<PathBuf>,
    /// With --upstream: authenticate to upstream as this user (etcdctl's --user).
    #[arg(long, requires = "upstream", value_name = "NAME[:PASSWORD]")]
    upstream_user: Option<String>,
    /// The password for --upstream-user NAME (etcdctl's --password).
    #[arg(long, requires = "upstream_user", value_name = "PASSWORD")]
    upstream_password: Option<String>,
}

/// Upstream's endpoints, TLS files and credentials from etcdctl-style flags, checked now.
fn upstream_etcd(
    endpoints: &[String],
    tls: UpstreamTls,
    user: Option<&str>,
    password: Option<&str>,
) -> anyhow::Result<UpstreamEtcd> {
    let credentials = user.map(|user| Credentials::from_flags(user, password)).transpose()?;
    Ok(UpstreamEtcd::new(endpoints, &tls, credentials)?)
}

/// What the binary does instead of serving.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Snapshot files (take one from a running server with `etcdctl snapshot save FILE`).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Copies a running etcd's keyspace (or one prefix) as it is at one revision R into a new
    /// data directory: keys keep upstream's create and mod revisions, versions and lease ids, R
    /// becomes the compact revision. Leases are not copied. Then serve it with `--data-dir DIR`.
    Import(ImportCommand),
}

/// `watchkv import ...`.
#[derive(Debug, clap::Args)]
struct ImportCommand {
    /// Upstream etcd client URLs (`http://host:port`, `https://host:port` or `host:port`),
    /// comma-separated; tried in turn.
    #[arg(long = "from", value_delimiter = ',', required = true)]
    from: Vec<String>,
    /// The data directory to create (missing or empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// Import only the keys under this prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Upstream credentials, when upstream has auth enabled (etcdctl's flag).
    #[arg(long, value_name = "NAME[:PASSWORD]")]
    user: Option<String>,
    /// The password for --user NAME (etcdctl's flag).
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// Trust only these CA certificates (PEM) for upstream's TLS (etcdctl's flag). Without it,
    /// `https://` upstreams are checked against Mozilla's roots.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// The client certificate (PEM) to present to upstream (etcdctl's flag).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// The client certificate's key (PEM) (etcdctl's flag).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Keys per range request.
    #[arg(long, default_value_t = watchkv_actors::import::DEFAULT_PAGE_SIZE,
          value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    page_size: i64,
}

/// Runs `watchkv import`.
async fn import_command(command: &ImportCommand) -> anyhow::Result<()> {
    use watchkv_actors::import::{import_from_etcd, ImportOptions};
    let tls = UpstreamTls { cacert: command.cacert.clone(), cert: command.cert.clone(), key: command.key.clone() };
    let upstream = upstream_etcd(&command.from, tls, command.user.as_deref(), command.password.as_deref())
        .context("upstream (--from, --cacert, --cert, --key, --user, --password)")?;
    let mut options = ImportOptions::new(upstream);
    options.prefix = command.prefix.as_bytes().to_vec();
    options.page_size = command.page_size;
    let report = import_from_etcd(StoreConfig::new(&command.data_dir), &options)
        .await
        .with_context(|| format!("importing from {} into {}", command.from.join(","), command.data_dir.display()))?;
    let imported = report.imported;
    println!(
        "imported {} keys{} from {} into {}: revision {}, compact revision {}, {} keys with upstream lease ids (not \
         expired locally)",
        imported.keys,
        if command.prefix.is_empty() { String::new() } else { format!(" under {:?}", command.prefix) },
        report.endpoint,
        command.data_dir.display(),
        imported.revision,
        imported.revision,
        imported.leased_keys
    );
    Ok(())
}

/// `watchkv snapshot ...`.
#[derive(Debug, clap::Subcommand)]
enum SnapshotCommand {
    /// Restores FILE into a new data directory (missing or empty), at exactly the snapshot's
    /// revision, with its compact revision and leases; then serve it with `--data-dir DIR`.
    Restore {
        /// The snapshot file.
        file: std::path::PathBuf,
        /// The data directory to create.
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
    /// Checks FILE (format, length, sha256) and prints its revision, compact revision, record
    /// count, size and checksum.
    Status {
        /// The snapshot file.
        file: std::path::PathBuf,
        /// `simple` (one field a line) or `json`.
        #[arg(long, short = 'w', default_value = "simple", value_parser = ["simple", "json"])]
        write_out: String,
    },
}

/// Runs a snapshot command.
fn snapshot_command(command: &SnapshotCommand) -> anyhow::Result<()> {
    use watchkv::snapshot::{SnapshotKeyspace, SnapshotStatus};
    let keyspaces = |s: &SnapshotStatus| {
        SnapshotKeyspace::ALL
            .iter()
            .map(|k| format!("{} {}", k.name(), s.records_in(*k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match command {
        SnapshotCommand::Restore { file, data_dir } => {
            let restored = watchkv::KvStore::restore_snapshot(file, StoreConfig::new(data_dir))
                .with_context(|| format!("restoring {} into {}", file.display(), data_dir.display()))?;
            let h = restored.status.header;
            println!(
                "restored {} into {}: revision {}, compact revision {}, {} keys indexed, {} leases",
                file.display(),
                data_dir.display(),
                h.revision,
                h.compact_revision,
                restored.indexed_keys,
                restored.leases
            );
        }
        SnapshotCommand::Status { file, write_out } => {
            let status = watchkv::snapshot::read_file(file, |_| Ok(()))
                .with_context(|| format!("reading snapshot {}", file.display()))?;
            if write_out == "json" {
                let by_keyspace: serde_json::Map<String, serde_json::Value> = SnapshotKeyspace::ALL
                    .iter()
                    .map(|k| (k.name().to_string(), status.records_in(*k).into()))
                    .collect();
                let out = serde_json::json!({
                    "revision": status.header.revision,
                    "compactRevision": status.header.compact_revision,
                    "totalKey": status.total_records(),
                    "totalSize": status.total_size,
                    "sha256": status.sha256_hex(),
                    "keyspaces": by_keyspace,
                    "formatVersion": watchkv::snapshot::FORMAT_VERSION,
                });
                println!("{out}");
            } else {
                println!("revision: {}", status.header.revision);
                println!("compact revision: {}", status.header.compact_revision);
                println!("total keys: {} ({})", status.total_records(), keyspaces(&status));
                println!("total size: {} bytes", status.total_size);
                println!("sha256: {}", status.sha256_hex());
            }
        }
    }
    Ok(())
}

/// `--log-level`: etcd's levels (zap's), the least severe first.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Dpanic,
    Panic,
    Fatal,
}

impl LogLevel {
    /// The tracing filter logging this level and above: nothing here panics or exits through
    /// the log, so zap's `dpanic`, `panic` and `fatal` log errors.
    fn filter(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Dpanic | LogLevel::Panic | LogLevel::Fatal => "error",
        }
    }
}

/// Where the client port listens, and whether it serves TLS.
struct ClientPort {
    /// `host:port`.
    address: String,
    tls: Option<TlsFiles>,
}

/// One of `--listen-metrics-urls`: where it listens, and whether it serves TLS (with the
/// client port's certificate, as in etcd).
struct MetricsPort {
    /// The URL as given, for messages.
    url: String,
    /// `host:port`.
    address: String,
    secure: bool,
}

/// A listen URL (`--listen-client-urls`, `--listen-metrics-urls`) as etcd takes one to bind:
/// `http://host:port` or `https://host:port`, the host an IP address or `localhost` (etcd:
/// embed/config.go `checkBindURLs`: a name would bind wherever it resolves). Returns whether it
/// is `https` and its `host:port`. etcd also listens on `unix://` and `unixs://` URLs; watchkv
/// serves TCP only.
fn listen_url(flag: &str, url: &str) -> anyhow::Result<(bool, String)> {
    let expected = || anyhow::anyhow!("{flag} {url}: expected http://host:port or https://host:port");
    if url.is_empty() {
        // An empty entry in a list: etcd's text for a URL without a scheme.
        anyhow::bail!("URL scheme must be http, https, unix, or unixs: ");
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(expected)?;
    let secure = match scheme {
        "https" => true,
        "http" => false,
        "unix" | "unixs" => anyhow::bail!("{flag} {url}: unix sockets are not supported, only http and https"),
        _ => anyhow::bail!("URL scheme must be http, https, unix, or unixs: {url}"),
    };
    let address = rest.strip_suffix('/').unwrap_or(rest);
    if address.contains('/') || !has_host_and_port(address) {
        return Err(expected());
    }
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host != "localhost" && host.parse::<std::net::IpAddr>().is_err() {
        anyhow::bail!("{flag}: expected IP in URL for binding ({url})");
    }
    Ok((secure, address.to_string()))
}

/// Binds `address` (`host:port`). A name (`localhost`) binds its first IPv4 address when it
/// has one, as Go's `net.Listen` (and so etcd) does: getaddrinfo may list `::1` first, and a
/// probe of `127.0.0.1` would then be refused.
fn bind(address: &str) -> std::io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> = address.to_socket_addrs()?.collect();
    let addr = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, format!("{address} names no address"))
    })?;
    std::net::TcpListener::bind(addr)
}

impl Args {
    /// The TLS flags: a certificate and its key, or neither.
    fn tls_files(&self) -> anyhow::Result<Option<TlsFiles>> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                trusted_ca_file: self.trusted_ca_file.clone(),
                client_cert_auth: self.client_cert_auth,
                ..TlsFiles::new(cert, key)
            })),
            (None, None) => Ok(None),
            _ => anyhow::bail!("--cert-file and --key-file must both be given for TLS"),
        }
    }

    /// The client port from --listen or --listen-client-urls and the TLS flags, checked as etcd
    /// checks them (etcd: embed/etcd.go `configureClientListeners`).
    fn client_port(&self) -> anyhow::Result<ClientPort> {
        let files = self.tls_files()?;
        let Some(url) = &self.listen_client_urls else {
            if files.is_none() && (self.trusted_ca_file.is_some() || self.client_cert_auth) {
                tracing::warn!(
                    "no --cert-file and --key-file: TLS is off, ignoring --trusted-ca-file and --client-cert-auth"
                );
            }
            return Ok(ClientPort { address: self.listen.clone(), tls: files });
        };
        if url.contains(',') {
            anyhow::bail!("--listen-client-urls {url}: watchkv serves one client URL");
        }
        let (secure, address) = listen_url("--listen-client-urls", url)?;
        if secure && files.is_none() {
            anyhow::bail!(
                "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
            );
        }
        if !secure && files.is_some() {
            tracing::warn!(client_url = %url, "scheme is HTTP while key and cert files are present; ignoring key and cert files");
        }
        if !secure && self.client_cert_auth {
            tracing::warn!(client_url = %url, "scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth for this URL");
        }
        Ok(ClientPort { address, tls: files.filter(|_| secure) })
    }

    /// The metrics ports of --listen-metrics-urls: an `https://` one serves TLS with the client
    /// port's certificate and client-certificate checks (etcd: embed/etcd.go `serveMetrics`
    /// uses the client TLS info), whatever the client URL's scheme.
    ///
    /// As etcd 3.4.23 reads the list: a value that is empty as a whole (an unset variable)
    /// names none, each URL is trimmed, and an empty one among others is refused (a repeated
    /// one fails to bind the second time, as in etcd).
    fn metrics_ports(&self) -> anyhow::Result<Vec<MetricsPort>> {
        let mut ports = Vec::new();
        if self.listen_metrics_urls.iter().all(String::is_empty) {
            return Ok(ports);
        }
        for url in self.listen_metrics_urls.iter().map(|u| u.trim()) {
            let (secure, address) = listen_url("--listen-metrics-urls", url)?;
            if secure && self.cert_file.is_none() {
                // etcd's text (pkg/transport/listener.go `newTLSListener`).
                anyhow::bail!("cannot listen on TLS for {address}: KeyFile and CertFile are not presented");
            }
            ports.push(MetricsPort { url: url.to_string(), address, secure });
        }
        Ok(ports)
    }

    /// Refuses a wildcard client address without `--advertise-client-urls`: `MemberList` would
    /// advertise `0.0.0.0`, and a client that syncs its endpoints from it (clientv3's
    /// `AutoSyncInterval`, `Sync`) would lose the server. etcd refuses to start then too
    /// (embed/config.go `Validate`, `ErrUnsetAdvertiseClientURLsFlag`).
    fn check_advertised(&self, port: &ClientPort) -> anyhow::Result<()> {
        let wildcard = port.address.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_unspecified());
        if wildcard && self.advertise_client_urls.is_empty() {
            anyhow::bail!(
                "--advertise-client-urls is required when listening on {} (a wildcard address is what \
                 MemberList would advertise, which clients cannot dial)",
                port.address
            );
        }
        Ok(())
    }

    /// The runtime's configuration: clap has checked every value against the range its setter
    /// accepts.
    fn config(&self) -> anyhow::Result<ActorsConfig> {
        let store = StoreConfig::new(&self.data_dir)
            .with_durability(self.durability)
            .with_max_txn_ops(self.max_txn_ops)
            .with_compaction_batch_limit(self.compaction_batch_limit)
            .with_quota_backend_bytes(match self.quota_backend_bytes {
                q if q < 0 => None,
                0 => Some(DEFAULT_QUOTA_BACKEND_BYTES),
                q => Some(q.unsigned_abs()),
            });
        let watch = WatchConfig::default()
            .with_chan_buf_len(self.chan_buf_len)
            .with_max_watchers_per_sync(self.max_watchers_per_sync)
            .with_watch_resync_period(Duration::from_millis(self.watch_resync_period_ms))
            .with_victim_retry_period(Duration::from_millis(self.victim_retry_period_ms))
            .with_watch_batch_max_revs(self.watch_batch_max_revs)
            .with_max_batch_bytes(self.watch_batch_max_bytes)
            .with_progress_notify_interval(Duration::from_millis(self.progress_notify_interval_ms))
            .with_max_request_bytes(self.max_request_bytes);
        let mut config = ActorsConfig::new(&self.data_dir)
            .with_store(store)
            .with_watch(watch)
            .with_max_watchers_per_stream(self.max_watchers_per_stream)
            .with_catch_up_priority(self.catch_up_priority)
            .with_idle_poll(Duration::from_micros(self.idle_poll_us))
            .with_auth_token_ttl(Duration::from_secs(match self.auth_token_ttl {
                // etcd: auth/simple_token.go `newSimpleTokenKeeper`, a TTL of 0 or less is 300 s.
                0 => DEFAULT_AUTH_TOKEN_TTL_SECS,
                ttl => ttl,
            }))
            .with_bcrypt_cost(self.bcrypt_cost)
            .with_mirror(!self.upstream.is_empty());
        let auto_compaction = AutoCompaction::from_flags(&self.auto_compaction_mode, &self.auto_compaction_retention)?;
        let corrupt_check = watchkv::auto_compaction::parse_go_duration(&self.experimental_corrupt_check_time)
            .map_err(|e| {
                anyhow::anyhow!("--experimental-corrupt-check-time {:?}: {e}", self.experimental_corrupt_check_time)
            })?;
        config = config.with_integrity_check_interval((!corrupt_check.is_zero()).then_some(corrupt_check));
        config = config.with_auto_compaction(auto_compaction);
        if self.slow_consumer_lag > 0 {
            config = config.with_slow_consumer(SlowConsumerPolicy::CancelAfter {
                lag_revisions: self.slow_consumer_lag,
                parked_for: Duration::from_secs(self.slow_consumer_parked_secs),
            });
        }
        Ok(config)
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A command (snapshot, import) prints its own result; the storage engine's progress is noise there.
    let default_level = if args.command.is_some() { "warn" } else { "info" };
    let filter = match args.log_level {
        Some(level) => level.filter().into(),
        None => tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into()),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| LossyStdout).init();
    match &args.command {
        Some(Command::Snapshot(command)) => return snapshot_command(command),
        Some(Command::Import(command)) => return import_command(command).await,
        None => {}
    }
    let port = args.client_port()?;
    args.check_advertised(&port)?;
    let tls = match &port.tls {
        Some(files) => Some(ServerTls::from_files(files).context("TLS on the client port")?),
        None => None,
    };
    let config = args.config()?;
    // The port first, as etcd binds its listeners before it opens its data (embed.StartEtcd):
    // a port in use fails at once, before a long open or a mirror's bootstrap. Clients that
    // connect meanwhile wait in the listen backlog.
    let listener = bind(&port.address).with_context(|| format!("binding {}", port.address))?;
    let metrics_ports = args.metrics_ports()?;
    // The client port's certificate and checks (`metrics_ports` refused an https URL without
    // them), read again when the client URL is plain.
    let metrics_tls = match (&tls, args.tls_files()?) {
        _ if !metrics_ports.iter().any(|m| m.secure) => None,
        (Some(tls), _) => Some(tls.clone()),
        (None, files) => files.map(|f| ServerTls::from_files(&f)).transpose().context("TLS on the metrics port")?,
    };
    let mut metrics_listeners = Vec::new();
    for metrics in metrics_ports {
        let listener =
            bind(&metrics.address).with_context(|| format!("binding {} (--listen-metrics-urls)", metrics.url))?;
        metrics_listeners
            .push(listener::MetricsListener { listener, tls: metrics_tls.clone().filter(|_| metrics.secure) });
    }
    let mirror = if args.upstream.is_empty() {
        None
    } else {
        let tls = UpstreamTls {
            cacert: args.upstream_cacert.clone(),
            cert: args.upstream_cert.clone(),
            key: args.upstream_key.clone(),
        };
        let upstream =
            upstream_etcd(&args.upstream, tls, args.upstream_user.as_deref(), args.upstream_password.as_deref())
                .context(
                    "upstream (--upstream, --upstream-cacert, --upstream-cert, --upstream-key, --upstream-user)",
                )?;
        let options = MirrorOptions { upstream, prefix: args.upstream_prefix.clone().unwrap_or_default().into_bytes() };
        let bootstrapped = when_unlocked(&args.data_dir, || mirror::bootstrap(config.store(), &options)).await?;
        if let Some(report) = bootstrapped {
            tracing::info!(
                revision = report.imported.revision,
                keys = report.imported.keys,
                endpoint = %report.endpoint,
                "mirror: bootstrapped from upstream"
            );
        }
        Some(options)
    };
    let handle = when_unlocked(&args.data_dir, || watchkv_actors::start(config.clone()))
        .await
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    let forwarded = mirror.clone();
    let mut follower = mirror.map(|options| actix_web::rt::spawn(mirror::follow(handle.clone(), options)));
    tracing::info!(
        data_dir = %args.data_dir.display(),
        revision = handle.current_revision(),
        listen = %port.address,
        tls = tls.is_some(),
        metrics = ?args.listen_metrics_urls,
        durability = ?args.durability,
        "watchkv serving"
    );
    let mut gw = Gateway::new(handle.clone());
    gw.max_request_bytes = args.max_request_bytes;
    gw.cors = args.cors.clone();
    let advertised = if args.advertise_client_urls.is_empty() {
        vec![format!("{}://{}", if tls.is_some() { "https" } else { "http" }, port.address)]
    } else {
        args.advertise_client_urls.clone()
    };
    gw.client_urls = advertised.clone();
    let mut grpc = GrpcApi::new(handle.clone(), gw.header, args.max_request_bytes, advertised);
    gw.grpc_calls = Some(grpc.call_counters());
    if let Some(options) = &forwarded {
        // Mirror mode: writes, lease calls and linearizable reads go to upstream.
        let upstream = watchkv_actors::forward::Upstream::new(handle.clone(), gw.header, options);
        grpc = grpc.with_upstream(upstream.clone());
        gw.upstream = Some(upstream);
    }
    let mut options = PortOptions::default();
    if let Some(workers) = args.workers {
        options.workers = workers;
    }
    options.max_concurrent_streams = args.max_concurrent_streams;
    options.grpc_keepalive = watchkv_actors::grpc::Keepalive {
        interval: args.grpc_keepalive_interval,
        timeout: args.grpc_keepalive_timeout,
    };
    let gw = Arc::new(gw);
    // Both servers are built before either runs, so a failure leaves nothing serving.
    let metrics_server = if metrics_listeners.is_empty() {
        None
    } else {
        Some(
            listener::serve_metrics(metrics_listeners, Arc::clone(&gw), options)
                .context("starting the metrics port")?,
        )
    };
    let server = match tls {
        Some(tls) => listener::serve_tls(listener, gw, grpc, options, tls),
        None => listener::serve(listener, gw, grpc, options),
    }
    .context("starting the client port")?;
    let server_handle = server.handle();
    let serving = actix_web::rt::spawn(server);
    let metrics_server = metrics_server.map(|server| (server.handle(), actix_web::rt::spawn(server)));

    let mut failed = None;
    match follower.as_mut() {
        Some(follower) => tokio::select! {
            () = wait_for_signal() => {}
            ended = follower => {
                failed = match ended {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(anyhow::Error::new(e)),
                    Err(e) => Some(anyhow::anyhow!("mirror: the follower task failed: {e}")),
                };
            }
        },
        None => wait_for_signal().await,
    }
    if let Some(follower) = &follower {
        follower.abort();
    }
    tracing::info!("shutting down: finishing writes, syncing, closing streams");
    // Stop accepting first; then the store finishes in-flight writes, syncs, and ends every
    // watch stream so that open connections complete instead of being cut.
    // The metrics port closes with the client port, as etcd closes its metrics listeners.
    let stopping = server_handle.stop(true);
    let stopping_metrics = metrics_server.map(|(handle, serving)| (handle.stop(true), serving));
    let synced = handle.shutdown().await;
    stopping.await;
    let _ = serving.await;
    if let Some((stopping, serving)) = stopping_metrics {
        stopping.await;
        let _ = serving.await;
    }
    synced.context("final sync")?;
    if let Some(e) = failed {
        return Err(e);
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Log output that never fails: a line that cannot be written (the disk holding the log is
/// full) is dropped. tracing-subscriber reports a failed write with `eprintln!`, which panics
/// when stderr cannot be written either; with the log on the disk that just filled up, that
/// took down whichever thread logged the failure: the store's.
struct LossyStdout;

impl std::io::Write for LossyStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stdout().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stdout().flush();
        Ok(())
    }
}

/// Runs `open` again every half second while another process holds the data directory's lock,
/// as etcd waits ("another etcd process is using ... waiting for it to exit before starting"):
/// a supervisor that restarts the server right after killing it, while the old process is still
/// going away, then gets a server instead of an error.
async fn when_unlocked<T, E, F, Fut>(dir: &Path, mut open: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let mut warned = false;
    loop {
        match open().await {
            Err(e) if is_locked(&e) => {
                if !warned {
                    tracing::warn!(
                        data_dir = %dir.display(),
                        "another process is using the data directory and holds its lock; waiting for it to exit"
                    );
                    warned = true;
                }
                actix_web::rt::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// Whether `e`, or an error it was caused by, is the store's directory lock held elsewhere.
fn is_locked(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err.downcast_ref::<watchkv::Error>().is_some_and(watchkv::Error::is_locked) {
            return true;
        }
        cause = err.source();
    }
    false
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
