//! mirror-fanout's table: per phase its rows (medians across runs, min..max on the key rows),
//! the three target ratios per run, then each target judged on the ratio of the phases'
//! medians, and the runs' errors.

use crate::args::Args;
use crate::mirror_fanout::{MirrorStat, Phase, PhaseRun, ETCD_CPU, MIRRORS, OTHERS_CPU};
use crate::report::{mb, ms, pct, Report};
use crate::server::Kind;
use crate::table::{median, Cell, Rows};

/// A figure of phase `p` of run `r`, or nothing where the phase could not be measured.
fn ph(r: &Report, p: Phase, f: impl FnOnce(&PhaseRun) -> Cell) -> Cell {
    r.mirror.as_ref().map(|m| &m.phases[p as usize]).filter(|x| x.error.is_none()).map_or(Cell::Empty, f)
}

/// A figure of phase `p` of run `r` as a number (for the ratios).
fn fig(r: &Report, p: Phase, f: impl FnOnce(&PhaseRun) -> Option<f64>) -> Option<f64> {
    r.mirror.as_ref().map(|m| &m.phases[p as usize]).filter(|x| x.error.is_none()).and_then(f)
}

/// Microseconds of phase `p` of run `r` as milliseconds.
fn ph_ms(r: &Report, p: Phase, f: impl FnOnce(&PhaseRun) -> Option<u64>) -> Cell {
    ph(r, p, |x| ms(f(x)))
}

/// Whether phase `p` of run `r` was measured and passed a check.
fn ph_check(r: &Report, p: Phase, f: impl FnOnce(&PhaseRun) -> bool) -> Cell {
    Cell::Count(r.mirror.as_ref().map(|m| &m.phases[p as usize]).filter(|x| x.error.is_none()).is_some_and(f))
}

fn p99_put_ms(x: &PhaseRun) -> Option<f64> {
    pct(&x.put_lat_us, 99.0).map(|u| u as f64 / 1e3)
}

fn p99_event_ms(x: &PhaseRun) -> Option<f64> {
    x.ev_lat.pct(99.0).map(|u| u as f64 / 1e3)
}

