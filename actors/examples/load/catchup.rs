//! Scenario grpc-catchup: what catching up costs a writer. Over gRPC with `etcd-client`: (a)
//! `--catchup-revisions` puts on `/catchup/k/<i % 10>` (the history); (b) one writer's
//! `--catchup-writer-puts` sequential puts on `/catchup/writer` with nothing else going on (the
//! idle latencies; the watch connections are open and idle); (c) the same writer's puts again
//! while catch-up ROUNDS run back to back (`catchup_rounds`): each round opens
//! `--catchup-watchers` watchers on the prefix `/catchup/k/` from the first revision of (a), waits
//! until every one has all of (a), then closes its streams just after the next round opened,
//! until the writer is done (the round then open finishes). The latencies during are those of the
//! puts begun while a round was open (nearly all); every round's watchers must get exactly the
//! puts of (a), once each, in order. The last round's watchers are kept 300 ms longer to catch
//! late duplicates; the other rounds' until their last watcher caught up and the next round opened.
//!
//! A round reads the history from (a)'s first revision on, which also holds the writer's puts
//! (outside the prefix). `--catchup-revisions` stays 100 by default: a round of 1000 watchers
//! takes tens of ms on watchkv and ~200 ms on etcd, and since rounds repeat, nearly every put of
//! (c) overlaps one whatever their length (the table counts the puts begun between rounds); more
//! revisions would mostly add events for this single-threaded client to decode.

use std::cell::Cell;
use std::time::{Duration, Instant};

use etcd_client::KvClient;

use crate::args::Args;
use crate::catchup_rounds::{run_rounds, Rounds};
use crate::grpc_fanout::connect_clients;
use crate::grpc_writer::{connect_writer, value_of};
use crate::sampling::{Cpu, CpuSpan, Perf};
use crate::server::Server;

/// The prefix the watchers catch up on, and the writer's own key (outside it).
pub const PREFIX: &str = "/catchup/k/";
const WRITER_KEY: &str = "/catchup/writer";

/// grpc-catchup's results.
#[derive(Debug, Default, Clone)]
pub struct Catchup {
    pub start_revision: i64,
    pub streams: usize,
    pub watchers_wanted: u64,
    /// The writer's put latencies (sorted) with no watchers, and of the puts of (c) begun while a
    /// round was open; the puts of (c) begun between rounds.
    pub idle_lat_us: Vec<u64>,
    pub during_lat_us: Vec<u64>,
    pub between_rounds: u64,
    pub put_errors_idle: u64,
    pub put_errors_during: u64,
    pub first_put_error: Option<String>,
    /// The rounds of (c): their spans, checks and events.
    pub rounds: Rounds,
    /// The server's CPU during (b) and during (c) until the writer and the last round are done.
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
    let mut out = Catchup {
        streams: args.catchup_watchers.div_ceil(args.watchers_per_stream),
        watchers_wanted: args.catchup_watchers as u64,
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
    // The watch connections are open (and idle) during the baseline too; every round reuses them.
    let clients = match connect_clients(&server.base, args.grpc_connections).await {
        Ok(c) => c,
        Err(e) => {
            out.rounds.tally.first_error = Some(e);
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
    let writer_done = Cell::new(false);
    // Both on this task, the rounds first (so that the first round opens before the first put);
    // the watch streams are tasks of their own.
    let rounds = run_rounds(args, &clients, out.start_revision, t0, &writer_done);
    let writer = async {
        let puts = seq_puts(&mut kv, WRITER_KEY, args.catchup_writer_puts, args.value_size, t0, t0 + put_limit).await;
        writer_done.set(true);
        puts
    };
    let ((rounds, last), during) = tokio::join!(rounds, writer);
    out.cpu = span.end(tck);
    drop(perf);
    out.rounds = rounds;
    // A little longer for the last round, to catch duplicates.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    last.close(args, &mut out.rounds).await;

    let (inside, between): (Vec<&(Duration, u64)>, Vec<_>) = during.puts.iter().partition(|p| out.rounds.during(p.0));
    out.during_lat_us = sorted(inside.iter().map(|p| p.1));
    out.between_rounds = between.len() as u64;
    out.put_errors_during = during.errors;
    if out.first_put_error.is_none() {
        out.first_put_error = during.first_error;
    }
    out
}
