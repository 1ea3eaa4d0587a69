//! Scenario grpc-range: a writer's puts while another client reads a large range over and
//! over, as a controller listing a whole prefix does. Over gRPC with `etcd-client`: `--range-keys`
//! keys of `--value-size` bytes under one prefix, written by txns of 100 puts; then one writer,
//! on a thread and connection of its own, does `--catchup-writer-puts` sequential puts (on a key
//! outside the prefix) idle, then as many again while a reader on the main thread ranges over
//! the whole prefix back to back. Each range must answer every key (count and rows; with
//! `--range-count-only` the reader asks for the count alone, which must be every key; with
//! `--range-in-txn` it asks inside a txn that only reads). `--range-busy-writers N` adds N
//! unmeasured writers beside the measured one during the ranges.
//!
//! What it shows: whether a large read holds up writes. A server that reads a range's rows on
//! the thread that commits writes makes each put wait behind the read; one that reads them from
//! a snapshot elsewhere (watchkv: `actors/src/store/reads.rs`; etcd 3.4: concurrent read
//! transactions) lets the put through.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, GetResponse, KvClient, Txn, TxnOp, TxnOpResponse};
use tokio::sync::oneshot;

use crate::args::Args;
use crate::grpc_fanout::connect_clients;
use crate::grpc_writer::{connect_writer, from_writer, spawn_writer, value_of};
use crate::sampling::{Cpu, CpuSpan, Perf};
use crate::server::Server;

/// The prefix the reader ranges over, and the writer's key (outside it).
const PREFIX: &str = "/range/k/";
const WRITER_KEY: &str = "/range/writer";
/// The busy writers' keys (outside the prefix), one each.
const BUSY_PREFIX: &str = "/range/busy/";

/// Puts per txn while loading the prefix (etcd's default `--max-txn-ops` is 128).
const LOAD_TXN_OPS: usize = 100;

/// Largest answer the reader takes (the whole prefix is one answer).
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// grpc-range's results.
#[derive(Debug, Default, Clone)]
pub struct RangeRun {
    pub keys: usize,
    /// The writer's put latencies (sorted), idle and while the reader ranges.
    pub idle_lat_us: Vec<u64>,
    pub during_lat_us: Vec<u64>,
    /// The reader's range latencies (sorted).
    pub range_lat_us: Vec<u64>,
    /// Ranges that did not answer every key.
    pub short_ranges: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The server's CPU while the reader ranges.
    pub cpu: Cpu,
    pub peak_rss_kb: Option<u64>,
}

impl RangeRun {
    fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{what}: {e}"));
    }
}

/// Writes `n` keys under [`PREFIX`] in txns of [`LOAD_TXN_OPS`] puts.
async fn load_prefix(kv: &mut KvClient, n: usize, size: usize) -> Result<(), String> {
    for start in (0..n).step_by(LOAD_TXN_OPS) {
        let ops: Vec<TxnOp> = (start..n.min(start + LOAD_TXN_OPS))
            .map(|i| TxnOp::put(format!("{PREFIX}{i:08}"), value_of(i, size), None))
            .collect();
        kv.txn(Txn::new().and_then(ops)).await.map_err(|e| format!("loading the prefix: {e}"))?;
    }
    Ok(())
}

/// `n` sequential puts on [`WRITER_KEY`]; their latencies, sorted.
async fn seq_puts(kv: &mut KvClient, n: usize, size: usize) -> Result<Vec<u64>, String> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        kv.put(WRITER_KEY, value_of(i, size), None).await.map_err(|e| format!("put: {e}"))?;
        lat.push(start.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    Ok(lat)
}

