//! Scenario grpc-fanout: watch fan-out over gRPC with `etcd-client`. `--streams` watch streams
//! spread over `--grpc-connections` client connections, `--watchers-per-stream` watchers each,
//! watcher `w` of a stream on key `w % --keys`; one more connection, on a thread of its own (an
//! open loop) or with `--writer-on-watch-thread` on the watch thread (a closed loop: the writer
//! cannot outrun what the watchers take), puts `--puts` values on the keys round robin (see
//! `grpc_writer`); a drain; then every watcher's
//! tally (exactly its key's acknowledged puts, once each, in revision order: see `tally`).

use std::rc::Rc;
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
/// `stream_keys`), stream `i` on connection `clients[i % clients.len()]`, and waits until every
/// watcher exists, a stream failed, or the setup deadline passed; the streams run until `stop`.
pub async fn open_streams(
    clients: &[Client],
    cfg: &Rc<WatchCfg>,
    shared: &Rc<Shared>,
    streams: &[(usize, usize)],
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<JoinHandle<StreamResult>> {
    let handles: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(i, &(first, n))| {
            let client = clients[i % clients.len()].clone();
            actix_rt::spawn(grpc_watch_stream(client, cfg.clone(), shared.clone(), n, first, stop.clone()))
        })
        .collect();
    let wanted = streams.iter().map(|&(_, n)| n as u64).sum::<u64>();
    while shared.created.get() < wanted
        && shared.failed_streams.get() == 0
        && Instant::now() < cfg.setup_deadline + Duration::from_millis(100)
    {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    handles
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
    for s in streams {
        if let Ok(Ok(r)) = actix_rt::time::timeout(Duration::from_secs(5), s).await {
            tally.add(r, acked, keys);
        }
    }
    tally
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

    let clients = match connect_clients(&server.base, args.grpc_connections).await {
        Ok(c) => c,
        Err(e) => {
            out.tally.first_error = Some(e);
            return out;
        }
    };
    out.connections_open = clients.len();

    let cfg = Rc::new(WatchCfg {
        keys: keys(args.keys),
        prefix: false,
        start_revision: 0,
        max_seq: args.puts as usize,
        complete_after: 0,
        epoch,
        setup_deadline: epoch + Duration::from_secs(30),
    });
    let shared = Rc::new(Shared::new(args.puts as usize));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let per_stream = stream_keys(args.streams, args.watchers_per_stream, false);
    let streams = open_streams(&clients, &cfg, &shared, &per_stream, &stop_rx).await;
    out.setup_secs = epoch.elapsed().as_secs_f64();
    out.watchers_created = shared.created.get();

    let mut span = None;
    let mut perf = None;
    let mut written = None;
    if out.watchers_created == wanted && shared.failed_streams.get() == 0 && args.writer_on_watch_thread {
        match connect_writer(&server.base).await {
            Ok(kv) => {
                perf = Some(Perf::start(args, server, "grpc-fanout"));
                span = Some(CpuSpan::start(server.pid));
                written = Some(write_all(args, kv, cfg.keys.clone(), epoch, shared.sent_us.clone()).await);
            }
            Err(e) => out.first_put_error = Some(e),
        }
    } else if out.watchers_created == wanted && shared.failed_streams.get() == 0 {
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
    let received =
        Received { events: &shared.events, last_event: &shared.last_event, failed_streams: &shared.failed_streams };
    (out.drain_timed_out, out.drain_secs) =
        drain(received, out.events_expected, most, Duration::from_secs(args.drain_timeout_secs)).await;
    if let Some(span) = span {
        out.cpu = span.end(tck);
    }
    drop(perf);
    out.tally = close_streams(&stop_tx, streams, &acked, args.keys).await;
    out.failed_streams = shared.failed_streams.get();
    out.events_received = shared.events.get();
    out.responses = shared.responses.get();
    out.ev_lat = shared.lat.take();
    if let (Some(start), Some(last)) = (put_start, shared.last_event.get()) {
        out.events_per_s = out.events_received as f64 / last.saturating_duration_since(start).as_secs_f64().max(1e-9);
    }
    out
}
