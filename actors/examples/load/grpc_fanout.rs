//! Scenario grpc-fanout: watch fan-out over gRPC with `etcd-client`. `--streams` watch streams
//! spread over `--grpc-connections` client connections, `--watchers-per-stream` watchers each,
//! watcher `w` of a stream on key `w % --keys`; one more connection, on a thread of its own (an
//! open loop) or with `--writer-on-watch-thread` on the watch thread (a closed loop: the writer
//! cannot outrun what the watchers take), puts `--puts` values on the keys round robin (see
//! `grpc_writer`); a drain; then every watcher's
//! tally (exactly its key's acknowledged puts, once each, in revision order: see `tally`). With
//! `--watch-threads N` the connections and streams are dealt over N client threads, each an
//! actix-rt system with a `Shared` of its own; the writer stays with the first.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::task::JoinHandle;
use etcd_client::Client;

use crate::args::Args;
use crate::drain::{drain, Received};
use crate::grpc_watch::{grpc_watch_stream, Shared, StreamResult, WatchCfg};
use crate::grpc_writer::{connect_writer, write_all, Writer};
use crate::hist::Hist;
use crate::sampling::{Cpu, CpuSpan, Perf};
use crate::server::Server;
use crate::tally::{events_for, Tally};

/// The watched keys: `/grpcfan/key/0` ... `/grpcfan/key/<keys - 1>`.
pub fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|k| format!("/grpcfan/key/{k}").into_bytes()).collect()
}

/// Opens `n` client connections (a `Client` clone shares its client's connection); on failure,
/// the first error.
pub async fn connect_clients(base: &str, n: usize) -> Result<Vec<Client>, String> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        match actix_rt::time::timeout(Duration::from_secs(10), Client::connect([base], None)).await {
            Ok(Ok(c)) => clients.push(c),
            Ok(Err(e)) => return Err(format!("connect: {e}")),
            Err(_) => return Err("connect timed out".into()),
        }
    }
    Ok(clients)
}

/// The first key index of each of `streams` streams of `per_stream` watchers (see
/// `grpc_watch_stream`), and its watchers: every stream from key 0 (grpc-fanout: watcher `w` of
/// each stream on key `w % keys`), or with `spread` stream `i` from key `i * per_stream` (watcher
/// `g` of them all on key `g % keys`).
pub fn stream_keys(streams: usize, per_stream: usize, spread: bool) -> Vec<(usize, usize)> {
    (0..streams).map(|i| (if spread { i * per_stream } else { 0 }, per_stream)).collect()
}

