//! Figures and verdicts: formatting, quantiles and ratios, the `[section] ...` lines and the
//! summary repeated at the end of the run.

use std::sync::Mutex;
use std::time::Duration;

use criterion::Criterion;
use watchkv_actors::SystemStats;

use crate::mode::args;

static SUMMARY: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Prints a labelled figure now and again in the summary at the end.
pub fn note(line: String) {
    eprintln!("{line}");
    SUMMARY.lock().expect("summary").push(line);
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "MEETS TARGET"
    } else {
        "MISSES TARGET"
    }
}

pub fn fmt_d(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

pub fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0} /s")
    }
}

/// The `p`-quantile (0..=1) of `v`, nearest rank.
pub fn quantile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let i = ((s.len() as f64 * p).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

/// p50, p99 and max of a latency sample.
pub fn lat(v: &[Duration]) -> String {
    format!(
        "p50 {} p99 {} max {} (n={})",
        fmt_d(quantile(v, 0.5)),
        fmt_d(quantile(v, 0.99)),
        fmt_d(quantile(v, 1.0)),
        v.len()
    )
}

/// The median (the upper one of an even count); 0 for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// The p50 and p99 of `v` over those of `base`.
pub fn ratios(v: &[Duration], base: &[Duration]) -> (f64, f64) {
    let over = |p: f64| quantile(v, p).as_secs_f64() / quantile(base, p).as_secs_f64();
    (over(0.5), over(0.99))
}

/// Mean time the store spent committing one write batch between two stats snapshots.
pub fn commit_time(a: &SystemStats, b: &SystemStats) -> String {
    let batches = b.write_batches.saturating_sub(a.write_batches);
    let micros = b.write_micros.saturating_sub(a.write_micros);
    if batches == 0 {
        return "- (no batch)".into();
    }
    format!("{:.0} µs (mean of {batches})", micros as f64 / batches as f64)
}

/// `/proc/loadavg`'s first three fields: other work on this 2-core machine skews every figure.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The last criterion target: every noted line again, together.
pub fn summary(_: &mut Criterion) {
    let lines = SUMMARY.lock().expect("summary");
    if lines.is_empty() {
        return;
    }
    eprintln!("\n===== watch bench summary ({} mode) =====", if args().bench { "bench" } else { "smoke" });
    for l in lines.iter() {
        eprintln!("{l}");
    }
}
