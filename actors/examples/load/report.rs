//! Each server's results, their percentiles, and the side-by-side table.

use std::fmt::Write as _;

use crate::args::Args;
use crate::fanout::S2;
use crate::grpc_fanout::GrpcFanout;
use crate::puts::S1;
use crate::server::Kind;

/// What one server's run measured.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub cmdline: String,
    pub startup_secs: f64,
    pub s1: Option<S1>,
    pub s2: Option<S2>,
    pub grpc: Option<GrpcFanout>,
    pub hwm_after_s1_kb: Option<u64>,
    pub hwm_after_s2_kb: Option<u64>,
    pub rss_end_kb: Option<u64>,
    pub threads: Option<u64>,
    pub error: Option<String>,
}

/// Nearest-rank percentile of a sorted slice.
fn pct(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |u| format!("{:.2}", u as f64 / 1000.0))
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// A scenario 1 figure of `r`, or `-` where the scenario did not run.
fn s1(r: &Report, f: impl FnOnce(&S1) -> String) -> String {
    r.s1.as_ref().map_or("-".into(), f)
}

/// A scenario 2 figure of `r`, or `-` where the scenario did not run.
fn s2(r: &Report, f: impl FnOnce(&S2) -> String) -> String {
    r.s2.as_ref().map_or("-".into(), f)
}

/// A grpc-fanout figure of `r`, or `-` where the scenario did not run.
fn g(r: &Report, f: impl FnOnce(&GrpcFanout) -> String) -> String {
    r.grpc.as_ref().map_or("-".into(), f)
}

type Row<'a> = &'a mut dyn FnMut(&str, &dyn Fn(&Report) -> String);

fn grpc_rows(args: &Args, row: Row) {
    let title = format!(
        "gRPC fan-out: {}x{} watchers on 1 key, {} conns",
        args.streams, args.watchers_per_stream, args.grpc_connections
    );
    row(&title, &|_| String::new());
    let pacing = if args.in_flight > 0 { format!("{} in flight", args.in_flight) } else { format!("{}/s", args.rate) };
    row(&format!("  {} puts of {} B, {pacing}", args.puts, args.value_size), &|_| String::new());
    row("  connections / watchers created", &|r| {
        g(r, |s| format!("{} / {} of {}", s.connections_open, s.watchers_created, s.watchers_wanted))
    });
    row("  watcher setup (s)", &|r| g(r, |s| format!("{:.2}", s.setup_secs)));
    row("  puts sent / acked / errors", &|r| {
        g(r, |s| format!("{} / {} / {}", s.puts_sent, s.puts_acked, s.put_errors))
    });
    row("  puts/s (sending)", &|r| {
        g(r, |s| format!("{:.0}", s.puts_sent.saturating_sub(1) as f64 / s.put_secs.max(1e-9)))
    });
    row("  put latency p50 (ms)", &|r| ms(r.grpc.as_ref().and_then(|s| pct(&s.put_lat_us, 50.0))));
    row("  put latency p99 (ms)", &|r| ms(r.grpc.as_ref().and_then(|s| pct(&s.put_lat_us, 99.0))));
    row("  events received / expected", &|r| g(r, |s| format!("{} / {}", s.events_received, s.events_expected)));
    row("  events per watch response", &|r| {
        g(r, |s| format!("{:.2}", s.events_received as f64 / s.responses.max(1) as f64))
    });
    row("  events/s (first put to last event)", &|r| g(r, |s| format!("{:.0}", s.events_per_s)));
    row("  put->event p50 (ms)", &|r| ms(r.grpc.as_ref().and_then(|s| s.ev_lat.pct(50.0))));
    row("  put->event p99 (ms)", &|r| ms(r.grpc.as_ref().and_then(|s| s.ev_lat.pct(99.0))));
    row("  put->event max (ms)", &|r| ms(r.grpc.as_ref().and_then(|s| s.ev_lat.max_us())));
    row("  drain after last put answer (s)", &|r| {
        g(r, |s| format!("{:.2}{}", s.drain_secs, if s.drain_timed_out { " TIMEOUT" } else { "" }))
    });
    row("  watchers exactly-once in order", &|r| g(r, |s| format!("{} / {}", s.watchers_exact, s.watchers_created)));
    row("  missing / duplicate / out-of-order", &|r| {
        g(r, |s| format!("{} / {} / {}", s.missing, s.duplicates, s.out_of_order))
    });
    row("  unexpected / canceled / failed streams", &|r| {
        g(r, |s| format!("{} / {} / {}", s.unexpected, s.canceled, s.failed_streams))
    });
    row("  server CPU (s, puts+drain)", &|r| g(r, |s| format!("{:.2}", s.cpu.server_s)));
    row("  server CPU (cores avg)", &|r| g(r, |s| format!("{:.2}", s.cpu.cores())));
    row("  server CPU per event (us)", &|r| {
        g(r, |s| format!("{:.3}", s.cpu.server_s * 1e6 / (s.events_received.max(1) as f64)))
    });
    row("  load tool CPU (s)", &|r| g(r, |s| format!("{:.2}", s.cpu.self_s)));
    row("  load tool CPU per event (us)", &|r| {
        g(r, |s| format!("{:.3}", s.cpu.self_s * 1e6 / (s.events_received.max(1) as f64)))
    });
    row("  server peak RSS (MiB)", &|r| mb(r.grpc.as_ref().and_then(|s| s.peak_rss_kb)));
}