/// The writer, on its own thread: connects, does the idle series and tells `idle`, then waits
/// for `go` and does the series during the ranges, with `busy` unmeasured writers beside it
/// until it ends; returns that series.
async fn writer_thread(
    base: String,
    (n, size, busy): (usize, usize, usize),
    idle: oneshot::Sender<Result<Vec<u64>, String>>,
    go: oneshot::Receiver<()>,
) -> Result<Vec<u64>, String> {
    let mut kv = match connect_writer(&base).await {
        Ok(kv) => kv,
        Err(e) => {
            let _ = idle.send(Err(e.clone()));
            return Err(e);
        }
    };
    let _ = idle.send(seq_puts(&mut kv, n, size).await);
    // Each busy writer on a connection of its own, as independent clients are.
    let mut busy_kvs = Vec::with_capacity(busy);
    for _ in 0..busy {
        busy_kvs.push(connect_writer(&base).await?);
    }
    go.await.map_err(|_| "the scenario ended before the ranges began".to_string())?;
    let measuring = Rc::new(Cell::new(true));
    let busy: Vec<_> = busy_kvs
        .into_iter()
        .enumerate()
        .map(|(w, mut kv)| {
            let measuring = Rc::clone(&measuring);
            actix_rt::spawn(async move {
                let mut i = 0;
                while measuring.get() {
                    if let Err(e) = kv.put(format!("{BUSY_PREFIX}{w}"), value_of(i, size), None).await {
                        return Err(format!("busy writer's put: {e}"));
                    }
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    let lat = seq_puts(&mut kv, n, size).await;
    measuring.set(false);
    for writer in busy {
        writer.await.map_err(|e| format!("busy writer: {e}"))??;
    }
    lat
}

/// One range over the whole prefix, directly or inside a txn that only reads.
async fn range_prefix(kv: &mut KvClient, options: GetOptions, in_txn: bool) -> Result<GetResponse, String> {
    if !in_txn {
        return kv.get(PREFIX, Some(options)).await.map_err(|e| e.to_string());
    }
    let resp = kv.txn(Txn::new().and_then([TxnOp::get(PREFIX, Some(options))])).await.map_err(|e| e.to_string())?;
    match resp.op_responses().pop() {
        Some(TxnOpResponse::Get(get)) => Ok(get),
        other => Err(format!("a txn of one range answered {other:?}")),
    }
}

/// Ranges over the whole prefix until `done` (only its count if `count_only`, inside a
/// read-only txn if `in_txn`); records each range's latency in `out`.
async fn read_until(client: &Client, count_only: bool, in_txn: bool, done: &AtomicBool, out: &mut RangeRun) {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_ANSWER_BYTES);
    let rows = if count_only { 0 } else { out.keys };
    while !done.load(Ordering::Acquire) {
        let start = Instant::now();
        let options = if count_only {
            GetOptions::new().with_prefix().with_count_only()
        } else {
            GetOptions::new().with_prefix()
        };
        match range_prefix(&mut kv, options, in_txn).await {
            Ok(resp) => {
                out.range_lat_us.push(start.elapsed().as_micros() as u64);
                if resp.count() != out.keys as i64 || resp.kvs().len() != rows {
                    out.short_ranges += 1;
                }
            }
            Err(e) => {
                out.fail("range", e);
                return;
            }
        }
    }
}

pub async fn scenario_range(args: &Args, server: &Server, tck: f64) -> RangeRun {
    let mut out = RangeRun { keys: args.range_keys, ..RangeRun::default() };
    let limit = Duration::from_secs(args.grpc_put_timeout_secs + 30);
    let clients = match connect_clients(&server.base, 1).await {
        Ok(c) => c,
        Err(e) => {
            out.fail("connect", e);
            return out;
        }
    };
    if let Err(e) = load_prefix(&mut clients[0].kv_client(), args.range_keys, args.value_size).await {
        out.fail("load", e);
        return out;
    }
    let (idle_tx, idle_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel();
    let (base, series) = (server.base.clone(), (args.catchup_writer_puts, args.value_size, args.range_busy_writers));
    let during = match spawn_writer(args.writer_fifo, move || writer_thread(base, series, idle_tx, go_rx)) {
        Ok(rx) => rx,
        Err(e) => {
            out.fail("writer", e);
            return out;
        }
    };
    match from_writer(idle_rx, limit).await.and_then(|r| r) {
        Ok(lat) => out.idle_lat_us = lat,
        Err(e) => {
            out.fail("idle puts", e);
            return out;
        }
    }

    let perf = Perf::start(args, server, "grpc-range");
    let span = CpuSpan::start(server.pid);
    let done = Arc::new(AtomicBool::new(false));
    let _ = go_tx.send(());
    let writer = {
        let done = Arc::clone(&done);
        async move {
            let result = from_writer(during, limit).await.and_then(|r| r);
            done.store(true, Ordering::Release);
            result
        }
    };
    let mut reads = RangeRun { keys: out.keys, ..RangeRun::default() };
    let (written, ()) =
        tokio::join!(writer, read_until(&clients[0], args.range_count_only, args.range_in_txn, &done, &mut reads));
    out.cpu = span.end(tck);
    drop(perf);
    match written {
        Ok(lat) => out.during_lat_us = lat,
        Err(e) => out.fail("puts during the ranges", e),
    }
    out.range_lat_us = reads.range_lat_us;
    out.range_lat_us.sort_unstable();
    out.short_ranges = reads.short_ranges;
    out.errors += reads.errors;
    if out.first_error.is_none() {
        out.first_error = reads.first_error;
    }
    out
}
