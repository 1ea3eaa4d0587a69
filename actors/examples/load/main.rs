//! A load tool that runs the same HTTP/JSON load against watchkv and etcd, one after the other,
//! and prints a side-by-side table. Run with
//! `cargo build --release -p watchkv-actors --bin watchkv --example load` and then
//! `cargo run --release -p watchkv-actors --example load -- [OPTIONS]`.
//!
//! For each server (started here on 127.0.0.1 with a temporary data directory, killed at the end
//! even on errors):
//! 1. puts: `--clients` keep-alive HTTP clients, each doing sequential `POST /v3/kv/put` (or
//!    gRPC `KV/Put` with `--protocol grpc`), for `--puts` puts in total → puts/s and latency
//!    percentiles;
//! 2. watch fan-out: `--streams` `POST /v3/watch` connections (chunked body, `Expect:
//!    100-continue`, so that etcd 3.4 streams both ways), each creating `--watchers-per-stream`
//!    watchers on one prefix, then `--rate` puts/s for `--duration-secs` seconds whose values
//!    carry a sequence number and the send time → events/s, put→event latency, and a check that
//!    every watcher got every acknowledged put exactly once and in revision order;
//! 3. with `--scenario grpc-fanout` instead of 1 and 2: one key's watch fan-out over gRPC with
//!    `etcd-client` (`--grpc-connections` connections carrying `--streams` streams of
//!    `--watchers-per-stream` watchers, one writer keeping `--in-flight` puts outstanding) →
//!    events/s, server CPU per event, put→event and put latency, the same exactly-once check;
//! 4. the server's CPU time (utime+stime from `/proc/<pid>/stat`) per scenario and its peak RSS
//!    (`VmHWM` from `/proc/<pid>/status`).
//!
//! The client side runs on one thread (an actix-rt system), so that the servers keep most of the
//! machine; its own CPU time is reported too. Every loop is bounded in count and in time.
//!
//! Modules: `args` (the command line), `server` (starting and stopping the servers), `sampling`
//! (`/proc` CPU and memory, `perf`), `http` (gateway client and HTTP/1.1 decoder), `put_client`
//! (puts over HTTP or gRPC), `puts` (scenario 1), `watch_lines`, `watch_stream` and `fanout`
//! (scenario 2), `grpc_fanout`, `grpc_watch`, `grpc_writer` and `hist` (scenario 3), `report`
//! (percentiles and the table). This file drives one server after the other.

mod args;
mod drain;
mod fanout;
mod grpc_fanout;
mod grpc_watch;
mod grpc_writer;
mod hist;
mod http;
mod put_client;
mod puts;
mod report;
mod sampling;
mod server;
mod watch_lines;
mod watch_stream;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail};
use clap::Parser;

use crate::args::Args;
use crate::fanout::scenario_fanout;
use crate::grpc_fanout::scenario_grpc_fanout;
use crate::http::http_client;
use crate::puts::scenario_puts;
use crate::report::{print_table, Report};
use crate::sampling::{clk_tck, loadavg, status_field};
use crate::server::{log_tail, shell_quote, start_server, wait_ready, Kind, Server};

/// Starts one server, runs both scenarios against it, samples its memory and stops it.
async fn run_server(kind: Kind, args: &Args, tck: f64) -> Report {
    let mut rep = Report::default();
    let mut server = match start_server(kind, args) {
        Ok(s) => s,
        Err(e) => {
            rep.error = Some(format!("{e:#}"));
            return rep;
        }
    };
    rep.cmdline = server.cmdline.clone();
    println!("[{}] started pid {}: {}", kind.name(), server.pid, server.cmdline);
    let probe = http_client(4);
    match wait_ready(&mut server, &probe).await {
        Ok(d) => rep.startup_secs = d.as_secs_f64(),
        Err(e) => {
            rep.error = Some(format!("{e:#}"));
            return rep;
        }
    }
    let pid = server.pid.to_string();
    if args.scenario == "grpc-fanout" {
        println!("[{}] ready in {:.2} s; gRPC fan-out, load avg {}", kind.name(), rep.startup_secs, loadavg());
        let mut g = scenario_grpc_fanout(args, &server, tck).await;
        g.peak_rss_kb = status_field(&pid, "VmHWM");
        println!(
            "[{}] gRPC fan-out: {}/{} events, drain {:.2} s; load avg {}",
            kind.name(),
            g.events_received,
            g.events_expected,
            g.drain_secs,
            loadavg()
        );
        rep.grpc = Some(g);
    } else {
        run_http_scenarios(kind, args, &server, tck, &mut rep).await;
    }
    rep.rss_end_kb = status_field(&pid, "VmRSS");
    rep.threads = status_field(&pid, "Threads");
    if let Ok(Some(status)) = server.child.try_wait() {
        rep.error = Some(format!("server exited during the run ({status}); log:\n{}", log_tail(&server.log, 20)));
    } else {
        let tail = log_tail(&server.log, 5);
        if !tail.trim().is_empty() {
            println!("[{}] last log lines:\n{tail}", kind.name());
        }
    }
    drop(server);
    rep
}

/// Scenarios 1 (puts) and 2 (watch fan-out over the JSON gateway).
async fn run_http_scenarios(kind: Kind, args: &Args, server: &Server, tck: f64, rep: &mut Report) {
    let pid = server.pid.to_string();
    println!("[{}] ready in {:.2} s; scenario 1 (puts), load avg {}", kind.name(), rep.startup_secs, loadavg());
    let s1 = scenario_puts(args, server, tck).await;
    rep.hwm_after_s1_kb = status_field(&pid, "VmHWM");
    println!(
        "[{}] scenario 1: {} puts in {:.2} s, {} errors; scenario 2 (watch fan-out), load avg {}",
        kind.name(),
        s1.done,
        s1.secs,
        s1.errors,
        loadavg()
    );
    rep.s1 = Some(s1);
    let s2 = scenario_fanout(args, server, tck).await;
    rep.hwm_after_s2_kb = status_field(&pid, "VmHWM");
    println!(
        "[{}] scenario 2: {}/{} events, drain {:.2} s; load avg {}",
        kind.name(),
        s2.events_received,
        s2.events_expected,
        s2.drain_secs,
        loadavg()
    );
    rep.s2 = Some(s2);
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    if args.streams == 0 || args.watchers_per_stream == 0 || args.clients == 0 || args.grpc_connections == 0 {
        bail!("--streams, --watchers-per-stream, --clients and --grpc-connections must be positive");
    }
    if !["http", "grpc-fanout"].contains(&args.scenario.as_str()) {
        bail!("--scenario must be http or grpc-fanout, not {:?}", args.scenario);
    }
    let tck = clk_tck();
    let started = Instant::now();
    let reports = actix_rt::System::new().block_on(async {
        let mut reports = Vec::new();
        for kind in kinds {
            let rep = run_server(kind, &args, tck).await;
            reports.push((kind, rep));
        }
        reports
    });
    println!("load avg {} at end; total {:.1} s", loadavg(), started.elapsed().as_secs_f64());
    println!();
    print_table(&args, &reports);
    Ok(())
}
