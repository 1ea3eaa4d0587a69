//! Scenario mirror-fanout: what moving etcd's watchers to watchkv mirrors saves etcd. One
//! single-member etcd pinned to CPU 0; every other process (the mirrors and this load tool, its
//! writer thread included) on CPU 1, so that etcd's core is its own, as on a machine of its own.
//! Each run has three phases, each with a fresh etcd and data directory:
//! 1. baseline: the writer alone against etcd;
//! 2. direct: `--mirror-watchers` watchers on etcd (`--watchers-per-stream` per stream, streams
//!    over `--grpc-connections` connections, watcher `g` of them all on key `g % --keys`);
//! 3. mirrors: two watchkv mirrors (`--upstream` etcd, fresh data directories) with the same
//!    watchers split evenly over them (half the connections and half the streams each, every
//!    key's watchers on both), the writer still on etcd.
//!
//! In every phase the writer (`grpc_writer`, on its own thread and connection) puts `--rate`
//! values of `--value-size` bytes per second for `--duration-secs` on the keys round robin, paced
//! (a put does not wait for the one before). Measured: etcd's CPU time over the writer's window
//! (its first put to its last answer) per acknowledged put, put p50/p99, and with watchers the
//! put→event latencies, the drain and the exactly-once check (`tally`); with mirrors also each
//! mirror's `watchkv_mirror_applied_revision` (from `/metrics`) at the writer's start and end
//! against etcd's revision, the mirrors' CPU until the drain ended, and their peak RSS. Phases run
//! baseline, direct, mirrors in odd runs and the other way round in even ones, so that a drift of
//! the machine does not favour one phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::KvClient;

use crate::args::Args;
use crate::drain::{drain, Received};
use crate::grpc_fanout::{close_streams, connect_clients, keys, spawn_streams, stream_keys, wait_created};
use crate::grpc_watch::{Shared, WatchCfg};
use crate::grpc_writer::Writer;
use crate::hist::Hist;
use crate::http::http_client;
use crate::pinning::{cpus_allowed, pin_self};
use crate::report::Report;
use crate::sampling::{loadavg, status_field, Cpu, CpuSpan, Perf};
use crate::server::{log_tail, start_server_on, wait_ready, Kind, Server};
use crate::tally::{events_for, Tally};

/// Mirrors in the mirrors phase.
pub const MIRRORS: usize = 2;
/// etcd's CPU, and everyone else's.
pub const ETCD_CPU: usize = 0;
pub const OTHERS_CPU: usize = 1;

/// The phases of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Baseline,
    Direct,
    Mirrors,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Baseline, Phase::Direct, Phase::Mirrors];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Baseline => "baseline",
            Phase::Direct => "direct",
            Phase::Mirrors => "mirrors",
        }
    }
}

/// One mirror's figures in the mirrors phase.
#[derive(Debug, Default, Clone)]
pub struct MirrorStat {
    /// `watchkv_mirror_applied_revision` at the writer's start, at its end, and after the drain.
    pub applied: [Option<i64>; 3],
    /// Its CPU from the writer's start until the drain ended.
    pub cpu: Cpu,
    pub peak_rss_kb: Option<u64>,
}

/// One phase of one run.
#[derive(Debug, Default, Clone)]
pub struct PhaseRun {
    /// The 1-minute load average when the phase started.
    pub load_start: f64,
    /// The CPUs etcd was allowed on (`Cpus_allowed_list`).
    pub etcd_cpus: String,
    pub watchers_wanted: u64,
    pub watchers_created: u64,
    pub setup_secs: f64,
    pub puts_sent: u64,
    pub puts_acked: u64,
    pub put_errors: u64,
    pub first_put_error: Option<String>,
    pub put_timed_out: bool,
    /// Sorted.
    pub put_lat_us: Vec<u64>,
    /// etcd's revision just before the writer's first put and just after its last answer.
    pub etcd_rev: [Option<i64>; 2],
    /// etcd's CPU (and this process's) over the writer's window.
    pub window: Cpu,
    /// The same from the writer's start until the drain ended.
    pub whole: Cpu,
    pub events_expected: u64,
    pub events_received: u64,
    pub ev_lat: Hist,
    pub tally: Tally,
    pub failed_streams: u64,
    pub drain_secs: f64,
    pub drain_timed_out: bool,
    pub etcd_peak_rss_kb: Option<u64>,
    pub mirrors: Vec<MirrorStat>,
    /// Why the phase could not be measured (its figures are then left out).
    pub error: Option<String>,
}

