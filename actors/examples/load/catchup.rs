//! Scenario grpc-catchup: what catching up costs a writer. Over gRPC with `etcd-client`, the
//! writer on a thread and connection of its own (see below): (a) `--catchup-revisions` puts on
//! `/catchup/k/<i % 10>` (the history); (b) the writer's
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
//! revisions would mostly add events for the client's watch thread to decode.
//!
//! The writer runs on its own thread, in a single-threaded actix-rt system of its own, with its
//! own connection (`grpc_writer::spawn_writer`): the rounds' watch streams keep the main thread
//! busy decoding events (~83% busy), and a writer sharing that thread measured mostly its queue
//! (watchkv's p99 during was 25 ms against 0.54 ms idle). The scenario hands it one series at a
//! time; it sets `writer_done` (an atomic) after the series of (c), which the rounds check. A put
//! of (c) counts as during a round if it began within a round's span; both threads take their
//! times since the same `t0`, an `Instant` of the shared monotonic clock. Each put also records
//! how long the writer's thread waited, runnable, for a CPU meanwhile
//! (`/proc/thread-self/schedstat`): the table gives the latencies with that share, the tool's
//! own, taken out as well.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::KvClient;
use tokio::sync::{mpsc, oneshot};

use crate::args::Args;
use crate::catchup_rounds::{run_rounds, Rounds};
use crate::grpc_fanout::connect_clients;
use crate::grpc_writer::{connect_writer, from_writer, spawn_writer, value_of};
use crate::sampling::{thread_cpu_wait_ns, Cpu, CpuSpan, Perf};
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
    /// The same latencies less the time the writer's own thread waited for a CPU during each
    /// put (sorted; empty where the kernel does not tell): what the put spent in the network
    /// and the server, without the load tool's own scheduling.
    pub idle_server_us: Vec<u64>,
    pub during_server_us: Vec<u64>,
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

/// One put of the writer's.
struct Put {
    /// When it began, since the series' `t0`.
    began: Duration,
    latency_us: u64,
    /// How long the writer's thread waited, runnable, for a CPU meanwhile (`None` where the
    /// kernel does not tell): the load tool's share of the latency, which the server cannot
    /// change (the tool's watch thread decoding events holds the same CPUs).
    own_cpu_wait_us: Option<u64>,
}

impl Put {
    /// The latency less the writer thread's own wait for a CPU.
    fn server_us(&self) -> Option<u64> {
        Some(self.latency_us.saturating_sub(self.own_cpu_wait_us?))
    }
}

