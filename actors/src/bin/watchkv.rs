//! The `watchkv` server: etcd's gRPC API and HTTP/JSON gateway on one client port, over a local
//! fjall data directory. Starts
//! with no configuration (`./watchkv.data`, `127.0.0.1:2379`); SIGINT/SIGTERM finish in-flight
//! writes, sync the store and end every watch stream cleanly before exiting.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use watchkv::Durability;
use watchkv_actors::gateway::Gateway;
use watchkv_actors::grpc::GrpcApi;
use watchkv_actors::listener::{self, PortOptions};
use watchkv_actors::{ActorsConfig, CatchUpPriority, SlowConsumerPolicy};

/// An etcd-v3-compatible watchable key-value store (etcd gRPC API and HTTP/JSON gateway).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory of the store; created if missing.
    #[arg(long, env = "WATCHKV_DATA_DIR", default_value = "./watchkv.data")]
    data_dir: std::path::PathBuf,
    /// Client address: gRPC (HTTP/2) and the HTTP/JSON gateway (HTTP/1.1) share it, as in etcd.
    #[arg(long, env = "WATCHKV_LISTEN", default_value = "127.0.0.1:2379")]
    listen: String,
    /// Client URLs this member reports in `MemberList` (comma-separated); by default
    /// `http://<listen>`. Set it when listening on a wildcard address, as with etcd's flag.
    #[arg(long, value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// `fsync` (every acknowledged write is on disk) or `buffered` (survives a crash of the
    /// process, may lose the last seconds on power loss).
    #[arg(long, default_value = "fsync")]
    durability: Durability,
    /// Slots in each watch stream's mailbox (etcd chanBufLen).
    #[arg(long, default_value_t = 128)]
    chan_buf_len: usize,
    /// Unsynced watchers handled per catch-up pass (etcd maxWatchersPerSync).
    #[arg(long, default_value_t = 512)]
    max_watchers_per_sync: usize,
    /// Catch-up period in milliseconds (etcd watchResyncPeriod).
    #[arg(long, default_value_t = 100)]
    watch_resync_period_ms: u64,
    /// Victim retry period in milliseconds.
    #[arg(long, default_value_t = 10)]
    victim_retry_period_ms: u64,
    /// Most revisions in one catch-up response (etcd watchBatchMaxRevs).
    #[arg(long, default_value_t = 1000)]
    watch_batch_max_revs: usize,
    /// Period of progress notifications in milliseconds (etcd default 10 minutes).
    #[arg(long, default_value_t = 600_000)]
    progress_notify_interval_ms: u64,
    /// Largest request body in bytes (etcd max-request-bytes).
    #[arg(long, default_value_t = 1_572_864)]
    max_request_bytes: usize,
    /// Most operations per txn list (etcd max-txn-ops).
    #[arg(long, default_value_t = 128)]
    max_txn_ops: usize,
    /// Rows deleted per physical compaction batch.
    #[arg(long, default_value_t = 1000)]
    compaction_batch_limit: usize,
    /// Most watchers on one stream.
    #[arg(long, default_value_t = 10_000)]
    max_watchers_per_stream: usize,
    /// Cancel a watcher whose client is this many revisions behind and not reading
    /// (0 = never, etcd's behaviour).
    #[arg(long, default_value_t = 0)]
    slow_consumer_lag: i64,
    /// With --slow-consumer-lag: also cancel after this many seconds undeliverable.
    #[arg(long, default_value_t = 300)]
    slow_consumer_parked_secs: u64,
    /// CPU priority of the catch-up thread (Linux): `idle` (SCHED_IDLE: catch-up only uses
    /// cycles nothing else wants, so it never delays a write), a nice value `0`..=`19` (more
    /// catch-up progress on a fully busy machine, longer write stalls), or `unchanged`.
    #[arg(long, default_value = "idle")]
    catch_up_priority: CatchUpPriority,
    /// Worker threads serving the client port (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

impl Args {
    fn config(&self) -> ActorsConfig {
        let mut c = ActorsConfig::new(&self.data_dir);
        c.store = c
            .store
            .with_durability(self.durability)
            .with_max_txn_ops(self.max_txn_ops)
            .with_compaction_batch_limit(self.compaction_batch_limit);
        c.watch = c.watch.with_chan_buf_len(self.chan_buf_len.max(1));
        c.watch = c.watch.with_max_watchers_per_sync(self.max_watchers_per_sync.max(1));
        c.watch = c.watch.with_watch_resync_period(Duration::from_millis(self.watch_resync_period_ms.max(1)));
        c.watch = c.watch.with_victim_retry_period(Duration::from_millis(self.victim_retry_period_ms.max(1)));
        c.watch = c.watch.with_watch_batch_max_revs(self.watch_batch_max_revs.max(1));
        // etcd clamps the progress interval at 100 ms.
        c.watch =
            c.watch.with_progress_notify_interval(Duration::from_millis(self.progress_notify_interval_ms.max(100)));
        c.watch = c.watch.with_max_request_bytes(self.max_request_bytes);
        c.max_watchers_per_stream = self.max_watchers_per_stream.max(1);
        c.catch_up_priority = self.catch_up_priority;
        if self.slow_consumer_lag > 0 {
            c.slow_consumer = SlowConsumerPolicy::CancelAfter {
                lag_revisions: self.slow_consumer_lag,
                parked_for: Duration::from_secs(self.slow_consumer_parked_secs),
            };
        }
        c
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let handle = watchkv_actors::start(args.config())
        .await
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    tracing::info!(
        data_dir = %args.data_dir.display(),
        revision = handle.current_revision(),
        listen = %args.listen,
        durability = ?args.durability,
        "watchkv serving"
    );
    let mut gw = Gateway::new(handle.clone());
    gw.max_request_bytes = args.max_request_bytes;
    let advertised = if args.advertise_client_urls.is_empty() {
        vec![format!("http://{}", args.listen)]
    } else {
        args.advertise_client_urls.clone()
    };
    let grpc = GrpcApi::new(handle.clone(), gw.header, args.max_request_bytes, advertised);
    let listener = std::net::TcpListener::bind(&args.listen).with_context(|| format!("binding {}", args.listen))?;
    let mut options = PortOptions::default();
    if let Some(workers) = args.workers {
        options.workers = workers.max(1);
    }
    let server = listener::serve(listener, Arc::new(gw), grpc, options).context("starting the client port")?;
    let server_handle = server.handle();
    let serving = actix_web::rt::spawn(server);

    wait_for_signal().await;
    tracing::info!("shutting down: finishing writes, syncing, closing streams");
    // Stop accepting first; then the store finishes in-flight writes, syncs, and ends every
    // watch stream so that open connections complete instead of being cut.
    let stopping = server_handle.stop(true);
    let synced = handle.shutdown().await;
    stopping.await;
    let _ = serving.await;
    synced.context("final sync")?;
    tracing::info!("stopped cleanly");
    Ok(())
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
