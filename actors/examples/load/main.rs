//! A load tool that runs the same load against watchkv and etcd, one server after the other,
//! and prints a side-by-side table. Run with
//! `cargo build --release -p watchkv-actors --bin watchkv --example load` and then
//! `cargo run --release -p watchkv-actors --example load -- [OPTIONS]`.
//!
//! For each server (started here on 127.0.0.1 with a temporary data directory, killed at the end
//! even on errors), one of three scenarios (`--scenario`), or a fourth with both servers at once:
//! - `http` (the default), two steps:
//!   1. puts: `--clients` keep-alive HTTP clients, each doing sequential `POST /v3/kv/put` (or
//!      gRPC `KV/Put` with `--protocol grpc`, the clients dealt over `--put-connections` HTTP/2
//!      connections and `--put-threads` client threads), for `--puts` puts in total → puts/s
//!      and latency percentiles;
//!   2. watch fan-out: `--streams` `POST /v3/watch` connections (chunked body, `Expect:
//!      100-continue`, so that etcd 3.4 streams both ways), each creating `--watchers-per-stream`
//!      watchers on one prefix, then `--rate` puts/s for `--duration-secs` seconds whose values
//!      carry a sequence number and the send time → events/s, put→event latency, and a check
//!      that every watcher got every acknowledged put exactly once and in revision order;
//! - `grpc-fanout`: watch fan-out over gRPC with `etcd-client`: `--grpc-connections` connections
//!   carrying `--streams` streams of `--watchers-per-stream` watchers, watcher `w` of a stream on
//!   key `/grpcfan/key/<w % --keys>`, one writer putting `--puts` values on the keys round robin
//!   with `--in-flight` puts outstanding → events/s, server CPU per event, put→event and put
//!   latency, and the check that each watcher got exactly its key's acknowledged puts, once each,
//!   in revision order (e.g. `--streams 1000 --watchers-per-stream 10 --keys 10`);
//! - `grpc-catchup`: a writer's put latency idle and while catch-ups run: `--catchup-revisions`
//!   puts on a prefix; the writer's `--catchup-writer-puts` sequential puts on another key (idle
//!   p50/p99); then the writer's puts again while catch-up rounds run back to back, each round
//!   opening `--catchup-watchers` watchers (`--watchers-per-stream` per stream over
//!   `--grpc-connections` connections, reused by every round) on the prefix from its first
//!   revision, waiting until all have caught up from history and closing their streams as the
//!   next round opens, until the writer is done → p50/p99 of the puts begun during a round (and
//!   how many), the during/idle p99 ratio, the rounds completed, the catch-up time per round
//!   (median, max), and the check that every round's watchers got exactly the prefix's puts in
//!   order;
//! - `grpc-lock`: `--lock-waiters` clients (each with a lease of its own, over
//!   `--grpc-connections` connections) call `Lock` on one name behind a holder, then the holder
//!   unlocks and each waiter unlocks as soon as it holds the lock → the time and server CPU to
//!   queue them and to hand the lock through them all, and the check that each acquired once,
//!   never two at a time, in the queue's order;
//! - `grpc-range`: `--range-keys` keys under one prefix; one writer (a thread and connection
//!   of its own) does `--catchup-writer-puts` sequential puts idle, then as many while a reader
//!   ranges over the whole prefix back to back → put p50/p99 idle and during, their p99 ratio,
//!   the ranges' latency and count, and the check that each range answered every key
//!   (`--range-count-only`: each range asks only for the count, which must be every key;
//!   `--range-in-txn`: each range is asked inside a txn that only reads);
//! - `mirror-fanout`: what moving etcd's watchers to watchkv mirrors saves etcd. One
//!   single-member etcd pinned to CPU 0 (`taskset -c 0`, or `sched_setaffinity` without
//!   taskset), everything else (the mirrors and this tool, its writer thread too) on CPU 1, and
//!   per run three phases, each with a fresh etcd: `baseline` (the writer alone), `direct`
//!   (`--mirror-watchers` watchers on etcd, `--watchers-per-stream` per stream over
//!   `--grpc-connections` connections, watcher `g` on key `g % --keys`) and `mirrors` (two
//!   `watchkv --upstream <etcd>` mirrors with fresh data directories, the same watchers split
//!   evenly over them). In each the writer puts `--rate` 64 B values per second (paced, one
//!   connection, on etcd) for `--duration-secs` → etcd's CPU per put over the writer's window,
//!   put p50/p99, put→event p50/p99, the exactly-once check, each mirror's apply rate (its
//!   `/metrics` `watchkv_mirror_applied_revision`) against etcd's write rate, the mirrors' CPU
//!   per put and peak RSS, and the targets: etcd CPU per put mirrors/baseline ≤ 1.2, etcd put
//!   p99 mirrors/direct ≤ 0.5, put→event p99 mirrors/direct ≤ 1. Its defaults: 10k watchers,
//!   `--keys 100` (100 watchers per key), `--rate 500`, `--duration-secs 10`. With `--runs N`
//!   the phases run N times (baseline, direct, mirrors, then the other way round) and the table
//!   shows medians and the per-run ratios.
//!
//! Every scenario also reports the server's CPU time (utime+stime from `/proc/<pid>/stat`) and
//! its peak RSS (`VmHWM` from `/proc/<pid>/status`). With `--runs N` the scenario runs N times
//! per server, alternating servers (watchkv, etcd, watchkv, ...), each run on a fresh server and
//! data directory; the table shows each figure's median across a server's runs, the min..max on
//! the key rows, the watchkv/etcd ratio of the key rows' medians, and how many runs passed the
//! exactly-once check (e.g. `5/5`). With `--restarted` each server, once it answers, takes one
//! put, is stopped with SIGTERM and is started again on its data, which must still hold the put,
//! before the scenario (not `mirror-fanout`), so that the run measures a server reopened on its
//! own data, as every server is after its first restart.
//!
//! The client side runs on one thread (an actix-rt system), so that the servers keep most of the
//! machine; its own CPU time is reported too. Scenario 1 can deal its put clients over more
//! (`--put-threads N`). grpc-fanout can deal its watch connections and
//! streams over more (`--watch-threads N`, each its own actix-rt system): one thread decodes at
//! most about 2.6M events/s here, which bounds events/s on one key for either server. Every loop is bounded in count and in time. The
//! writer of `grpc-fanout` (unless `--writer-on-watch-thread`) and `grpc-catchup` is the
//! exception: it runs on a thread of its own,
//! in a single-threaded actix-rt system of its own, with its own gRPC connection
//! (`grpc_writer::spawn_writer`), because on the main thread its puts waited behind the decoding
//! of millions of watch events (in grpc-catchup that thread is ~83% busy), so that their latency
//! measured the client's queueing more than the server (watchkv's put p99 during catch-up rounds
//! was 25 ms against 0.54 ms idle). Its puts' send times, which the watch side needs for the
//! put→event latency, are atomics timed against an `Instant` both threads share; the rest comes
//! back when it is done. The load tool's CPU time covers both threads. With `--writer-fifo`
//! (which needs `CAP_SYS_NICE`) that thread runs at `SCHED_FIFO`, so that the writer's
//! latencies leave out its own waits for a CPU behind the tool's other threads on shared cores.
//!
//! Modules: `args` (the command line), `runs` (the runs, one server after the other), `server`
//! (starting and stopping the servers), `sampling` (`/proc` CPU and memory, `perf`), `http`
//! (gateway client and HTTP/1.1 decoder), `put_client` (puts over HTTP or gRPC), `puts` and
//! `fsync_probe` (step 1), `watch_lines`, `watch_stream`, `fanout` and `drain` (step 2),
//! `grpc_fanout`, `grpc_watch`, `grpc_writer`, `tally` and `hist` (grpc-fanout), `catchup` and
//! `catchup_rounds` (grpc-catchup, on `grpc_watch` and `tally`), `lock` (grpc-lock), `mirror_fanout`,
//! `mirror_report` and `pinning` (mirror-fanout, on the grpc-fanout modules), `report`,
//! `grpc_report` and `table` (the rows, medians across runs, and the table).
//! This file checks the command line and prints the header and the table.

