//! The table rows of the gRPC scenarios, grpc-fanout, grpc-catchup, grpc-lock and grpc-range.

use crate::args::Args;
use crate::catchup::Catchup;
use crate::grpc_fanout::GrpcFanout;
use crate::lock::LockRun;
use crate::range::RangeRun;
use crate::report::{mb, ms, pct, Report};
use crate::table::{Cell, Rows};
use crate::tally::Tally;

/// A grpc-fanout figure of `r`, or nothing where the scenario did not run.
fn g(r: &Report, f: impl FnOnce(&GrpcFanout) -> Cell) -> Cell {
    r.grpc.as_ref().map_or(Cell::Empty, f)
}

/// A grpc-catchup figure of `r`, or nothing where the scenario did not run.
fn c(r: &Report, f: impl FnOnce(&Catchup) -> Cell) -> Cell {
    r.catchup.as_ref().map_or(Cell::Empty, f)
}

/// A grpc-lock figure of `r`, or nothing where the scenario did not run.
fn l(r: &Report, f: impl FnOnce(&LockRun) -> Cell) -> Cell {
    r.lock.as_ref().map_or(Cell::Empty, f)
}

/// Whether every wanted watcher (of at least one) got exactly its events, in order.
fn all_exact(wanted: u64, tally: &Tally) -> bool {
    wanted > 0 && tally.watchers_exact == wanted
}

/// Microseconds of server CPU per event.
fn per_event_us(cpu_s: f64, events: u64) -> Cell {
    Cell::num(cpu_s * 1e6 / (events.max(1) as f64), 3)
}

pub fn grpc_rows(args: &Args, rows: &mut Rows) {
    let keys = if args.keys == 1 { "1 key".to_string() } else { format!("{} keys", args.keys) };
    let threads = (args.watch_threads as usize).clamp(1, args.grpc_connections.max(1));
    rows.title(&format!(
        "gRPC fan-out: {}x{} watchers on {keys}, {} conns, {threads} client watch thread(s)",
        args.streams, args.watchers_per_stream, args.grpc_connections
    ));
    let pacing = if args.in_flight > 0 { format!("{} in flight", args.in_flight) } else { format!("{}/s", args.rate) };
    let writer = if args.writer_on_watch_thread { "on the first watch thread" } else { "on a thread of its own" };
    rows.title(&format!("  {} puts of {} B, {pacing}, writer {writer}", args.puts, args.value_size));
    rows.row("  connections / watchers created / wanted", |r| {
        g(r, |s| Cell::ints(&[s.connections_open as u64, s.watchers_created, s.watchers_wanted]))
    });
    rows.row("  watcher setup (s)", |r| g(r, |s| Cell::num(s.setup_secs, 2)));
    rows.row("  puts sent / acked / errors", |r| g(r, |s| Cell::ints(&[s.puts_sent, s.puts_acked, s.put_errors])));
    rows.row("  puts/s (sending)", |r| {
        g(r, |s| Cell::num(s.puts_sent.saturating_sub(1) as f64 / s.put_secs.max(1e-9), 0))
    });
    rows.key("  put latency p50 (ms)", |r| ms(r.grpc.as_ref().and_then(|s| pct(&s.put_lat_us, 50.0))));
    rows.key("  put latency p99 (ms)", |r| ms(r.grpc.as_ref().and_then(|s| pct(&s.put_lat_us, 99.0))));
    rows.row("  events received / expected", |r| g(r, |s| Cell::ints(&[s.events_received, s.events_expected])));
    rows.row("  events per watch response", |r| {
        g(r, |s| Cell::num(s.events_received as f64 / s.responses.max(1) as f64, 2))
    });
    rows.key("  events/s (first put to last event)", |r| g(r, |s| Cell::num(s.events_per_s, 0)));
    rows.key("  put->event p50 (ms)", |r| ms(r.grpc.as_ref().and_then(|s| s.ev_lat.pct(50.0))));
    rows.key("  put->event p99 (ms)", |r| ms(r.grpc.as_ref().and_then(|s| s.ev_lat.pct(99.0))));
    rows.row("  put->event max (ms)", |r| ms(r.grpc.as_ref().and_then(|s| s.ev_lat.max_us())));
    rows.row("  drain after last put answer (s)", |r| g(r, |s| Cell::num(s.drain_secs, 2)));
    rows.row("  runs whose drain timed out", |r| Cell::Count(r.grpc.as_ref().is_some_and(|s| s.drain_timed_out)));
    rows.row("  watchers exactly-once in order", |r| {
        g(r, |s| Cell::ints(&[s.tally.watchers_exact, s.watchers_created]))
    });
    rows.row("  runs with every watcher exactly-once", |r| {
        Cell::Count(r.grpc.as_ref().is_some_and(|s| all_exact(s.watchers_wanted, &s.tally) && s.puts_acked > 0))
    });
    rows.row("  missing / duplicate / out-of-order", |r| {
        g(r, |s| Cell::ints(&[s.tally.missing, s.tally.duplicates, s.tally.out_of_order]))
    });
    rows.row("  unexpected / canceled / failed streams", |r| {
        g(r, |s| Cell::ints(&[s.tally.unexpected, s.tally.canceled, s.failed_streams]))
    });
    rows.row("  server CPU (s, puts+drain)", |r| g(r, |s| Cell::num(s.cpu.server_s, 2)));
    rows.row("  server CPU (cores avg)", |r| g(r, |s| Cell::num(s.cpu.cores(), 2)));
    rows.key("  server CPU per event, puts included (us)", |r| {
        g(r, |s| per_event_us(s.cpu.server_s, s.events_received))
    });
    rows.row("  load tool CPU (s)", |r| g(r, |s| Cell::num(s.cpu.self_s, 2)));
    rows.row("  load tool CPU per event (us)", |r| g(r, |s| per_event_us(s.cpu.self_s, s.events_received)));
    rows.key("  server peak RSS (MiB)", |r| mb(r.grpc.as_ref().and_then(|s| s.peak_rss_kb)));
}

