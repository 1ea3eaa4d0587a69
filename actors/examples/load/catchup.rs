//! Scenario grpc-catchup: what a catch-up costs a writer. Over gRPC with `etcd-client`: (a)
//! `--catchup-revisions` puts on `/catchup/k/<i % 10>`; (b) one writer's `--catchup-writer-puts`
//! sequential puts on `/catchup/writer` with nothing else going on (the idle latencies); (c)
//! `--catchup-watchers` watchers on the prefix `/catchup/k/` from the first revision of (a), all
//! catching up from history, while the same writer does its puts again (the latencies during the
//! catch-up); then every watcher's tally (exactly the puts of (a), once each, in order).

use std::rc::Rc;
use std::time::{Duration, Instant};

use etcd_client::KvClient;

use crate::args::Args;
use crate::grpc_fanout::connect_clients;
use crate::grpc_watch::{grpc_watch_stream, Shared, WatchCfg};
use crate::grpc_writer::{connect_writer, value_of};
use crate::sampling::{Cpu, CpuSpan, Perf};
use crate::server::Server;
use crate::tally::Tally;

/// The prefix the watchers catch up on, and the writer's own key (outside it).
const PREFIX: &str = "/catchup/k/";
const WRITER_KEY: &str = "/catchup/writer";

/// grpc-catchup's results.
#[derive(Debug, Default, Clone)]
pub struct Catchup {
    pub start_revision: i64,
    pub streams: usize,
    pub watchers_wanted: u64,
    pub watchers_created: u64,
    /// The writer's put latencies (sorted) with no watchers, and while the watchers catch up.
    pub idle_lat_us: Vec<u64>,
    pub during_lat_us: Vec<u64>,
    /// The latencies (sorted) of the puts begun before the last watcher had caught up.
    pub window_lat_us: Vec<u64>,
    pub put_errors_idle: u64,
    pub put_errors_during: u64,
    pub first_put_error: Option<String>,
    /// Watchers that got every put of (a), and when the last of them did after the watchers
    /// were opened (`None` if some never did).
    pub caught_up: u64,
    pub catchup_secs: Option<f64>,
    pub events_expected: u64,
    pub events_received: u64,
    pub tally: Tally,
    pub failed_streams: u64,
    /// The server's CPU during (b) and during (c) until the catch-up and the writer are done.
    pub cpu_idle: Cpu,
    pub cpu: Cpu,
    pub peak_rss_kb: Option<u64>,
}

/// One writer's sequential puts: when each began (since `t0`) and how long it took.
#[derive(Default)]
struct SeqPuts {
    puts: Vec<(Duration, u64)>,
    errors: u64,
    first_error: Option<String>,
}

/// `n` sequential puts on `key`, stopping at `deadline`.
async fn seq_puts(kv: &mut KvClient, key: &str, n: usize, size: usize, t0: Instant, deadline: Instant) -> SeqPuts {
    let mut out = SeqPuts::default();
    for i in 0..n {
        if Instant::now() >= deadline {
            out.first_error.get_or_insert_with(|| format!("stopped after {i} puts at the time limit"));
            break;
        }
        let start = Instant::now();
        match kv.put(key, value_of(i, size), None).await {
            Ok(_) => out.puts.push((start - t0, start.elapsed().as_micros() as u64)),
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e.to_string());
            }
        }
    }
    out
}

fn sorted(lat: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = lat.collect();
    v.sort_unstable();
    v
}

/// Step (a): the history to catch up on. Returns the revision of its first put.
async fn preload(kv: &mut KvClient, n: usize, size: usize) -> Result<i64, String> {
    let mut first = None;
    for i in 0..n {
        let resp = kv.put(format!("{PREFIX}{}", i % 10), value_of(i, size), None).await.map_err(|e| e.to_string())?;
        let rev = resp.header().map(|h| h.revision()).ok_or("put response without a header")?;
        first.get_or_insert(rev);
    }
    first.ok_or_else(|| "--catchup-revisions is 0".into())
}

