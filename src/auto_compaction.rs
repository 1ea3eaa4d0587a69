//! Owns the automatic compaction policies, ported from etcd's `server/etcdserver/api/v3compactor`
//! (`periodic.go`, `revision.go`) as synchronous state machines: the runtime calls
//! [`AutoCompactor::tick`] every [`AutoCompactor::tick_interval`] with the time and the current
//! revision, compacts at the revision it is given, and reports the outcome; tests drive them
//! with a clock of their own.
//!
//! - **Periodic** (`--auto-compaction-mode periodic --auto-compaction-retention 1h`): keeps about
//!   the last `retention` of history. It records the revision every tenth of the period (at most
//!   six minutes apart), waits one whole period before the first compaction, then compacts at
//!   the revision recorded one period ago, at most once per period and at least hourly.
//! - **Revision** (`--auto-compaction-mode revision --auto-compaction-retention 1000`): every five
//!   minutes, compacts at `current - retention` when that moved since the last compaction.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// etcd's `retryDivisor`: a periodic compactor records revisions ten times per period.
const RETRY_DIVISOR: u32 = 10;
/// etcd's `revInterval`: how often the revision compactor checks.
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The longest a periodic compactor waits between two compactions (etcd: once the retention
/// passes an hour, it compacts hourly).
const HOUR: Duration = Duration::from_secs(3600);

/// How much history to keep, as etcd's `--auto-compaction-mode` and `--auto-compaction-retention`
/// set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep about this much time of history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// A retention that does not parse, with etcd-like wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid auto-compaction retention {value:?} for mode {mode}: {reason}")]
pub struct RetentionError {
    mode: &'static str,
    value: String,
    reason: String,
}

impl AutoCompaction {
    /// Parses etcd's flags: `mode` is `periodic` or `revision`; `retention` is, for `periodic`,
    /// a whole number of hours or a Go duration (`30m`, `1h30m`, `1.5h`), for `revision` a
    /// number of revisions. `0` turns automatic compaction off (`Ok(None)`), as in etcd.
    ///
    /// # Errors
    /// An unknown mode, or a retention that does not parse or is negative.
    pub fn from_flags(mode: &str, retention: &str) -> Result<Option<Self>, RetentionError> {
        let err =
            |mode, reason: &str| RetentionError { mode, value: retention.to_string(), reason: reason.to_string() };
        match mode {
            "periodic" => {
                let period = match retention.trim().parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                    Err(_) => parse_go_duration(retention).map_err(|r| err("periodic", &r))?,
                };
                Ok((!period.is_zero()).then_some(Self::Periodic(period)))
            }
            "revision" => {
                let revs = retention.trim().parse::<i64>().map_err(|e| err("revision", &e.to_string()))?;
                if revs < 0 {
                    return Err(err("revision", "must not be negative"));
                }
                Ok((revs > 0).then_some(Self::Revision(revs)))
            }
            _ => Err(RetentionError {
                mode: "unknown",
                value: mode.to_string(),
                reason: "the mode must be \"periodic\" or \"revision\"".to_string(),
            }),
        }
    }
}

impl fmt::Display for AutoCompaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Periodic(d) => write!(f, "periodic, keeping {d:?}"),
            Self::Revision(n) => write!(f, "revision, keeping {n} revisions"),
        }
    }
}

/// Parses a Go `time.ParseDuration` string: a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `1h30m` or `2.5s`.
///
/// # Errors
/// The reason it does not parse.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| format!("bad number {:?}", &rest[..number_len]))?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("missing unit in duration {s:?}")),
            unit => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).map_err(|e| e.to_string())
}

impl FromStr for AutoCompaction {
    type Err = RetentionError;

    /// `periodic:<retention>` or `revision:<retention>` (one string for configuration files).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mode, retention) = s.split_once(':').unwrap_or(("periodic", s));
        Self::from_flags(mode, retention)?.ok_or_else(|| RetentionError {
            mode: "periodic",
            value: s.to_string(),
            reason: "a zero retention turns compaction off".to_string(),
        })
    }
}