impl PhaseRun {
    /// etcd's CPU per acknowledged put over the writer's window, in µs.
    pub fn etcd_cpu_per_put_us(&self) -> Option<f64> {
        (self.puts_acked > 0).then(|| self.window.server_s * 1e6 / self.puts_acked as f64)
    }

    /// Acknowledged puts per second of the writer's window: etcd's write rate.
    pub fn write_rate(&self) -> f64 {
        self.puts_acked as f64 / self.window.wall_s.max(1e-9)
    }

    /// Whether every watcher (of at least one) got exactly its key's acknowledged puts, in order.
    pub fn exact(&self) -> bool {
        self.watchers_wanted > 0 && self.tally.watchers_exact == self.watchers_wanted && self.puts_acked > 0
    }
}

/// One run: its phases, indexed by `Phase as usize`.
#[derive(Debug, Default, Clone)]
pub struct MirrorRun {
    pub phases: [PhaseRun; 3],
}

/// Every run of mirror-fanout, one report each. Moves this process to `OTHERS_CPU` first.
pub async fn run_mirror_fanout(args: &Args, tck: f64) -> Vec<Report> {
    if let Err(e) = pin_self(OTHERS_CPU) {
        println!("could not move the load tool to CPU {OTHERS_CPU}: {e}");
    }
    println!("load tool on CPUs {}; etcd on CPU {ETCD_CPU}; mirrors on CPU {OTHERS_CPU}", cpus_allowed("self"));
    let mut reports = Vec::new();
    for run in 0..args.runs {
        let mut order = Phase::ALL;
        if run % 2 == 1 {
            order.reverse();
        }
        let mut m = MirrorRun::default();
        for phase in order {
            println!("== run {} of {}: {} (load avg {})", run + 1, args.runs, phase.name(), loadavg());
            let p = run_phase(args, phase, run, tck).await;
            println!(
                "[{}] {}/{} puts acked, put p99 {} ms, etcd CPU {:.2} s over {:.2} s; {}/{} events, drain {:.2} s{}",
                phase.name(),
                p.puts_acked,
                p.puts_sent,
                crate::report::pct(&p.put_lat_us, 99.0).map_or("-".into(), |u| format!("{:.2}", u as f64 / 1e3)),
                p.window.server_s,
                p.window.wall_s,
                p.events_received,
                p.events_expected,
                p.drain_secs,
                p.error.as_ref().map_or(String::new(), |e| format!("; error: {e}"))
            );
            m.phases[phase as usize] = p;
        }
        reports.push(Report { mirror: Some(m), ..Report::default() });
    }
    reports
}

/// Starts the phase's servers, measures, and stops them.
async fn run_phase(args: &Args, phase: Phase, run: usize, tck: f64) -> PhaseRun {
    let mut out = PhaseRun {
        load_start: loadavg().split_whitespace().next().and_then(|l| l.parse().ok()).unwrap_or(f64::NAN),
        ..PhaseRun::default()
    };
    if let Err(e) = servers_and_measure(args, phase, run, tck, &mut out).await {
        out.error = Some(e);
    }
    out
}