mod args;
mod catchup;
mod catchup_rounds;
mod drain;
mod fanout;
mod fsync_probe;
mod grpc_fanout;
mod grpc_report;
mod grpc_watch;
mod grpc_writer;
mod hist;
mod http;
mod lock;
mod mirror_fanout;
mod mirror_report;
mod pinning;
mod put_client;
mod puts;
mod range;
mod report;
mod runs;
mod sampling;
mod server;
mod table;
mod tally;
mod watch_lines;
mod watch_stream;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::args::Args;
use crate::mirror_fanout::{run_mirror_fanout, ETCD_CPU, MIRRORS, OTHERS_CPU};
use crate::mirror_report::print_mirror_table;
use crate::report::print_table;
use crate::runs::run_all;
use crate::sampling::{clk_tck, loadavg};
use crate::server::{shell_quote, Kind};
use anyhow::{anyhow, bail};

fn main() -> anyhow::Result<()> {
    let args = Args::parse_with_scenario_defaults();
    let argv: Vec<String> = std::env::args().map(|a| shell_quote(&a)).collect();
    println!("command: {}", argv.join(" "));
    println!(
        "host: {} cores, load avg {} at start, uptime: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        Command::new("uptime")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    let first_line = |prog: &Path, arg: &str| {
        Command::new(prog)
            .arg(arg)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
            .unwrap_or_else(|e| format!("({e})"))
    };
    let modified = std::fs::metadata(&args.watchkv_bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map_or_else(|| "?".to_string(), |d| format!("{} s ago", d.as_secs()));
    println!(
        "watchkv: {} ({}, built {modified}); etcd: {} ({})",
        args.watchkv_bin.display(),
        first_line(&args.watchkv_bin, "--version"),
        args.etcd_bin.display(),
        first_line(&args.etcd_bin, "--version")
    );
    let kinds: Vec<Kind> = match args.only.as_str() {
        "both" => vec![Kind::Watchkv, Kind::Etcd],
        "watchkv" => vec![Kind::Watchkv],
        "etcd" => vec![Kind::Etcd],
        other => return Err(anyhow!("--only must be both, watchkv or etcd, not {other:?}")),
    };
    if kinds.contains(&Kind::Watchkv) && !args.watchkv_bin.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p watchkv-actors --bin watchkv`",
            args.watchkv_bin.display()
        );
    }
    let positive = [
        args.streams,
        args.watchers_per_stream,
        args.clients,
        args.grpc_connections,
        args.runs,
        args.keys,
        args.catchup_revisions,
    ];
    if positive.contains(&0) {
        bail!(
            "--streams, --watchers-per-stream, --clients, --grpc-connections, --runs, --keys and \
             --catchup-revisions must be positive"
        );
    }
    if !["http", "grpc-fanout", "grpc-catchup", "grpc-lock", "grpc-range", "mirror-fanout"]
        .contains(&args.scenario.as_str())
    {
        bail!(
            "--scenario must be http, grpc-fanout, grpc-catchup, grpc-lock, grpc-range or mirror-fanout, not {:?}",
            args.scenario
        );
    }
    let tck = clk_tck();
    let started = Instant::now();
    if args.scenario == "mirror-fanout" {
        check_mirror_fanout(&args)?;
        let reports = actix_rt::System::new().block_on(run_mirror_fanout(&args, tck));
        println!("load avg {} at end; total {:.1} s", loadavg(), started.elapsed().as_secs_f64());
        println!();
        print_mirror_table(&args, reports);
        return Ok(());
    }
    let columns = actix_rt::System::new().block_on(run_all(&args, &kinds, tck));
    println!("load avg {} at end; total {:.1} s", loadavg(), started.elapsed().as_secs_f64());
    println!();
    print_table(&args, &columns);
    Ok(())
}

/// mirror-fanout's own conditions: both servers, two CPUs to pin them to, watchers that fill
/// whole streams, connections that split evenly over the mirrors, and some puts.
fn check_mirror_fanout(args: &Args) -> anyhow::Result<()> {
    if !args.watchkv_bin.exists() || !args.etcd_bin.exists() {
        bail!("mirror-fanout needs both {} and {}", args.watchkv_bin.display(), args.etcd_bin.display());
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    if cores < 2 {
        bail!("mirror-fanout pins etcd to CPU {ETCD_CPU} and the rest to CPU {OTHERS_CPU}: {cores} CPUs here");
    }
    if args.mirror_watchers == 0 || !args.mirror_watchers.is_multiple_of(args.watchers_per_stream) {
        bail!("--mirror-watchers must be a positive multiple of --watchers-per-stream");
    }
    if !args.grpc_connections.is_multiple_of(MIRRORS) {
        bail!("--grpc-connections must be a multiple of {MIRRORS}, so that the watchers split evenly over the mirrors");
    }
    if args.rate == 0 || args.duration_secs == 0 {
        bail!("--rate and --duration-secs must be positive");
    }
    Ok(())
}