/// One writer's sequential puts.
#[derive(Default)]
struct SeqPuts {
    puts: Vec<Put>,
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
        let waited_before = thread_cpu_wait_ns();
        let start = Instant::now();
        match kv.put(key, value_of(i, size), None).await {
            Ok(_) => {
                let latency_us = start.elapsed().as_micros() as u64;
                let own_cpu_wait_us = match (waited_before, thread_cpu_wait_ns()) {
                    (Some(before), Some(after)) => Some(after.saturating_sub(before) / 1000),
                    _ => None,
                };
                out.puts.push(Put { began: start - t0, latency_us, own_cpu_wait_us });
            }
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

/// The puts' latencies less the writer's own CPU waits, sorted; empty unless every put has one.
fn sorted_server_us<'a>(puts: impl Iterator<Item = &'a Put>) -> Vec<u64> {
    puts.map(Put::server_us).collect::<Option<Vec<u64>>>().map_or_else(Vec::new, |v| sorted(v.into_iter()))
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

/// One series of the writer's puts: its start (`t0`), the flag to set when it is done (if any),
/// and where to send its puts.
struct Series {
    t0: Instant,
    done: Option<Arc<AtomicBool>>,
    reply: oneshot::Sender<SeqPuts>,
}

/// The writer, on its own thread: connects, writes the history and answers with its first
/// revision on `ready`, then does one series of sequential puts per message of `series`, until
/// the scenario drops its sender.
async fn writer_thread(
    args: Args,
    base: String,
    ready: oneshot::Sender<Result<i64, String>>,
    mut series: mpsc::UnboundedReceiver<Series>,
) {
    let put_limit = Duration::from_secs(args.grpc_put_timeout_secs);
    let mut kv = match connect_writer(&base).await {
        Ok(kv) => kv,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    match preload(&mut kv, args.catchup_revisions, args.value_size).await {
        Ok(rev) => {
            let _ = ready.send(Ok(rev));
        }
        Err(e) => {
            let _ = ready.send(Err(format!("writing the history: {e}")));
            return;
        }
    }
    while let Some(s) = series.recv().await {
        let puts =
            seq_puts(&mut kv, WRITER_KEY, args.catchup_writer_puts, args.value_size, s.t0, s.t0 + put_limit).await;
        if let Some(done) = s.done {
            done.store(true, Ordering::Release);
        }
        let _ = s.reply.send(puts);
    }
}

/// Has the writer's thread do one series of puts from `t0` and waits for it (at most `limit`);
/// sets `done` (if any) when it is over, here too in case the writer's thread could not.
async fn series(
    tx: &mpsc::UnboundedSender<Series>,
    t0: Instant,
    done: Option<Arc<AtomicBool>>,
    limit: Duration,
) -> SeqPuts {
    let (reply, rx) = oneshot::channel();
    let puts = match tx.send(Series { t0, done: done.clone(), reply }) {
        Ok(()) => from_writer(rx, limit).await,
        Err(_) => Err("the writer's thread ended early".into()),
    };
    if let Some(done) = done {
        done.store(true, Ordering::Release);
    }
    puts.unwrap_or_else(|e| SeqPuts { errors: 1, first_error: Some(e), ..SeqPuts::default() })
}

pub async fn scenario_catchup(args: &Args, server: &Server, tck: f64) -> Catchup {
    let mut out = Catchup {
        streams: args.catchup_watchers.div_ceil(args.watchers_per_stream),
        watchers_wanted: args.catchup_watchers as u64,
        ..Catchup::default()
    };
    // The writer waits on its own thread; every wait for it is bounded (each series stops
    // sending at `--grpc-put-timeout-secs`).
    let limit = Duration::from_secs(args.grpc_put_timeout_secs + 30);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (series_tx, series_rx) = mpsc::unbounded_channel();
    let (args2, base) = (args.clone(), server.base.clone());
    let ready = match spawn_writer(args.writer_fifo, move || writer_thread(args2, base, ready_tx, series_rx)) {
        Ok(_) => from_writer(ready_rx, limit).await.and_then(|r| r),
        Err(e) => Err(e),
    };
    match ready {
        Ok(rev) => out.start_revision = rev,
        Err(e) => {
            out.first_put_error = Some(e);
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
    let idle = series(&series_tx, Instant::now(), None, limit).await;
    out.cpu_idle = span.end(tck);
    out.idle_lat_us = sorted(idle.puts.iter().map(|p| p.latency_us));
    out.idle_server_us = sorted_server_us(idle.puts.iter());
    out.put_errors_idle = idle.errors;
    out.first_put_error = idle.first_error;

    let perf = Perf::start(args, server, "grpc-catchup");
    let span = CpuSpan::start(server.pid);
    let t0 = Instant::now();
    let writer_done = Arc::new(AtomicBool::new(false));
    // The rounds first (so that the first round opens before the writer is told to start); the
    // watch streams are tasks of their own, the writer is on its own thread.
    let rounds = run_rounds(args, &clients, out.start_revision, t0, &writer_done);
    let writer = series(&series_tx, t0, Some(writer_done.clone()), limit);
    let ((rounds, last), during) = tokio::join!(rounds, writer);
    drop(series_tx);
    out.cpu = span.end(tck);
    drop(perf);
    out.rounds = rounds;
    // A little longer for the last round, to catch duplicates.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    last.close(args, &mut out.rounds).await;

    // Both threads' times are against the same monotonic clock, so the puts' starts (since `t0`)
    // and the rounds' spans compare.
    let (inside, between): (Vec<&Put>, Vec<_>) = during.puts.iter().partition(|p| out.rounds.during(p.began));
    out.during_lat_us = sorted(inside.iter().map(|p| p.latency_us));
    out.during_server_us = sorted_server_us(inside.iter().copied());
    out.between_rounds = between.len() as u64;
    out.put_errors_during = during.errors;
    if out.first_put_error.is_none() {
        out.first_put_error = during.first_error;
    }
    out
}