pub fn print_table(args: &Args, reports: &[(Kind, Report)]) {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&Report) -> String| {
        rows.push((name.to_string(), reports.iter().map(|(_, r)| f(r)).collect()));
    };
    row("server startup (s)", &|r| format!("{:.2}", r.startup_secs));
    if args.scenario == "grpc-fanout" {
        grpc_rows(args, &mut row);
    } else {
        http_rows(args, &mut row);
    }
    row("RSS at end (MiB)", &|r| mb(r.rss_end_kb));
    row("threads at end", &|r| r.threads.map_or("-".into(), |t| t.to_string()));
    print_rows(reports, &rows);
    print_errors(args, reports);
}

fn http_rows(args: &Args, row: Row) {
    let s1_title = format!(
        "S1: {} puts, {} clients, {} B values, over {}",
        args.puts, args.clients, args.value_size, args.protocol
    );
    row(&s1_title, &|_| String::new());
    row("  puts ok / errors", &|r| s1(r, |s| format!("{} / {}", s.done, s.errors)));
    row("  wall time (s)", &|r| s1(r, |s| format!("{:.2}", s.secs)));
    row("  puts/s", &|r| s1(r, |s| format!("{:.0}", s.done as f64 / s.secs.max(1e-9))));
    row("  latency p50 (ms)", &|r| ms(r.s1.as_ref().and_then(|s| pct(&s.lat_us, 50.0))));
    row("  latency p99 (ms)", &|r| ms(r.s1.as_ref().and_then(|s| pct(&s.lat_us, 99.0))));
    row("  latency max (ms)", &|r| ms(r.s1.as_ref().and_then(|s| s.lat_us.last().copied())));
    row("  server CPU (s)", &|r| s1(r, |s| format!("{:.2}", s.cpu.server_s)));
    row("  server CPU (cores avg)", &|r| s1(r, |s| format!("{:.2}", s.cpu.cores())));
    row("  server CPU per 1k puts (ms)", &|r| {
        s1(r, |s| format!("{:.1}", s.cpu.server_s * 1e6 / (s.done.max(1) as f64)))
    });
    row("  load tool CPU (s)", &|r| s1(r, |s| format!("{:.2}", s.cpu.self_s)));
    row("  peak RSS after S1 (MiB)", &|r| mb(r.hwm_after_s1_kb));
    let s2_title = format!(
        "S2: {}x{} watchers, {} puts/s for {} s",
        args.streams, args.watchers_per_stream, args.rate, args.duration_secs
    );
    row(&s2_title, &|_| String::new());
    row("  watchers created", &|r| s2(r, |s| format!("{} / {}", s.watchers_created, s.watchers_wanted)));
    row("  watcher setup (s)", &|r| s2(r, |s| format!("{:.2}", s.setup_secs)));
    row("  puts sent / acked / errors", &|r| {
        s2(r, |s| format!("{} / {} / {}", s.puts_sent, s.puts_acked, s.put_errors))
    });
    row("  achieved put rate (/s)", &|r| s2(r, |s| format!("{:.1}", s.put_rate)));
    row("  put latency p50 (ms)", &|r| ms(r.s2.as_ref().and_then(|s| pct(&s.put_lat_us, 50.0))));
    row("  put latency p99 (ms)", &|r| ms(r.s2.as_ref().and_then(|s| pct(&s.put_lat_us, 99.0))));
    row("  events received / expected", &|r| s2(r, |s| format!("{} / {}", s.events_received, s.events_expected)));
    row("  events/s (all watchers)", &|r| s2(r, |s| format!("{:.0}", s.events_per_s)));
    row("  put->event p50 (ms)", &|r| ms(r.s2.as_ref().and_then(|s| pct(&s.ev_lat_us, 50.0))));
    row("  put->event p99 (ms)", &|r| ms(r.s2.as_ref().and_then(|s| pct(&s.ev_lat_us, 99.0))));
    row("  put->event max (ms)", &|r| ms(r.s2.as_ref().and_then(|s| s.ev_lat_us.last().copied())));
    row("  drain after last put (s)", &|r| {
        r.s2.as_ref()
            .map_or("-".into(), |s| format!("{:.2}{}", s.drain_secs, if s.drain_timed_out { " TIMEOUT" } else { "" }))
    });
    row("  watchers exactly-once", &|r| s2(r, |s| format!("{} / {}", s.watchers_exact, s.watchers_created)));
    row("  missing / duplicate", &|r| s2(r, |s| format!("{} / {}", s.missing, s.duplicates)));
    row("  out-of-order / unexpected", &|r| s2(r, |s| format!("{} / {}", s.out_of_order, s.unexpected)));
    row("  canceled / failed streams", &|r| s2(r, |s| format!("{} / {}", s.canceled, s.failed_streams)));
    row("  server CPU (s, puts+drain)", &|r| s2(r, |s| format!("{:.2}", s.cpu.server_s)));
    row("  server CPU (cores avg)", &|r| s2(r, |s| format!("{:.2}", s.cpu.cores())));
    row("  server CPU per 1M events (s)", &|r| {
        s2(r, |s| format!("{:.2}", s.cpu.server_s * 1e6 / (s.events_received.max(1) as f64)))
    });
    row("  load tool CPU (s)", &|r| s2(r, |s| format!("{:.2}", s.cpu.self_s)));
    row("  peak RSS after S2 (MiB)", &|r| mb(r.hwm_after_s2_kb));
}