/// Opens one watch stream per entry of `streams` (its first key index and its watchers; see
/// `stream_keys`), stream `i` on connection `clients[i % clients.len()]`; the streams run until
/// `stop`. `wait_created` waits for their watchers.
pub fn spawn_streams(
    clients: &[Client],
    cfg: &Arc<WatchCfg>,
    shared: &Arc<Shared>,
    streams: &[(usize, usize)],
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<JoinHandle<StreamResult>> {
    streams
        .iter()
        .enumerate()
        .map(|(i, &(first, n))| {
            let client = clients[i % clients.len()].clone();
            actix_rt::spawn(grpc_watch_stream(client, cfg.clone(), shared.clone(), n, first, stop.clone()))
        })
        .collect()
}

/// Waits until the streams of every `Shared` have `wanted` watchers in all, one failed, or
/// `setup_deadline` (and 100 ms) passed.
pub async fn wait_created(shareds: &[Arc<Shared>], wanted: u64, setup_deadline: Instant) {
    while total(shareds, Shared::created) < wanted
        && total(shareds, Shared::failed_streams) == 0
        && Instant::now() < setup_deadline + Duration::from_millis(100)
    {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Stops the streams and adds up their watchers' findings (see `Tally::add`); a stream that does
/// not end within 5 s is left out.
pub async fn close_streams(
    stop: &tokio::sync::watch::Sender<bool>,
    streams: Vec<JoinHandle<StreamResult>>,
    acked: &[bool],
    keys: usize,
) -> Tally {
    let _ = stop.send(true);
    let mut tally = Tally::default();
    for r in collect_streams(streams).await {
        tally.add(r, acked, keys);
    }
    tally
}

/// The findings of stopped streams; a stream that does not end within 5 s is left out.
async fn collect_streams(streams: Vec<JoinHandle<StreamResult>>) -> Vec<StreamResult> {
    let mut results = Vec::with_capacity(streams.len());
    for s in streams {
        if let Ok(Ok(r)) = actix_rt::time::timeout(Duration::from_secs(5), s).await {
            results.push(r);
        }
    }
    results
}

/// A client thread other than the first (`--watch-threads`): its connections opened, its
/// streams run until `stop`; it answers how many connections it opened and its streams'
/// findings, or why it could not connect.
type WatchThread = std::thread::JoinHandle<Result<(usize, Vec<StreamResult>), String>>;

fn spawn_watch_thread(
    base: String,
    connections: usize,
    cfg: Arc<WatchCfg>,
    shared: Arc<Shared>,
    streams: Vec<(usize, usize)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<WatchThread> {
    std::thread::Builder::new().name("load-watch".into()).spawn(move || {
        actix_rt::System::new().block_on(async move {
            let clients = match connect_clients(&base, connections).await {
                Ok(c) => c,
                Err(e) => {
                    shared.stream_failed();
                    return Err(e);
                }
            };
            let handles = spawn_streams(&clients, &cfg, &shared, &streams, &stop);
            // Err: the driver is gone, which stops the streams too.
            let _ = stop.wait_for(|stopped| *stopped).await;
            Ok((clients.len(), collect_streams(handles).await))
        })
    })
}

/// One counter of every client thread's `Shared`, added up.
fn total(shareds: &[Arc<Shared>], counter: fn(&Shared) -> u64) -> u64 {
    shareds.iter().map(|s| counter(s)).sum()
}

/// Entry `i` of `items` goes to thread `i % threads`: thread `t`'s share.
fn share_of<T: Clone>(items: &[T], threads: usize, t: usize) -> Vec<T> {
    items.iter().skip(t).step_by(threads).cloned().collect()
}

/// grpc-fanout's results.
#[derive(Debug, Default, Clone)]
pub struct GrpcFanout {
    pub connections_open: usize,
    pub watchers_wanted: u64,
    pub watchers_created: u64,
    pub setup_secs: f64,
    pub failed_streams: u64,
    pub puts_sent: u64,
    pub puts_acked: u64,
    pub put_errors: u64,
    pub first_put_error: Option<String>,
    pub put_timed_out: bool,
    pub put_secs: f64,
    pub put_lat_us: Vec<u64>,
    pub events_expected: u64,
    pub events_received: u64,
    pub responses: u64,
    pub events_per_s: f64,
    pub ev_lat: Hist,
    pub tally: Tally,
    pub drain_secs: f64,
    pub drain_timed_out: bool,
    pub cpu: Cpu,
    pub peak_rss_kb: Option<u64>,
}

pub async fn scenario_grpc_fanout(args: &Args, server: &Server, tck: f64) -> GrpcFanout {
    let wanted = (args.streams * args.watchers_per_stream) as u64;
    let mut out = GrpcFanout { watchers_wanted: wanted, ..GrpcFanout::default() };
    let epoch = Instant::now();

    let cfg = Arc::new(WatchCfg {
        keys: keys(args.keys),
        prefix: false,
        start_revision: 0,
        max_seq: args.puts as usize,
        complete_after: 0,
        epoch,
        setup_deadline: epoch + Duration::from_secs(30),
    });
    let threads = (args.watch_threads as usize).clamp(1, args.grpc_connections.max(1));
    let sent_us: Arc<[AtomicU64]> = (0..args.puts).map(|_| AtomicU64::new(0)).collect();
    let shareds: Vec<Arc<Shared>> = (0..threads).map(|_| Arc::new(Shared::with_sent(sent_us.clone(), epoch))).collect();
    let shared = &shareds[0];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let per_stream = stream_keys(args.streams, args.watchers_per_stream, false);
    let mut helpers = Vec::with_capacity(threads - 1);
    for (t, thread_shared) in shareds.iter().enumerate().skip(1) {
        let streams = share_of(&per_stream, threads, t);
        let n = (t..args.grpc_connections).step_by(threads).count();
        match spawn_watch_thread(server.base.clone(), n, cfg.clone(), thread_shared.clone(), streams, stop_rx.clone()) {
            Ok(h) => helpers.push(h),
            Err(e) => {
                out.tally.first_error = Some(format!("starting a watch thread: {e}"));
                join_watch_threads(&stop_tx, helpers, &[], args.keys, &mut out).await;
                return out;
            }
        }
    }
    let clients = match connect_clients(&server.base, (0..args.grpc_connections).step_by(threads).count()).await {
        Ok(c) => c,
        Err(e) => {
            out.tally.first_error = Some(e);
            join_watch_threads(&stop_tx, helpers, &[], args.keys, &mut out).await;
            return out;
        }
    };
    out.connections_open = clients.len();
    let streams = spawn_streams(&clients, &cfg, shared, &share_of(&per_stream, threads, 0), &stop_rx);
    wait_created(&shareds, wanted, cfg.setup_deadline).await;
    let sum = |counter| total(&shareds, counter);
    out.setup_secs = epoch.elapsed().as_secs_f64();
    out.watchers_created = sum(Shared::created);
    let failed = sum(Shared::failed_streams);

    let mut span = None;
    let mut perf = None;
    let mut written = None;
    if out.watchers_created == wanted && failed == 0 && args.writer_on_watch_thread {
        match connect_writer(&server.base).await {
            Ok(kv) => {
                perf = Some(Perf::start(args, server, "grpc-fanout"));
                span = Some(CpuSpan::start(server.pid));
                written = Some(write_all(args, kv, cfg.keys.clone(), epoch, shared.sent_us.clone()).await);
            }
            Err(e) => out.first_put_error = Some(e),
        }
    } else if out.watchers_created == wanted && failed == 0 {
        match Writer::start(args, &server.base, cfg.keys.clone(), epoch, shared.sent_us.clone()).await {
            Ok(writer) => {
                perf = Some(Perf::start(args, server, "grpc-fanout"));
                span = Some(CpuSpan::start(server.pid));
                match writer.run().await {
                    Ok(w) => written = Some(w),
                    Err(e) => out.first_put_error = Some(e),
                }
            }
            Err(e) => out.first_put_error = Some(e),
        }
    }
    let put_start = written.as_ref().and_then(|w| w.start);
    let acked = written.as_ref().map_or_else(Vec::new, |w| w.acked.clone());
    if let Some(w) = written {
        out.puts_sent = w.sent;
        out.puts_acked = w.lat_us.len() as u64;
        out.put_errors = w.errors;
        out.first_put_error = w.first_error;
        out.put_timed_out = w.timed_out;
        out.put_lat_us = w.lat_us;
        if let (Some(a), Some(b)) = (w.start, w.last_send) {
            out.put_secs = (b - a).as_secs_f64();
        }
    }

    // The writer only runs once every watcher exists, so each stream has all of its watchers.
    let sent: Vec<bool> = (0..args.puts).map(|seq| seq < out.puts_sent).collect();
    out.events_expected = events_for(&per_stream, &acked, args.keys);
    let most = events_for(&per_stream, &sent, args.keys);
    let last_event = || shareds.iter().filter_map(|s| s.last_event()).max();
    let received = || Received {
        events: sum(Shared::events),
        last_event: last_event(),
        failed_streams: sum(Shared::failed_streams),
    };
    (out.drain_timed_out, out.drain_secs) =
        drain(received, out.events_expected, most, Duration::from_secs(args.drain_timeout_secs)).await;
    if let Some(span) = span {
        out.cpu = span.end(tck);
    }
    drop(perf);
    out.tally = close_streams(&stop_tx, streams, &acked, args.keys).await;
    join_watch_threads(&stop_tx, helpers, &acked, args.keys, &mut out).await;
    out.failed_streams = sum(Shared::failed_streams);
    out.events_received = sum(Shared::events);
    out.responses = sum(Shared::responses);
    for s in &shareds {
        out.ev_lat.merge(&s.take_lat());
    }
    if let (Some(start), Some(last)) = (put_start, last_event()) {
        out.events_per_s = out.events_received as f64 / last.saturating_duration_since(start).as_secs_f64().max(1e-9);
    }
    out
}

/// Stops the other client threads' streams and adds their connections and findings to `out`.
async fn join_watch_threads(
    stop: &tokio::sync::watch::Sender<bool>,
    helpers: Vec<WatchThread>,
    acked: &[bool],
    keys: usize,
    out: &mut GrpcFanout,
) {
    let _ = stop.send(true);
    for helper in helpers {
        // Each ends within 5 s of the stop (see `collect_streams`); joined off this thread's
        // event loop.
        match actix_rt::task::spawn_blocking(move || helper.join()).await {
            Ok(Ok(Ok((connections, results)))) => {
                out.connections_open += connections;
                for r in results {
                    out.tally.add(r, acked, keys);
                }
            }
            Ok(Ok(Err(e))) => {
                out.tally.first_error.get_or_insert(e);
            }
            _ => {
                out.tally.first_error.get_or_insert_with(|| "a watch thread panicked".into());
            }
        }
    }
}
