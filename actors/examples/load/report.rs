//! Each run's results, the helpers that turn them into table cells, the HTTP scenarios' rows,
//! and the errors printed under the table.

use crate::args::Args;
use crate::catchup::Catchup;
use crate::fanout::S2;
use crate::grpc_fanout::GrpcFanout;
use crate::grpc_report::{catchup_rows, grpc_rows, lock_rows, range_rows};
use crate::lock::LockRun;
use crate::mirror_fanout::MirrorRun;
use crate::puts::S1;
use crate::range::RangeRun;
use crate::table::{Cell, Columns, Rows};

/// What one server's run measured.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub cmdline: String,
    pub startup_secs: f64,
    pub s1: Option<S1>,
    pub s2: Option<S2>,
    pub grpc: Option<GrpcFanout>,
    pub catchup: Option<Catchup>,
    pub lock: Option<LockRun>,
    pub range: Option<RangeRun>,
    /// mirror-fanout's three phases (its reports carry nothing else).
    pub mirror: Option<MirrorRun>,
    pub hwm_after_s1_kb: Option<u64>,
    pub hwm_after_s2_kb: Option<u64>,
    pub rss_end_kb: Option<u64>,
    pub threads: Option<u64>,
    pub error: Option<String>,
}

/// Nearest-rank percentile of a sorted slice.
pub fn pct(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Microseconds as milliseconds.
pub fn ms(us: Option<u64>) -> Cell {
    us.map_or(Cell::Empty, |u| Cell::num(u as f64 / 1000.0, 2))
}

/// KiB as MiB.
pub fn mb(kb: Option<u64>) -> Cell {
    kb.map_or(Cell::Empty, |k| Cell::num(k as f64 / 1024.0, 1))
}

/// A scenario 1 figure of `r`, or nothing where the scenario did not run.
fn s1(r: &Report, f: impl FnOnce(&S1) -> Cell) -> Cell {
    r.s1.as_ref().map_or(Cell::Empty, f)
}

/// A scenario 2 figure of `r`, or nothing where the scenario did not run.
fn s2(r: &Report, f: impl FnOnce(&S2) -> Cell) -> Cell {
    r.s2.as_ref().map_or(Cell::Empty, f)
}

/// Prints the table of every run: medians per server (see `table`), then the runs' errors.
pub fn print_table(args: &Args, columns: &Columns) {
    let mut rows = Rows::new(columns);
    if args.runs > 1 {
        rows.title(&format!("medians of {} runs per server (alternating servers)", args.runs));
    }
    rows.row("server startup (s)", |r| Cell::num(r.startup_secs, 2));
    match args.scenario.as_str() {
        "grpc-fanout" => grpc_rows(args, &mut rows),
        "grpc-catchup" => catchup_rows(args, &mut rows),
        "grpc-lock" => lock_rows(args, &mut rows),
        "grpc-range" => range_rows(args, &mut rows),
        _ => http_rows(args, &mut rows),
    }
    rows.row("RSS at end (MiB)", |r| mb(r.rss_end_kb));
    rows.row("threads at end", |r| r.threads.map_or(Cell::Empty, |t| Cell::ints(&[t])));
    rows.print();
    print_errors(args, columns);
}

fn http_rows(args: &Args, rows: &mut Rows) {
    let over = if args.protocol == "grpc" {
        let threads = (args.put_threads as usize).clamp(1, args.clients.max(1));
        let connections = (args.put_connections as usize).clamp(threads, args.clients.max(1));
        format!("grpc, {connections} connection(s), {threads} client thread(s)")
    } else {
        args.protocol.clone()
    };
    rows.title(&format!("S1: {} puts, {} clients, {} B values, over {over}", args.puts, args.clients, args.value_size));
    rows.row("  puts ok / errors", |r| s1(r, |s| Cell::ints(&[s.done, s.errors])));
    rows.row("  wall time (s)", |r| s1(r, |s| Cell::num(s.secs, 2)));
    rows.key("  puts/s", |r| s1(r, |s| Cell::num(s.done as f64 / s.secs.max(1e-9), 0)));
    rows.key("  latency p50 (ms)", |r| ms(r.s1.as_ref().and_then(|s| pct(&s.lat_us, 50.0))));
    rows.key("  latency p99 (ms)", |r| ms(r.s1.as_ref().and_then(|s| pct(&s.lat_us, 99.0))));
    rows.row("  latency max (ms)", |r| ms(r.s1.as_ref().and_then(|s| s.lat_us.last().copied())));
    rows.row("  fdatasync of one append, same disk, p50 (ms)", |r| {
        ms(r.s1.as_ref().and_then(|s| pct(&s.fsync_us, 50.0)))
    });
    rows.key("  latency p50 above fdatasync p50 (ms)", |r| {
        ms(r.s1.as_ref().and_then(|s| Some(pct(&s.lat_us, 50.0)?.saturating_sub(pct(&s.fsync_us, 50.0)?))))
    });
    rows.row("  server CPU (s)", |r| s1(r, |s| Cell::num(s.cpu.server_s, 2)));
    rows.row("  server CPU (cores avg)", |r| s1(r, |s| Cell::num(s.cpu.cores(), 2)));
    rows.key("  server CPU per 1k puts (ms)", |r| {
        s1(r, |s| Cell::num(s.cpu.server_s * 1e6 / (s.done.max(1) as f64), 1))
    });
    rows.row("  load tool CPU (s)", |r| s1(r, |s| Cell::num(s.cpu.self_s, 2)));
    rows.row("  peak RSS after S1 (MiB)", |r| mb(r.hwm_after_s1_kb));
    rows.title(&format!(
        "S2: {}x{} watchers, {} puts/s for {} s",
        args.streams, args.watchers_per_stream, args.rate, args.duration_secs
    ));
    rows.row("  watchers created / wanted", |r| s2(r, |s| Cell::ints(&[s.watchers_created, s.watchers_wanted])));
    rows.row("  watcher setup (s)", |r| s2(r, |s| Cell::num(s.setup_secs, 2)));
    rows.row("  puts sent / acked / errors", |r| s2(r, |s| Cell::ints(&[s.puts_sent, s.puts_acked, s.put_errors])));
    rows.row("  achieved put rate (/s)", |r| s2(r, |s| Cell::num(s.put_rate, 1)));
    rows.key("  put latency p50 (ms)", |r| ms(r.s2.as_ref().and_then(|s| pct(&s.put_lat_us, 50.0))));
    rows.key("  put latency p99 (ms)", |r| ms(r.s2.as_ref().and_then(|s| pct(&s.put_lat_us, 99.0))));
    rows.row("  events received / expected", |r| s2(r, |s| Cell::ints(&[s.events_received, s.events_expected])));
    rows.key("  events/s (all watchers)", |r| s2(r, |s| Cell::num(s.events_per_s, 0)));
    rows.key("  put->event p50 (ms)", |r| ms(r.s2.as_ref().and_then(|s| pct(&s.ev_lat_us, 50.0))));
    rows.key("  put->event p99 (ms)", |r| ms(r.s2.as_ref().and_then(|s| pct(&s.ev_lat_us, 99.0))));
    rows.row("  put->event max (ms)", |r| ms(r.s2.as_ref().and_then(|s| s.ev_lat_us.last().copied())));
    rows.row("  drain after last put (s)", |r| s2(r, |s| Cell::num(s.drain_secs, 2)));
    rows.row("  runs whose drain timed out", |r| Cell::Count(r.s2.as_ref().is_some_and(|s| s.drain_timed_out)));
    rows.row("  watchers exactly-once", |r| s2(r, |s| Cell::ints(&[s.watchers_exact, s.watchers_created])));
    rows.row("  runs with every watcher exactly-once", |r| {
        Cell::Count(
            r.s2.as_ref()
                .is_some_and(|s| s.watchers_wanted > 0 && s.puts_acked > 0 && s.watchers_exact == s.watchers_wanted),
        )
    });
    rows.row("  missing / duplicate", |r| s2(r, |s| Cell::ints(&[s.missing, s.duplicates])));
    rows.row("  out-of-order / unexpected", |r| s2(r, |s| Cell::ints(&[s.out_of_order, s.unexpected])));
    rows.row("  canceled / failed streams", |r| s2(r, |s| Cell::ints(&[s.canceled, s.failed_streams])));
    rows.row("  server CPU (s, puts+drain)", |r| s2(r, |s| Cell::num(s.cpu.server_s, 2)));
    rows.row("  server CPU (cores avg)", |r| s2(r, |s| Cell::num(s.cpu.cores(), 2)));
    rows.key("  server CPU per 1M events (s)", |r| {
        s2(r, |s| Cell::num(s.cpu.server_s * 1e6 / (s.events_received.max(1) as f64), 2))
    });
    rows.row("  load tool CPU (s)", |r| s2(r, |s| Cell::num(s.cpu.self_s, 2)));
    rows.key("  peak RSS after S2 (MiB)", |r| mb(r.hwm_after_s2_kb));
}

/// What a gRPC stream error means where it is the load tool's own limit, not the server's.
fn hint(error: &str) -> &'static str {
    if error.contains("too_many_data_frames") {
        // h2 (0.4.20) gives up on a connection that holds too many unread small DATA frames: one
        // client thread reading thousands of watchers' one-event responses off one connection.
        " (the load tool's h2 client gave up on a connection with too many unread small DATA \
         frames: spread the streams over more --grpc-connections)"
    } else {
        ""
    }
}