fn print_rows(reports: &[(Kind, Report)], rows: &[(String, Vec<String>)]) {
    let w0 = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(10).max(10);
    let widths: Vec<usize> = (0..reports.len())
        .map(|i| rows.iter().map(|(_, v)| v[i].len()).max().unwrap_or(0).max(reports[i].0.name().len()).max(14))
        .collect();
    let mut header = format!("{:<w0$}", "");
    for (i, (kind, _)) in reports.iter().enumerate() {
        let name = if *kind == Kind::Etcd { "etcd 3.4" } else { kind.name() };
        let _ = write!(header, " | {:>w$}", name, w = widths[i]);
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for (name, vals) in rows {
        let mut line = format!("{name:<w0$}");
        if vals.iter().all(String::is_empty) {
            println!("{line}");
            continue;
        }
        for (i, v) in vals.iter().enumerate() {
            let _ = write!(line, " | {:>w$}", v, w = widths[i]);
        }
        println!("{line}");
    }
}

fn print_errors(args: &Args, reports: &[(Kind, Report)]) {
    for (kind, r) in reports {
        if let Some(e) = &r.error {
            println!("{} error: {e}", kind.name());
        }
        if let Some(s) = &r.s1 {
            if let Some(e) = &s.first_error {
                println!("{} S1 first put error: {e}", kind.name());
            }
            if s.timed_out {
                println!("{} S1 stopped at its {} s time limit", kind.name(), args.s1_timeout_secs);
            }
        }
        if let Some(s) = &r.s2 {
            if let Some(e) = &s.first_put_error {
                println!("{} S2 first put error: {e}", kind.name());
            }
            if let Some(e) = &s.first_stream_error {
                println!("{} S2 first stream error: {e}", kind.name());
            }
        }
        if let Some(s) = &r.grpc {
            if let Some(e) = &s.first_put_error {
                println!("{} gRPC fan-out first put error: {e}", kind.name());
            }
            if let Some(e) = &s.first_stream_error {
                println!("{} gRPC fan-out first stream error: {e}", kind.name());
            }
            if s.put_timed_out {
                println!("{} gRPC fan-out puts stopped at the {} s limit", kind.name(), args.grpc_put_timeout_secs);
            }
        }
    }
}