pub fn catchup_rows(args: &Args, rows: &mut Rows) {
    rows.title(&format!(
        "gRPC catch-up rounds, back to back: {} watchers ({} per stream, {} conns) on a prefix,",
        args.catchup_watchers, args.watchers_per_stream, args.grpc_connections
    ));
    rows.title(&format!("  each from the first of its {} puts, until all have them all", args.catchup_revisions));
    rows.title(&format!(
        "  one writer: {} sequential puts of {} B idle, then {} while the rounds run",
        args.catchup_writer_puts, args.value_size, args.catchup_writer_puts
    ));
    let lat =
        |r: &Report, pick: fn(&Catchup) -> &Vec<u64>, p: f64| ms(r.catchup.as_ref().and_then(|s| pct(pick(s), p)));
    rows.key("  put p50 idle (ms)", |r| lat(r, |s| &s.idle_lat_us, 50.0));
    rows.key("  put p99 idle (ms)", |r| lat(r, |s| &s.idle_lat_us, 99.0));
    rows.key("  put p50 during a round (ms)", |r| lat(r, |s| &s.during_lat_us, 50.0));
    rows.key("  put p99 during a round (ms)", |r| lat(r, |s| &s.during_lat_us, 99.0));
    // p99 during a round over p99 idle, of the latencies `during` and `idle` pick.
    let p99_ratio = |r: &Report, during: fn(&Catchup) -> &Vec<u64>, idle: fn(&Catchup) -> &Vec<u64>| {
        c(r, |s| match (pct(during(s), 99.0), pct(idle(s), 99.0)) {
            (Some(d), Some(i)) => Cell::num(d as f64 / i.max(1) as f64, 2),
            _ => Cell::Empty,
        })
    };
    rows.key("  put p99 during / idle", |r| p99_ratio(r, |s| &s.during_lat_us, |s| &s.idle_lat_us));
    // The same less the writer thread's own waits for a CPU (`/proc/thread-self/schedstat`):
    // what is left is the network's and the server's.
    rows.key("  put p99 idle, less the writer's own CPU waits (ms)", |r| lat(r, |s| &s.idle_server_us, 99.0));
    rows.key("  put p99 during, less the writer's own CPU waits (ms)", |r| lat(r, |s| &s.during_server_us, 99.0));
    rows.key("  the same, during / idle", |r| p99_ratio(r, |s| &s.during_server_us, |s| &s.idle_server_us));
    rows.row("  puts begun during a round / between rounds", |r| {
        c(r, |s| Cell::ints(&[s.during_lat_us.len() as u64, s.between_rounds]))
    });
    rows.row("  put errors idle / during", |r| c(r, |s| Cell::ints(&[s.put_errors_idle, s.put_errors_during])));
    rows.row("  rounds opened / completed", |r| {
        c(r, |s| Cell::ints(&[s.rounds.spans.len() as u64, s.rounds.completed()]))
    });
    let round_ms = |r: &Report, max: bool| {
        c(r, |s| s.rounds.median_max_secs().map_or(Cell::Empty, |(m, x)| Cell::num(if max { x } else { m } * 1e3, 1)))
    };
    rows.key("  catch-up per round, median (ms)", |r| round_ms(r, false));
    rows.row("  catch-up per round, max (ms)", |r| round_ms(r, true));
    rows.row("  streams per round / watchers created / wanted", |r| {
        c(r, |s| {
            Cell::ints(&[s.streams as u64, s.rounds.watchers_created, s.watchers_wanted * s.rounds.spans.len() as u64])
        })
    });
    rows.row("  events received / expected", |r| {
        c(r, |s| {
            let opened = s.rounds.spans.len() as u64;
            Cell::ints(&[s.rounds.events_received, opened * s.watchers_wanted * args.catchup_revisions as u64])
        })
    });
    rows.row("  rounds with every watcher exactly-once", |r| {
        c(r, |s| Cell::ints(&[s.rounds.exact_rounds, s.rounds.spans.len() as u64]))
    });
    rows.row("  runs with every round complete and exact", |r| {
        Cell::Count(r.catchup.as_ref().is_some_and(|s| {
            let opened = s.rounds.spans.len() as u64;
            opened > 0 && s.rounds.completed() == opened && s.rounds.exact_rounds == opened
        }))
    });
    rows.row("  missing / duplicate / out-of-order", |r| {
        c(r, |s| Cell::ints(&[s.rounds.tally.missing, s.rounds.tally.duplicates, s.rounds.tally.out_of_order]))
    });
    rows.row("  unexpected / canceled / failed streams", |r| {
        c(r, |s| Cell::ints(&[s.rounds.tally.unexpected, s.rounds.tally.canceled, s.rounds.failed_streams]))
    });
    rows.row("  server CPU idle phase (s)", |r| c(r, |s| Cell::num(s.cpu_idle.server_s, 2)));
    rows.key("  server CPU rounds phase (s)", |r| c(r, |s| Cell::num(s.cpu.server_s, 2)));
    rows.key("  server CPU per round, writer included (ms)", |r| {
        c(r, |s| Cell::num(s.cpu.server_s * 1e3 / (s.rounds.spans.len().max(1) as f64), 1))
    });
    rows.row("  server CPU rounds phase (cores avg)", |r| c(r, |s| Cell::num(s.cpu.cores(), 2)));
    rows.row("  load tool CPU rounds phase (s)", |r| c(r, |s| Cell::num(s.cpu.self_s, 2)));
    rows.key("  server peak RSS (MiB)", |r| mb(r.catchup.as_ref().and_then(|s| s.peak_rss_kb)));
}