fn print_errors(args: &Args, columns: &Columns) {
    for (kind, reports) in columns {
        for (run, r) in reports.iter().enumerate() {
            // "watchkv" with one run, "watchkv run 2" with several.
            let who = if reports.len() > 1 { format!("{} run {}", kind.name(), run + 1) } else { kind.name().into() };
            if let Some(e) = &r.error {
                println!("{who} error: {e}");
            }
            if let Some(s) = &r.s1 {
                if let Some(e) = &s.first_error {
                    println!("{who} S1 first put error: {e}");
                }
                if s.timed_out {
                    println!("{who} S1 stopped at its {} s time limit", args.s1_timeout_secs);
                }
            }
            if let Some(s) = &r.s2 {
                if let Some(e) = &s.first_put_error {
                    println!("{who} S2 first put error: {e}");
                }
                if let Some(e) = &s.first_stream_error {
                    println!("{who} S2 first stream error: {e}");
                }
            }
            if let Some(s) = &r.grpc {
                if let Some(e) = &s.first_put_error {
                    println!("{who} gRPC fan-out first put error: {e}");
                }
                if let Some(e) = &s.tally.first_error {
                    println!("{who} gRPC fan-out first stream error: {e}{}", hint(e));
                }
                if s.put_timed_out {
                    println!("{who} gRPC fan-out puts stopped at the {} s limit", args.grpc_put_timeout_secs);
                }
            }
            if let Some(e) = r.lock.as_ref().and_then(|l| l.first_error.as_ref()) {
                println!("{who} lock first error: {e}");
            }
            if let Some(e) = r.range.as_ref().and_then(|l| l.first_error.as_ref()) {
                println!("{who} range first error: {e}");
            }
            if let Some(c) = &r.catchup {
                if let Some(e) = &c.first_put_error {
                    println!("{who} catch-up first put error: {e}");
                }
                if let Some(e) = &c.rounds.tally.first_error {
                    println!("{who} catch-up first stream error: {e}{}", hint(e));
                }
            }
        }
    }
}