async fn servers_and_measure(
    args: &Args,
    phase: Phase,
    run: usize,
    tck: f64,
    out: &mut PhaseRun,
) -> Result<(), String> {
    let http = http_client(4);
    let mut etcd = start_server_on(Kind::Etcd, args, run, Some(ETCD_CPU), &[]).map_err(|e| format!("{e:#}"))?;
    wait_ready(&mut etcd, &http).await.map_err(|e| format!("{e:#}"))?;
    // Read once it answers: until taskset has exec'd etcd, the pid runs where this process does.
    out.etcd_cpus = cpus_allowed(&etcd.pid.to_string());
    println!("[etcd] pid {} on CPUs {}: {}", etcd.pid, out.etcd_cpus, etcd.cmdline);
    let mut mirrors = Vec::new();
    if phase == Phase::Mirrors {
        let upstream = ["--upstream".to_string(), etcd.base.clone()];
        for _ in 0..MIRRORS {
            let m = start_server_on(Kind::Watchkv, args, run, Some(OTHERS_CPU), &upstream)
                .map_err(|e| format!("mirror: {e:#}"))?;
            mirrors.push(m);
        }
        for m in &mut mirrors {
            wait_ready(m, &http).await.map_err(|e| format!("mirror: {e:#}"))?;
            println!("[mirror] pid {} on CPUs {}: {}", m.pid, cpus_allowed(&m.pid.to_string()), m.cmdline);
        }
    }
    out.mirrors = vec![MirrorStat::default(); mirrors.len()];
    let targets: Vec<String> = match phase {
        Phase::Baseline => Vec::new(),
        Phase::Direct => vec![etcd.base.clone()],
        Phase::Mirrors => mirrors.iter().map(|m| m.base.clone()).collect(),
    };
    let measured = measure(args, phase, &etcd, &mirrors, &targets, tck, out, &http).await;
    out.etcd_peak_rss_kb = status_field(&etcd.pid.to_string(), "VmHWM");
    for (stat, m) in out.mirrors.iter_mut().zip(&mirrors) {
        stat.peak_rss_kb = status_field(&m.pid.to_string(), "VmHWM");
    }
    for s in std::iter::once(&mut etcd).chain(mirrors.iter_mut()) {
        if let Ok(Some(status)) = s.child.try_wait() {
            return Err(format!(
                "{} (pid {}) exited during the phase ({status}); log:\n{}",
                s.kind.name(),
                s.pid,
                log_tail(&s.log, 20)
            ));
        }
    }
    measured
}

/// etcd's current revision, from the header of a read.
async fn etcd_revision(kv: &mut KvClient) -> Option<i64> {
    let resp = actix_rt::time::timeout(Duration::from_secs(10), kv.get("/mirrorfan/probe", None)).await.ok()?.ok()?;
    resp.header().map(|h| h.revision())
}

/// A mirror's `watchkv_mirror_applied_revision`, from its `/metrics`.
async fn applied_revision(http: &awc::Client, mirror: &Server) -> Option<i64> {
    let mut resp = http.get(format!("{}/metrics", mirror.base)).send().await.ok()?;
    let body = resp.body().limit(1 << 20).await.ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("watchkv_mirror_applied_revision ")?.trim().parse().ok())
}

/// Samples every mirror's applied revision into slot `at` of its `applied`.
async fn sample_applied(http: &awc::Client, mirrors: &[Server], out: &mut PhaseRun, at: usize) {
    for (stat, m) in out.mirrors.iter_mut().zip(mirrors) {
        stat.applied[at] = applied_revision(http, m).await;
    }
}