pub fn lock_rows(args: &Args, rows: &mut Rows) {
    rows.title(&format!(
        "gRPC lock: {} waiters (a lease each, {} conns) queue behind a holder, then hand the lock on",
        args.lock_waiters, args.grpc_connections
    ));
    // Milliseconds per waiter of a span's seconds.
    let per_waiter_ms = |s: &LockRun, secs: f64| Cell::num(secs * 1e3 / (s.waiters.max(1) as f64), 3);
    rows.row("  queue: all waiters' keys written (s)", |r| l(r, |s| Cell::num(s.queue_secs, 2)));
    rows.key("  queue: server CPU per waiter (ms)", |r| l(r, |s| per_waiter_ms(s, s.cpu_queue.server_s)));
    rows.key("  hand-off: holder's unlock to the last waiter's (s)", |r| l(r, |s| Cell::num(s.handoff_secs, 2)));
    rows.key("  hand-off: time per waiter (ms)", |r| l(r, |s| per_waiter_ms(s, s.handoff_secs)));
    rows.key("  hand-off: server CPU per waiter (ms)", |r| l(r, |s| per_waiter_ms(s, s.cpu_handoff.server_s)));
    rows.row("  acquired / overlapping / errors", |r| l(r, |s| Cell::ints(&[s.acquired, s.overlaps, s.errors])));
    rows.row("  runs with every waiter once, alone, in queue order", |r| {
        Cell::Count(
            r.lock
                .as_ref()
                .is_some_and(|s| s.acquired == s.waiters as u64 && s.overlaps == 0 && s.in_order && s.errors == 0),
        )
    });
    rows.row("  load tool CPU, queue + hand-off (s)", |r| {
        l(r, |s| Cell::num(s.cpu_queue.self_s + s.cpu_handoff.self_s, 2))
    });
    rows.key("  server peak RSS (MiB)", |r| mb(r.lock.as_ref().and_then(|s| s.peak_rss_kb)));
}