/// The running state of an automatic compaction policy.
#[derive(Debug)]
pub enum AutoCompactor {
    /// etcd's `Periodic`.
    Periodic(Periodic),
    /// etcd's `Revision`.
    Revision(Revision),
}

impl AutoCompactor {
    /// Starts `policy` at `now` with the store at `current_rev`.
    #[must_use]
    pub fn new(policy: AutoCompaction, now: Instant, current_rev: i64) -> Self {
        match policy {
            AutoCompaction::Periodic(period) => Self::Periodic(Periodic::new(period, now, current_rev)),
            AutoCompaction::Revision(retention) => Self::Revision(Revision::new(retention, REVISION_CHECK_INTERVAL)),
        }
    }

    /// How often [`Self::tick`] wants to be called.
    #[must_use]
    pub fn tick_interval(&self) -> Duration {
        match self {
            Self::Periodic(p) => p.retry_interval,
            Self::Revision(r) => r.interval,
        }
    }

    /// One tick: the revision to compact at now, if any. Report the outcome with
    /// [`Self::compacted`] before the next tick.
    pub fn tick(&mut self, now: Instant, current_rev: i64) -> Option<i64> {
        match self {
            Self::Periodic(p) => p.tick(now, current_rev),
            Self::Revision(r) => r.tick(current_rev),
        }
    }

    /// Reports a compaction [`Self::tick`] asked for: `succeeded` is true when it compacted or
    /// found the revision already compacted (etcd counts `ErrCompacted` as success).
    pub fn compacted(&mut self, now: Instant, rev: i64, succeeded: bool) {
        if !succeeded {
            return;
        }
        match self {
            Self::Periodic(p) => {
                p.last_success = now;
                p.last_revision = rev;
            }
            Self::Revision(r) => r.last = rev,
        }
    }
}

/// etcd's periodic compactor (`periodic.go Run`).
#[derive(Debug)]
pub struct Periodic {
    retry_interval: Duration,
    compact_interval: Duration,
    retentions: usize,
    /// Revisions recorded every `retry_interval`; the first is the one `period` ago.
    revs: VecDeque<i64>,
    last_success: Instant,
    /// The revision last compacted at: an idle store's next candidate is the same revision,
    /// which is skipped (its compaction would only find it compacted and restart the wait).
    last_revision: i64,
    /// The first compaction waits a whole period; later ones `compact_interval`.
    base_interval: Duration,
}

impl Periodic {
    fn new(period: Duration, now: Instant, current_rev: i64) -> Self {
        let capped = period.min(HOUR);
        let retry_interval = (capped / RETRY_DIVISOR).max(Duration::from_millis(1));
        let retentions = usize::try_from(period.as_nanos() / retry_interval.as_nanos()).unwrap_or(usize::MAX) + 1;
        Self {
            retry_interval,
            compact_interval: capped,
            retentions,
            revs: VecDeque::from([current_rev]),
            last_success: now,
            last_revision: 0,
            base_interval: period,
        }
    }

    fn tick(&mut self, now: Instant, current_rev: i64) -> Option<i64> {
        // Ticks come on a fixed grid of `retry_interval`, each a little late by its own amount,
        // and the last success is stamped when its answer arrives: half a tick of slack keeps
        // "a period since the last success" from falling short by microseconds and waiting a
        // whole extra tick (etcd restarts its timer after each pass, so it never falls short).
        let elapsed = now.saturating_duration_since(self.last_success) + self.retry_interval / 2;
        let candidate = self.revs.front().copied().unwrap_or(current_rev);
        // etcd skips the revision it compacted last (`rev == lastRevision`): on an idle store
        // that compaction would find it compacted, count as a success and restart the wait, so
        // the first writes after a quiet spell would wait up to a whole interval.
        let due = elapsed >= self.base_interval && candidate != self.last_revision;
        let rev = due.then(|| {
            // Compactions are at least `compact_interval` apart from now on.
            self.base_interval = self.compact_interval;
            candidate
        });
        // etcd records the revision at the top of its loop, after the compaction.
        self.revs.push_back(current_rev);
        while self.revs.len() > self.retentions {
            self.revs.pop_front();
        }
        rev
    }
}

