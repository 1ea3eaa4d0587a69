//! The runs: the chosen scenario `--runs` times per server, alternating servers (watchkv, etcd,
//! watchkv, etcd, ...) so that drifts of the machine (other load, thermal, page cache) hit both
//! alike; each run starts a fresh server with a fresh data directory and stops it after.

use crate::args::Args;
use crate::catchup::scenario_catchup;
use crate::fanout::scenario_fanout;
use crate::grpc_fanout::scenario_grpc_fanout;
use crate::http::http_client;
use crate::lock::scenario_lock;
use crate::puts::scenario_puts;
use crate::range::scenario_range;
use crate::report::Report;
use crate::sampling::{loadavg, status_field};
use crate::server::{log_tail, start_server, wait_ready, Kind, Server};

/// Every run's report, per server in `kinds` order, each in run order.
pub async fn run_all(args: &Args, kinds: &[Kind], tck: f64) -> Vec<(Kind, Vec<Report>)> {
    let mut columns: Vec<(Kind, Vec<Report>)> = kinds.iter().map(|&k| (k, Vec::new())).collect();
    for run in 0..args.runs {
        for (kind, reports) in &mut columns {
            if args.runs > 1 {
                println!("== run {} of {}: {}", run + 1, args.runs, kind.name());
            }
            reports.push(run_server(*kind, args, run, tck).await);
        }
    }
    columns
}

/// Starts one server, runs the scenario against it, samples its memory and stops it.
async fn run_server(kind: Kind, args: &Args, run: usize, tck: f64) -> Report {
    let mut rep = Report::default();
    let mut server = match start_server(kind, args, run) {
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
    if args.restarted {
        match server.restart(&probe).await {
            Ok(d) => {
                println!("[{}] restarted on its data as pid {} in {:.2} s", kind.name(), server.pid, d.as_secs_f64())
            }
            Err(e) => {
                rep.error = Some(format!("{e:#}"));
                return rep;
            }
        }
    }
    let pid = server.pid.to_string();
    match args.scenario.as_str() {
        "grpc-fanout" => {
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
        }
        "grpc-catchup" => {
            println!("[{}] ready in {:.2} s; gRPC catch-up, load avg {}", kind.name(), rep.startup_secs, loadavg());
            let mut c = scenario_catchup(args, &server, tck).await;
            c.peak_rss_kb = status_field(&pid, "VmHWM");
            let r = &c.rounds;
            let median = r.median_max_secs().map_or("-".into(), |(m, _)| format!("{m:.3}"));
            println!(
                "[{}] gRPC catch-up: {} rounds ({} complete, {} exactly-once), median round {median} s, {}/{} \
                 puts during a round; load avg {}",
                kind.name(),
                r.spans.len(),
                r.completed(),
                r.exact_rounds,
                c.during_lat_us.len(),
                c.during_lat_us.len() as u64 + c.between_rounds,
                loadavg()
            );
            rep.catchup = Some(c);
        }
        "grpc-lock" => {
            println!(
                "[{}] ready in {:.2} s; gRPC lock hand-off, load avg {}",
                kind.name(),
                rep.startup_secs,
                loadavg()
            );
            let mut l = scenario_lock(args, &server, tck).await;
            l.peak_rss_kb = status_field(&pid, "VmHWM");
            println!(
                "[{}] gRPC lock: {} waiters queued in {:.2} s, {} acquired in {:.2} s; load avg {}",
                kind.name(),
                l.waiters,
                l.queue_secs,
                l.acquired,
                l.handoff_secs,
                loadavg()
            );
            rep.lock = Some(l);
        }
        "grpc-range" => {
            println!("[{}] ready in {:.2} s; gRPC range, load avg {}", kind.name(), rep.startup_secs, loadavg());
            let mut g = scenario_range(args, &server, tck).await;
            g.peak_rss_kb = status_field(&pid, "VmHWM");
            println!(
                "[{}] gRPC range: {} ranges of {} keys during {} puts; load avg {}",
                kind.name(),
                g.range_lat_us.len(),
                g.keys,
                g.during_lat_us.len(),
                loadavg()
            );
            rep.range = Some(g);
        }
        _ => run_http_scenarios(kind, args, &server, tck, &mut rep).await,
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