/// A grpc-range figure of `r`, or nothing where the scenario did not run.
fn rg(r: &Report, f: impl FnOnce(&RangeRun) -> Cell) -> Cell {
    r.range.as_ref().map_or(Cell::Empty, f)
}

pub fn range_rows(args: &Args, rows: &mut Rows) {
    rows.title(&format!(
        "gRPC range: {} keys of {} B under one prefix; one writer: {} sequential puts idle,",
        args.range_keys, args.value_size, args.catchup_writer_puts
    ));
    rows.title(match (args.range_count_only, args.range_in_txn) {
        (true, false) => "  then as many while another client counts the whole prefix back to back (count_only)",
        (false, false) => "  then as many while another client ranges over the whole prefix back to back",
        (true, true) => "  then as many while another client counts the whole prefix back to back, in a read-only txn",
        (false, true) => {
            "  then as many while another client ranges over the whole prefix back to back, in a read-only txn"
        }
    });
    if args.range_busy_writers > 0 {
        rows.title(&format!(
            "  ({} unmeasured writers put beside the measured one meanwhile)",
            args.range_busy_writers
        ));
    }
    let lat = |r: &Report, pick: fn(&RangeRun) -> &Vec<u64>, p: f64| ms(r.range.as_ref().and_then(|s| pct(pick(s), p)));
    rows.key("  put p50 idle (ms)", |r| lat(r, |s| &s.idle_lat_us, 50.0));
    rows.key("  put p99 idle (ms)", |r| lat(r, |s| &s.idle_lat_us, 99.0));
    rows.key("  put p50 during the ranges (ms)", |r| lat(r, |s| &s.during_lat_us, 50.0));
    rows.key("  put p99 during the ranges (ms)", |r| lat(r, |s| &s.during_lat_us, 99.0));
    rows.key("  put max during the ranges (ms)", |r| lat(r, |s| &s.during_lat_us, 100.0));
    rows.key("  put p99 during / idle", |r| {
        rg(r, |s| match (pct(&s.during_lat_us, 99.0), pct(&s.idle_lat_us, 99.0)) {
            (Some(d), Some(i)) => Cell::num(d as f64 / i.max(1) as f64, 2),
            _ => Cell::Empty,
        })
    });
    rows.key("  range p50 (ms)", |r| lat(r, |s| &s.range_lat_us, 50.0));
    rows.row("  ranges done / not answering every key", |r| {
        rg(r, |s| Cell::ints(&[s.range_lat_us.len() as u64, s.short_ranges]))
    });
    rows.row("  runs with every range whole and no error", |r| {
        Cell::Count(
            r.range.as_ref().is_some_and(|s| !s.range_lat_us.is_empty() && s.short_ranges == 0 && s.errors == 0),
        )
    });
    rows.key("  server CPU per range, the puts meanwhile included (ms)", |r| {
        rg(r, |s| Cell::num(s.cpu.server_s * 1e3 / (s.range_lat_us.len().max(1) as f64), 1))
    });
    rows.row("  server CPU during the ranges (cores avg)", |r| rg(r, |s| Cell::num(s.cpu.cores(), 2)));
    rows.key("  server peak RSS (MiB)", |r| mb(r.range.as_ref().and_then(|s| s.peak_rss_kb)));
}
