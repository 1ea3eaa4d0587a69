//! Scenario grpc-fanout: one key's watch fan-out over gRPC with `etcd-client`. `--streams` watch
//! streams spread over `--grpc-connections` client connections, `--watchers-per-stream` watchers
//! each, all on one key; one more connection puts `--puts` values on that key (see
//! `grpc_writer`); a drain; then every watcher's tally (exactly once, in revision order).

use std::rc::Rc;
use std::time::{Duration, Instant};

use etcd_client::Client;

use crate::args::Args;
use crate::drain::{drain, Received};
use crate::grpc_watch::{grpc_watch_stream, Shared, StreamResult, WatchCfg};
use crate::grpc_writer::{connect_writer, write_all};
use crate::hist::Hist;
use crate::sampling::{Cpu, CpuSpan, Perf};
use crate::server::Server;

/// The key every watcher watches and the writer writes.
const KEY: &[u8] = b"/grpcfan/key";

/// grpc-fanout's results.
#[derive(Debug, Default, Clone)]
pub struct GrpcFanout {
    pub connections_open: usize,
    pub watchers_wanted: u64,
    pub watchers_created: u64,
    pub setup_secs: f64,
    pub failed_streams: u64,
    pub first_stream_error: Option<String>,
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
    pub watchers_exact: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    pub canceled: u64,
    pub drain_secs: f64,
    pub drain_timed_out: bool,
    pub cpu: Cpu,
    pub peak_rss_kb: Option<u64>,
}

pub async fn scenario_grpc_fanout(args: &Args, server: &Server, tck: f64) -> GrpcFanout {
    let wanted = (args.streams * args.watchers_per_stream) as u64;
    let mut out = GrpcFanout { watchers_wanted: wanted, ..GrpcFanout::default() };
    let epoch = Instant::now();

    // The watch connections: one `Client` each (a clone shares its client's connection).
    let mut clients = Vec::new();
    for _ in 0..args.grpc_connections {
        match actix_rt::time::timeout(Duration::from_secs(10), Client::connect([server.base.as_str()], None)).await {
            Ok(Ok(c)) => clients.push(c),
            Ok(Err(e)) => {
                out.first_stream_error.get_or_insert(format!("connect: {e}"));
            }
            Err(_) => {
                out.first_stream_error.get_or_insert("connect timed out".into());
            }
        }
    }
    out.connections_open = clients.len();
    if clients.len() < args.grpc_connections {
        return out;
    }

    let cfg = Rc::new(WatchCfg {
        key: KEY.to_vec(),
        watchers: args.watchers_per_stream,
        max_seq: args.puts as usize,
        epoch,
        setup_deadline: epoch + Duration::from_secs(30),
    });
    let shared = Rc::new(Shared::new(args.puts as usize));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let streams: Vec<_> = (0..args.streams)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            actix_rt::spawn(grpc_watch_stream(client, cfg.clone(), shared.clone(), stop_rx.clone()))
        })
        .collect();
    while shared.created.get() < wanted
        && shared.failed_streams.get() == 0
        && Instant::now() < cfg.setup_deadline + Duration::from_millis(100)
    {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    out.setup_secs = epoch.elapsed().as_secs_f64();
    out.watchers_created = shared.created.get();

    let mut span = None;
    let mut perf = None;
    let mut written = None;
    if out.watchers_created == wanted && shared.failed_streams.get() == 0 {
        match connect_writer(&server.base).await {
            Ok(kv) => {
                perf = Some(Perf::start(args, server, "grpc-fanout"));
                span = Some(CpuSpan::start(server.pid));
                written = Some(write_all(args, kv, KEY.to_vec(), epoch, shared.clone()).await);
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

    out.events_expected = out.puts_acked * out.watchers_created;
    let most = out.puts_sent * out.watchers_created;
    let received =
        Received { events: &shared.events, last_event: &shared.last_event, failed_streams: &shared.failed_streams };
    (out.drain_timed_out, out.drain_secs) =
        drain(received, out.events_expected, most, Duration::from_secs(args.drain_timeout_secs)).await;
    if let Some(span) = span {
        out.cpu = span.end(tck);
    }
    drop(perf);
    let _ = stop_tx.send(true);
    for s in streams {
        if let Ok(Ok(r)) = actix_rt::time::timeout(Duration::from_secs(5), s).await {
            out.tally(r, &acked);
        }
    }
    out.failed_streams = shared.failed_streams.get();
    out.events_received = shared.events.get();
    out.responses = shared.responses.get();
    out.ev_lat = shared.lat.take();
    if let (Some(start), Some(last)) = (put_start, shared.last_event.get()) {
        out.events_per_s = out.events_received as f64 / last.saturating_duration_since(start).as_secs_f64().max(1e-9);
    }
    out
}

impl GrpcFanout {
    /// Adds one stream's findings; `acked[seq]` is whether put `seq` was acknowledged.
    fn tally(&mut self, mut r: StreamResult, acked: &[bool]) {
        self.unexpected += r.unexpected;
        self.canceled += r.canceled;
        if self.first_stream_error.is_none() {
            self.first_stream_error = r.error.take();
        }
        for (counts, &ooo) in r.counts.iter().zip(&r.out_of_order) {
            self.out_of_order += ooo;
            let mut exact = ooo == 0;
            for (seq, &c) in counts.iter().enumerate() {
                if acked.get(seq).copied().unwrap_or(false) {
                    if c == 0 {
                        self.missing += 1;
                        exact = false;
                    } else if c > 1 {
                        self.duplicates += u64::from(c - 1);
                        exact = false;
                    }
                } else if c > 0 {
                    // An unacknowledged put that was applied anyway: not an error, but counted.
                    self.unexpected += u64::from(c);
                }
            }
            if exact {
                self.watchers_exact += 1;
            }
        }
    }
}