/// etcd's revision compactor (`revision.go Run`).
#[derive(Debug)]
pub struct Revision {
    retention: i64,
    interval: Duration,
    /// The last revision compacted at (etcd's `prev`).
    last: i64,
}

impl Revision {
    /// A revision compactor that checks every `interval` (etcd: five minutes).
    #[must_use]
    pub fn new(retention: i64, interval: Duration) -> Self {
        Self { retention, interval, last: 0 }
    }

    fn tick(&mut self, current_rev: i64) -> Option<i64> {
        let rev = current_rev - self.retention;
        (rev > 0 && rev != self.last).then_some(rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_etcd_reads_them() {
        assert_eq!(AutoCompaction::from_flags("periodic", "0"), Ok(None));
        assert_eq!(AutoCompaction::from_flags("periodic", "1"), Ok(Some(AutoCompaction::Periodic(HOUR))));
        assert_eq!(
            AutoCompaction::from_flags("periodic", "1h30m"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(5400))))
        );
        assert_eq!(
            AutoCompaction::from_flags("periodic", "2.5s"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_millis(2500))))
        );
        assert_eq!(AutoCompaction::from_flags("revision", "1000"), Ok(Some(AutoCompaction::Revision(1000))));
        assert_eq!(AutoCompaction::from_flags("revision", "0"), Ok(None));
        assert!(AutoCompaction::from_flags("revision", "-5").is_err());
        assert!(AutoCompaction::from_flags("revision", "1h").is_err());
        assert!(AutoCompaction::from_flags("periodic", "10x").is_err());
        assert!(AutoCompaction::from_flags("daily", "1").is_err());
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert!(parse_go_duration("5").is_err(), "a number without a unit is not a Go duration");
    }

    /// etcd's `TestPeriodicHourly` (2 h retention, a revision getter that counts up per call):
    /// the first compaction at revision 1 after two hours, then hourly at 10, 20, 30.
    #[test]
    fn periodic_matches_etcds_hourly_test() {
        let start = Instant::now();
        let mut c = AutoCompactor::new(AutoCompaction::Periodic(2 * HOUR), start, 1);
        let mut rev = 1;
        let mut compactions = Vec::new();
        for tick in 1..=40 {
            let now = start + c.tick_interval() * tick;
            rev += 1;
            if let Some(at) = c.tick(now, rev) {
                compactions.push(at);
                c.compacted(now, at, true);
            }
        }
        assert_eq!(compactions, vec![1, 10, 20]);
    }

    /// With a 1 h period and revisions recorded every 6 minutes,
    /// nothing is compacted during the first hour; then every hour, at the revision recorded an
    /// hour earlier.
    #[test]
    fn periodic_compacts_what_is_one_period_old() {
        let start = Instant::now();
        let mut c = AutoCompactor::new(AutoCompaction::Periodic(HOUR), start, 1);
        assert_eq!(c.tick_interval(), Duration::from_secs(360));
        let mut rev = 1;
        let mut compactions = Vec::new();
        // Three hours of ticks, one revision written per minute.
        for tick in 1..=30 {
            rev += 6;
            let now = start + c.tick_interval() * tick;
            if let Some(at) = c.tick(now, rev) {
                compactions.push((tick, at));
                c.compacted(now, at, true);
            }
        }
        // First at one hour (tick 10) with the revision recorded at the start; then every hour
        // with the revision recorded one hour before.
        assert_eq!(compactions, vec![(10, 1), (20, 55), (30, 115)]);
    }

    /// The actor's ticks run late by varying amounts and a compaction's answer comes after its
    /// tick: compactions still come every period, not every period and one tick.
    #[test]
    fn periodic_compacts_every_period_when_ticks_and_answers_run_late() {
        let start = Instant::now();
        let period = Duration::from_secs(20);
        let mut c = AutoCompactor::new(AutoCompaction::Periodic(period), start, 1);
        let step = c.tick_interval();
        let mut compacted_at = Vec::new();
        for tick in 1..=60u32 {
            // 0-4 ms late, the tick after a compaction less late than the compaction's own.
            let late = Duration::from_millis(u64::from((tick * 7) % 5));
            let now = start + step * tick + late;
            if let Some(rev) = c.tick(now, i64::from(tick)) {
                compacted_at.push(tick);
                c.compacted(now + Duration::from_millis(3), rev, true);
            }
        }
        assert_eq!(compacted_at, vec![10, 20, 30, 40, 50, 60]);
    }

    #[test]
    fn periodic_retries_after_a_failure_at_the_next_tick() {
        let start = Instant::now();
        let period = Duration::from_secs(600);
        let mut c = AutoCompactor::new(AutoCompaction::Periodic(period), start, 5);
        let step = c.tick_interval();
        assert_eq!(step, Duration::from_secs(60));
        for tick in 1..10 {
            assert_eq!(c.tick(start + step * tick, 5 + i64::from(tick)), None);
        }
        let now = start + step * 10;
        let first = c.tick(now, 15).expect("due after one period");
        c.compacted(now, first, false);
        let retried = c.tick(now + step, 16).expect("a failure is retried at the next tick");
        assert_eq!(retried, first, "still the revision one period old");
        c.compacted(now + step, retried, true);
        assert_eq!(c.tick(now + step * 2, 17), None, "not again before another interval");
    }

    /// On an idle store the revision one period old is the one compacted last: it is not
    /// compacted again (which would restart the wait); the first compaction after writes
    /// resume comes at the next tick that has a new revision a period old.
    #[test]
    fn periodic_skips_the_revision_it_compacted_last() {
        let start = Instant::now();
        let period = Duration::from_secs(600);
        let mut c = AutoCompactor::new(AutoCompaction::Periodic(period), start, 5);
        let step = c.tick_interval();
        let mut compactions = Vec::new();
        // Writes until tick 10, then nothing until tick 40, then a write every tick.
        let mut rev = 5;
        for tick in 1..=60u32 {
            if tick <= 10 || tick > 40 {
                rev += 1;
            }
            let now = start + step * tick;
            if let Some(at) = c.tick(now, rev) {
                compactions.push((tick, at));
                c.compacted(now, at, true);
            }
        }
        // Every period the revision recorded a period before (5, 14, 15). Then 15 stays the one
        // a period old and is not compacted again at ticks 40 and 50 (etcd's skip; without it
        // each of those restarted the wait, and the next compaction came at tick 60); the first
        // new one (16, written at tick 41) is a period old at tick 52 and goes then.
        assert_eq!(compactions, vec![(10, 5), (20, 14), (30, 15), (52, 16)]);
    }

    #[test]
    fn revision_keeps_the_last_n_revisions() {
        let mut c = AutoCompactor::Revision(Revision::new(100, Duration::from_secs(1)));
        let now = Instant::now();
        assert_eq!(c.tick(now, 50), None, "nothing to compact below the retention");
        assert_eq!(c.tick(now, 350), Some(250));
        c.compacted(now, 250, true);
        assert_eq!(c.tick(now, 350), None, "no writes since: nothing new");
        assert_eq!(c.tick(now, 400), Some(300));
        c.compacted(now, 300, false);
        assert_eq!(c.tick(now, 400), Some(300), "a failure is retried");
    }
}