/// The watchers on `targets` (none in the baseline), the writer on etcd, the drain and the check.
#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    phase: Phase,
    etcd: &Server,
    mirrors: &[Server],
    targets: &[String],
    tck: f64,
    out: &mut PhaseRun,
    http: &awc::Client,
) -> Result<(), String> {
    let puts = (args.rate * args.duration_secs) as usize;
    let epoch = Instant::now();
    let streams = if targets.is_empty() { 0 } else { args.mirror_watchers / args.watchers_per_stream };
    out.watchers_wanted = (streams * args.watchers_per_stream) as u64;
    // Each target gets an equal share of the connections and a contiguous block of the streams,
    // so that every key's watchers (on streams `k / per_stream + j * keys / per_stream`) are
    // spread over the mirrors too; stream `i` of a block rides its target's connection `i % n`.
    let mut per_target = Vec::new();
    for base in targets {
        per_target.push(connect_clients(base, args.grpc_connections / targets.len()).await?);
    }
    let clients: Vec<_> = (0..streams)
        .map(|i| {
            let conns = &per_target[i * targets.len() / streams];
            conns[i % conns.len()].clone()
        })
        .collect();
    let cfg = Arc::new(WatchCfg {
        keys: keys(args.keys),
        prefix: false,
        start_revision: 0,
        max_seq: puts,
        complete_after: 0,
        epoch,
        setup_deadline: epoch + Duration::from_secs(30),
    });
    let shared = Arc::new(Shared::new(puts, epoch));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Watcher `g` of them all on key `g % --keys`: `--mirror-watchers / --keys` per key.
    let per_stream = stream_keys(streams, args.watchers_per_stream, true);
    let handles = spawn_streams(&clients, &cfg, &shared, &per_stream, &stop_rx);
    wait_created(std::slice::from_ref(&shared), out.watchers_wanted, cfg.setup_deadline).await;
    out.setup_secs = epoch.elapsed().as_secs_f64();
    out.watchers_created = shared.created();
    if out.watchers_created < out.watchers_wanted || shared.failed_streams() > 0 {
        out.tally = close_streams(&stop_tx, handles, &[], args.keys).await;
        return Err(format!(
            "{} of {} watchers created, {} streams failed: {}",
            out.watchers_created,
            out.watchers_wanted,
            shared.failed_streams(),
            out.tally.first_error.clone().unwrap_or_default()
        ));
    }

    let mut paced = args.clone();
    paced.in_flight = 0;
    let writer = Writer::start(&paced, &etcd.base, cfg.keys.clone(), epoch, shared.sent_us.clone()).await?;
    let mut probe = connect_clients(&etcd.base, 1).await?.remove(0).kv_client();
    out.etcd_rev[0] = etcd_revision(&mut probe).await;
    sample_applied(http, mirrors, out, 0).await;
    let perf = Perf::start(args, etcd, &format!("mirror-fanout-{}", phase.name()));
    let window = CpuSpan::start(etcd.pid);
    let whole = CpuSpan::start(etcd.pid);
    let mirror_spans: Vec<CpuSpan> = mirrors.iter().map(|m| CpuSpan::start(m.pid)).collect();
    let written = writer.run().await;
    out.window = window.end(tck);
    drop(perf);
    out.etcd_rev[1] = etcd_revision(&mut probe).await;
    sample_applied(http, mirrors, out, 1).await;
    let written = written?;
    out.puts_sent = written.sent;
    out.puts_acked = written.lat_us.len() as u64;
    out.put_errors = written.errors;
    out.first_put_error = written.first_error;
    out.put_timed_out = written.timed_out;
    out.put_lat_us = written.lat_us;

    let sent: Vec<bool> = (0..puts).map(|seq| (seq as u64) < out.puts_sent).collect();
    out.events_expected = events_for(&per_stream, &written.acked, args.keys);
    let most = events_for(&per_stream, &sent, args.keys);
    let received = || Received {
        events: shared.events(),
        last_event: shared.last_event(),
        failed_streams: shared.failed_streams(),
    };
    (out.drain_timed_out, out.drain_secs) =
        drain(received, out.events_expected, most, Duration::from_secs(args.drain_timeout_secs)).await;
    out.whole = whole.end(tck);
    for (stat, span) in out.mirrors.iter_mut().zip(&mirror_spans) {
        stat.cpu = span.end(tck);
    }
    sample_applied(http, mirrors, out, 2).await;
    out.tally = close_streams(&stop_tx, handles, &written.acked, args.keys).await;
    out.failed_streams = shared.failed_streams();
    out.events_received = shared.events();
    out.ev_lat = shared.take_lat();
    Ok(())
}