/// The three targets: a name, the figure, the two phases divided, and the bound.
type Target = (&'static str, fn(&PhaseRun) -> Option<f64>, Phase, Phase, f64);

const TARGETS: [Target; 3] = [
    ("etcd CPU per put, mirrors / baseline", PhaseRun::etcd_cpu_per_put_us, Phase::Mirrors, Phase::Baseline, 1.2),
    ("etcd put p99, mirrors / direct", p99_put_ms, Phase::Mirrors, Phase::Direct, 0.5),
    ("put->event p99, mirrors / direct", p99_event_ms, Phase::Mirrors, Phase::Direct, 1.0),
];

/// The rows every phase has: the writer's and etcd's.
fn writer_rows(rows: &mut Rows, p: Phase) {
    rows.row("  puts sent / acked / errors", |r| ph(r, p, |x| Cell::ints(&[x.puts_sent, x.puts_acked, x.put_errors])));
    rows.row("  etcd write rate (acked puts/s over the writer's window)", |r| {
        ph(r, p, |x| Cell::num(x.write_rate(), 0))
    });
    rows.key("  etcd CPU per put (us, writer's window)", |r| {
        ph(r, p, |x| x.etcd_cpu_per_put_us().map_or(Cell::Empty, |v| Cell::num(v, 0)))
    });
    rows.row("  etcd CPU per put (us, until the drain ended)", |r| {
        ph(r, p, |x| Cell::num(x.whole.server_s * 1e6 / x.puts_acked.max(1) as f64, 0))
    });
    rows.row("  etcd CPU (cores avg over the writer's window)", |r| ph(r, p, |x| Cell::num(x.window.cores(), 2)));
    rows.key("  put p50 (ms)", |r| ph_ms(r, p, |x| pct(&x.put_lat_us, 50.0)));
    rows.key("  put p99 (ms)", |r| ph_ms(r, p, |x| pct(&x.put_lat_us, 99.0)));
    rows.row("  etcd peak RSS (MiB)", |r| ph(r, p, |x| mb(x.etcd_peak_rss_kb)));
}

/// The rows of the phases with watchers.
fn watcher_rows(rows: &mut Rows, p: Phase) {
    rows.row("  watchers created / wanted", |r| ph(r, p, |x| Cell::ints(&[x.watchers_created, x.watchers_wanted])));
    rows.row("  watcher setup (s)", |r| ph(r, p, |x| Cell::num(x.setup_secs, 2)));
    rows.key("  put->event p50 (ms)", |r| ph_ms(r, p, |x| x.ev_lat.pct(50.0)));
    rows.key("  put->event p99 (ms)", |r| ph_ms(r, p, |x| x.ev_lat.pct(99.0)));
    rows.row("  put->event max (ms)", |r| ph_ms(r, p, |x| x.ev_lat.max_us()));
    rows.row("  events received / expected", |r| ph(r, p, |x| Cell::ints(&[x.events_received, x.events_expected])));
    rows.row("  drain after the writer's last answer (s)", |r| ph(r, p, |x| Cell::num(x.drain_secs, 2)));
    rows.row("  runs with every watcher exactly-once, in order", |r| ph_check(r, p, PhaseRun::exact));
    rows.row("  missing / duplicate / out-of-order", |r| {
        ph(r, p, |x| Cell::ints(&[x.tally.missing, x.tally.duplicates, x.tally.out_of_order]))
    });
    rows.row("  unexpected / canceled / failed streams", |r| {
        ph(r, p, |x| Cell::ints(&[x.tally.unexpected, x.tally.canceled, x.failed_streams]))
    });
    rows.row("  load tool CPU per put (us, until the drain ended)", |r| {
        ph(r, p, |x| Cell::num(x.whole.self_s * 1e6 / x.puts_acked.max(1) as f64, 0))
    });
}

/// Each mirror's figure, in mirror order.
fn each(x: &PhaseRun, f: impl Fn(&MirrorStat) -> Option<f64>, decimals: usize) -> Cell {
    let vs: Option<Vec<f64>> = x.mirrors.iter().map(f).collect();
    vs.filter(|v| !v.is_empty()).map_or(Cell::Empty, |v| Cell::Nums(v, decimals))
}

/// The mirrors' own rows.
fn mirror_rows(rows: &mut Rows) {
    let p = Phase::Mirrors;
    rows.row("  mirror applied revisions/s over the writer's window (each)", |r| {
        ph(r, p, |x| each(x, |m| Some((m.applied[1]? - m.applied[0]?) as f64 / x.window.wall_s.max(1e-9)), 0))
    });
    rows.key("  slowest mirror's apply rate / etcd's write rate", |r| {
        ph(r, p, |x| {
            let rates: Option<Vec<f64>> =
                x.mirrors.iter().map(|m| Some((m.applied[1]? - m.applied[0]?) as f64)).collect();
            let written = x.etcd_rev[1].zip(x.etcd_rev[0]).map(|(b, a)| (b - a) as f64);
            match (rates, written) {
                (Some(r), Some(w)) if w > 0.0 => Cell::num(r.iter().copied().fold(f64::INFINITY, f64::min) / w, 3),
                _ => Cell::Empty,
            }
        })
    });
    rows.row("  mirror revisions behind etcd at the writer's end (each)", |r| {
        ph(r, p, |x| each(x, |m| Some((x.etcd_rev[1]? - m.applied[1]?) as f64), 0))
    });
    rows.row("  runs where every mirror reached etcd's revision", |r| {
        ph_check(r, p, |x| x.etcd_rev[1].is_some() && x.mirrors.iter().all(|m| m.applied[2] >= x.etcd_rev[1]))
    });
    rows.key("  mirrors' CPU per put (us, both, until the drain ended)", |r| {
        ph(r, p, |x| {
            Cell::num(x.mirrors.iter().map(|m| m.cpu.server_s).sum::<f64>() * 1e6 / x.puts_acked.max(1) as f64, 0)
        })
    });
    rows.row("  mirror CPU (cores avg, each)", |r| ph(r, p, |x| each(x, |m| Some(m.cpu.cores()), 2)));
    rows.key("  mirror peak RSS (MiB, each)", |r| {
        ph(r, p, |x| each(x, |m| m.peak_rss_kb.map(|k| k as f64 / 1024.0), 1))
    });
}

/// A target's ratio in one run.
fn run_ratio(r: &Report, t: &Target) -> Option<f64> {
    let (_, f, a, b, _) = *t;
    let (a, b) = (fig(r, a, f)?, fig(r, b, f)?);
    (b > 0.0).then_some(a / b)
}

pub fn print_mirror_table(args: &Args, reports: Vec<Report>) {
    let columns = [(Kind::Etcd, reports)];
    let mut rows = Rows::new(&columns);
    rows.label_columns(&[if args.runs > 1 { "median" } else { "figure" }]);
    let streams = args.mirror_watchers / args.watchers_per_stream.max(1);
    rows.title(&format!(
        "mirror fan-out, {} runs: {} watchers ({}x{} over {} conns) on {} keys ({} per key); writer {} puts/s for {} s, {} B",
        args.runs,
        args.mirror_watchers,
        streams,
        args.watchers_per_stream,
        args.grpc_connections,
        args.keys,
        args.mirror_watchers.div_ceil(args.keys.max(1)),
        args.rate,
        args.duration_secs,
        args.value_size
    ));
    rows.row("load avg (1 min) at the start of baseline / direct / mirrors", |r| {
        r.mirror.as_ref().map_or(Cell::Empty, |m| Cell::Nums(m.phases.iter().map(|x| x.load_start).collect(), 2))
    });
    rows.title("baseline: the writer alone on etcd (etcd on CPU 0)");
    writer_rows(&mut rows, Phase::Baseline);
    rows.title("direct: the watchers on etcd");
    writer_rows(&mut rows, Phase::Direct);
    watcher_rows(&mut rows, Phase::Direct);
    rows.title(&format!("mirrors: the watchers on {MIRRORS} watchkv mirrors (CPU {OTHERS_CPU}), the writer on etcd"));
    writer_rows(&mut rows, Phase::Mirrors);
    watcher_rows(&mut rows, Phase::Mirrors);
    mirror_rows(&mut rows);
    rows.title("targets, ratio within each run");
    for t in &TARGETS {
        rows.key(&format!("  {} (target <= {})", t.0, t.4), |r| {
            run_ratio(r, t).map_or(Cell::Empty, |v| Cell::num(v, 2))
        });
    }
    rows.print();
    let reports = &columns[0].1;
    println!();
    for t in &TARGETS {
        let (name, f, a, b, bound) = *t;
        let med = |p: Phase| median(reports.iter().filter_map(|r| fig(r, p, f)).collect());
        match (med(a), med(b)) {
            (Some(x), Some(y)) if y > 0.0 => {
                let ratio = x / y;
                let verdict = if ratio <= bound { "met" } else { "not met" };
                println!("{name}: {x:.2} / {y:.2} = {ratio:.2} on the medians (target <= {bound}): {verdict}");
            }
            _ => println!("{name}: not measured"),
        }
    }
    print_mirror_errors(reports);
}

fn print_mirror_errors(reports: &[Report]) {
    for (run, r) in reports.iter().enumerate() {
        let Some(m) = &r.mirror else { continue };
        for p in Phase::ALL {
            let x = &m.phases[p as usize];
            let who = format!("run {} {}", run + 1, p.name());
            if let Some(e) = &x.error {
                println!("{who} error: {e}");
            }
            if !x.etcd_cpus.is_empty() && x.etcd_cpus != ETCD_CPU.to_string() {
                println!("{who}: etcd ran on CPUs {}, not only on CPU {ETCD_CPU}", x.etcd_cpus);
            }
            if let Some(e) = &x.first_put_error {
                println!("{who} first put error: {e}");
            }
            if let Some(e) = &x.tally.first_error {
                println!("{who} first stream error: {e}");
            }
            if x.put_timed_out {
                println!("{who}: the writer stopped at its time limit");
            }
            if x.drain_timed_out {
                println!("{who}: the drain timed out");
            }
        }
    }
}