pub async fn scenario_catchup(args: &Args, server: &Server, tck: f64) -> Catchup {
    let (want, per_stream) = (args.catchup_watchers, args.watchers_per_stream);
    let mut out = Catchup {
        streams: want.div_ceil(per_stream),
        watchers_wanted: want as u64,
        events_expected: (want * args.catchup_revisions) as u64,
        ..Catchup::default()
    };
    let put_limit = Duration::from_secs(args.grpc_put_timeout_secs);
    let mut kv = match connect_writer(&server.base).await {
        Ok(kv) => kv,
        Err(e) => {
            out.first_put_error = Some(e);
            return out;
        }
    };
    match preload(&mut kv, args.catchup_revisions, args.value_size).await {
        Ok(rev) => out.start_revision = rev,
        Err(e) => {
            out.first_put_error = Some(format!("writing the history: {e}"));
            return out;
        }
    }
    // The watch connections are open (and idle) during the baseline too.
    let clients = match connect_clients(&server.base, args.grpc_connections).await {
        Ok(c) => c,
        Err(e) => {
            out.tally.first_error = Some(e);
            return out;
        }
    };

    let span = CpuSpan::start(server.pid);
    let t0 = Instant::now();
    let idle = seq_puts(&mut kv, WRITER_KEY, args.catchup_writer_puts, args.value_size, t0, t0 + put_limit).await;
    out.cpu_idle = span.end(tck);
    out.idle_lat_us = sorted(idle.puts.iter().map(|p| p.1));
    out.put_errors_idle = idle.errors;
    out.first_put_error = idle.first_error;

    let perf = Perf::start(args, server, "grpc-catchup");
    let span = CpuSpan::start(server.pid);
    let t0 = Instant::now();
    let cfg = Rc::new(WatchCfg {
        keys: vec![PREFIX.as_bytes().to_vec()],
        prefix: true,
        start_revision: out.start_revision,
        max_seq: args.catchup_revisions,
        complete_after: args.catchup_revisions,
        epoch: t0,
        setup_deadline: t0 + Duration::from_secs(30),
    });
    let shared = Rc::new(Shared::new(args.catchup_revisions));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let streams: Vec<_> = (0..out.streams)
        .map(|s| {
            let client = clients[s % clients.len()].clone();
            let watchers = per_stream.min(want - s * per_stream);
            actix_rt::spawn(grpc_watch_stream(client, cfg.clone(), shared.clone(), watchers, stop_rx.clone()))
        })
        .collect();
    // The watchers open and catch up while this writer puts (the streams are tasks of their own).
    let during = seq_puts(&mut kv, WRITER_KEY, args.catchup_writer_puts, args.value_size, t0, t0 + put_limit).await;
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout_secs);
    while shared.caught_up.get() < want as u64 && shared.failed_streams.get() == 0 && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    out.cpu = span.end(tck);
    drop(perf);
    // A little longer, to catch duplicates.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let acked = vec![true; args.catchup_revisions];
    for s in streams {
        if let Ok(Ok(r)) = actix_rt::time::timeout(Duration::from_secs(5), s).await {
            out.tally.add(r, &acked, 1);
        }
    }

    out.watchers_created = shared.created.get();
    out.caught_up = shared.caught_up.get();
    let caught_up_at = shared.last_caught_up.get().filter(|_| out.caught_up == want as u64);
    out.catchup_secs = caught_up_at.map(|t| (t - t0).as_secs_f64());
    out.events_received = shared.events.get();
    out.failed_streams = shared.failed_streams.get();
    out.during_lat_us = sorted(during.puts.iter().map(|p| p.1));
    // Without a catch-up end (some watcher never caught up), every put counts as during it.
    let window_end = caught_up_at.map_or(Duration::MAX, |t| t - t0);
    out.window_lat_us = sorted(during.puts.iter().filter(|p| p.0 < window_end).map(|p| p.1));
    out.put_errors_during = during.errors;
    if out.first_put_error.is_none() {
        out.first_put_error = during.first_error;
    }
    out
}
