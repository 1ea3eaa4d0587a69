//! Crash test: a child process writes with `Durability::Fsync` and reports every acknowledged
//! write; the parent kills it with SIGKILL at random moments and, after each kill, reopens the
//! store and checks that nothing acknowledged was lost.
//!
//! The child is this test binary itself, re-executed with
//! `--exact crash_child_writer --ignored --nocapture --test-threads=1` and the store directory in
//! `WATCHKV_CRASH_DIR`. It prints one line per event and flushes after each:
//!
//! ```text
//! start                                  about to open the store
//! opened <current_rev> <compact_rev> <micros>
//! try <key> <value>                      a put is about to be applied (in flight)
//! trydel <key>                           a delete of a live key is about to be applied
//! ack <rev> <key> <value>                the put is durable (returned with Fsync) at <rev>
//! del <rev> <key>                        the delete is durable at <rev>
//! trycompact <rev>                       a compaction is about to be scheduled
//! compact <rev>                          `compact(rev)` returned (scheduled marker synced)
//! compacted <rev>                        the physical compaction at <rev> finished
//! ```
//!
//! Every write is announced by a `try` line before it is applied, so the parent knows exactly
//! which writes may or may not have reached the disk when the kill landed: at most the writes of
//! one single put, delete or group-commit batch. After a kill the parent checks:
//!
//! - `current_rev() >= last acknowledged revision`, and every in-flight write that did survive
//!   forms a prefix of the in-flight sequence with consecutive revisions (one per write);
//! - every known write (acknowledged, or in flight and found on disk) at or above the compact
//!   revision reads back at its own revision (value and `mod_revision`; a delete reads as
//!   absent), and below it fails with `Compacted`;
//! - every key reads back its last known state at the current revision, and the number of live
//!   keys equals the model's (nothing resurrected, nothing invented);
//! - the compact revision is at least the last acknowledged `compact`.
//!
//! Kills land in different phases: most 20–300 ms after the child's first ack (during single
//! puts, deletes, group-commit batches and the background physical compaction, which the child
//! slows down with small batches), and every fourth one shortly after the child started, during
//! `KvStore::open` (journal recovery and index restore) of a store that grows run after run.
//! The seed is printed; set `WATCHKV_CRASH_SEED` to replay the same operation mix (the kill
//! moments depend on timing and cannot be replayed exactly).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use watchkv::{DeleteRangeRequest, Durability, Error, KeyRange, KvStore, PutRequest, RangeRequest, StoreConfig};

const DIR_ENV: &str = "WATCHKV_CRASH_DIR";
const RUN_ENV: &str = "WATCHKV_CRASH_RUN";
const SEED_ENV: &str = "WATCHKV_CRASH_SEED";

/// Number of SIGKILLs delivered.
const KILLS: usize = 24;
/// How long the parent waits for the child's first line of interest before failing.
const FIRST_LINE_DEADLINE: Duration = Duration::from_secs(30);
/// Prefix of every key the child writes.
const KEY_PREFIX: &str = "k/";

/// The configuration both processes use. Small compaction batches with a short pause make the
/// physical compaction last long enough for kills to land in it.
fn config(dir: &Path) -> StoreConfig {
    StoreConfig::new(dir)
        .with_durability(Durability::Fsync)
        .with_compaction_batch_limit(64)
        .with_compaction_sleep_interval(Duration::from_millis(1))
}

// ------------------------------------------------------------------------------------------
// Child
// ------------------------------------------------------------------------------------------

/// Prints one line and flushes it; exits quietly if the parent has gone away.
fn emit(out: &mut std::io::StdoutLock<'_>, line: std::fmt::Arguments<'_>) {
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// The writer run in the child process. Does nothing unless `WATCHKV_CRASH_DIR` is set.
#[test]
#[ignore = "run only as the child process of crash_recovery_across_sigkill"]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let run: u64 = std::env::var(RUN_ENV).ok().and_then(|s| s.parse().ok()).expect("WATCHKV_CRASH_RUN");
    let seed: u64 = std::env::var(SEED_ENV).ok().and_then(|s| s.parse().ok()).expect("WATCHKV_CRASH_SEED");
    let mut rng = StdRng::seed_from_u64(seed ^ run.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // libtest may have printed "test crash_child_writer ... " without a newline: end that line.
    emit(&mut out, format_args!(""));
    emit(&mut out, format_args!("start"));
    let t0 = Instant::now();
    let mut store = KvStore::open(config(&dir)).expect("child: open");
    emit(&mut out, format_args!("opened {} {} {}", store.current_rev(), store.compact_rev(), t0.elapsed().as_micros()));

    // The key space grows run after run, so the store (and its restore) grows too.
    let key_space = (400 * (run + 1)).min(10_000);
    let key = |i: u64| format!("{KEY_PREFIX}{i:06}");
    let mut seq = 0u64;
    let mut value = |rng: &mut StdRng| {
        seq += 1;
        let pad = rng.random_range(0..48);
        format!("r{run}s{seq}{}", "x".repeat(pad))
    };
    let mut compaction: Option<watchkv::compaction::CompactionTicket> = None;
    loop {
        if let Some(t) = compaction.take_if(|t| t.is_done()) {
            emit(&mut out, format_args!("compacted {}", t.revision()));
        }
        let roll = rng.random_range(0..100);
        let cur = store.current_rev();
        let base = store.compact_rev().max(1);
        if roll < 3 && compaction.is_none() && cur - base > 600 {
            // Compact an old revision, keeping the last few hundred revisions readable.
            let rev = rng.random_range(base + 1..=cur - 300);
            emit(&mut out, format_args!("trycompact {rev}"));
            let ticket = store.compact(rev).expect("child: compact");
            emit(&mut out, format_args!("compact {rev}"));
            compaction = Some(ticket);
        } else if roll < 20 {
            // A group commit: distinct keys, mostly puts, some deletes of live keys.
            let n = rng.random_range(10..=150);
            let mut seen = HashSet::new();
            // Puts and deletes of distinct keys, mixed in one group commit, each with its own
            // revision; whether a key is live is decided before the group starts.
            let mut what = Vec::with_capacity(n);
            while what.len() < n {
                let k = key(rng.random_range(0..key_space));
                if !seen.insert(k.clone()) {
                    continue;
                }
                if rng.random_bool(0.2) && store.index().latest(k.as_bytes()).is_some() {
                    emit(&mut out, format_args!("trydel {k}"));
                    what.push((k, None));
                } else {
                    let v = value(&mut rng);
                    emit(&mut out, format_args!("try {k} {v}"));
                    what.push((k, Some(v)));
                }
            }
            let mut group = store.group();
            let applied: Vec<_> = what
                .into_iter()
                .map(|(k, v)| match v {
                    None => {
                        let a = group.apply(DeleteRangeRequest::new(KeyRange::single(k.clone())));
                        (k, GroupWrite::Delete(a))
                    }
                    Some(v) => {
                        let a = group.apply(PutRequest::new(k.clone(), v.clone()));
                        (k, GroupWrite::Put(a, v))
                    }
                })
                .collect();
            let persisted = group.persist();
            for (k, a) in applied {
                match a {
                    GroupWrite::Put(a, v) => {
                        let p = a.settle(&persisted).expect("child: group put");
                        emit(&mut out, format_args!("ack {} {k} {v}", p.response.revision));
                    }
                    GroupWrite::Delete(a) => {
                        let d = a.settle(&persisted).expect("child: group delete");
                        assert_eq!(d.response.deleted, 1, "child: group delete of live key {k}");
                        emit(&mut out, format_args!("del {} {k}", d.response.revision));
                    }
                }
            }
        } else {
            let k = key(rng.random_range(0..key_space));
            if roll < 35 && store.index().latest(k.as_bytes()).is_some() {
                emit(&mut out, format_args!("trydel {k}"));
                let d =
                    store.delete_range(DeleteRangeRequest::new(KeyRange::single(k.clone()))).expect("child: delete");
                assert_eq!(d.response.deleted, 1, "child: delete of live key {k}");
                emit(&mut out, format_args!("del {} {k}", d.response.revision));
            } else {
                let v = value(&mut rng);
                emit(&mut out, format_args!("try {k} {v}"));
                let p = store.put(PutRequest::new(k.clone(), v.clone())).expect("child: put");
                emit(&mut out, format_args!("ack {} {k} {v}", p.response.revision));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Parent
// ------------------------------------------------------------------------------------------

/// One write: a put of `value`, or a delete (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Op {
    key: String,
    value: Option<String>,
}

/// A write known to be durable, with its revision.
#[derive(Debug, Clone)]
struct Known {
    rev: i64,
    write: Op,
}

/// What the parent knows is on disk.
#[derive(Debug, Default)]
struct Model {
    /// Every durable write not yet below the compact revision, in revision order.
    history: Vec<Known>,
    /// Each key's last durable write.
    latest: BTreeMap<String, Known>,
    /// Highest durable revision (acknowledged or found after a crash); 1 for a fresh store.
    last_rev: i64,
    /// Highest acknowledged compaction.
    acked_compact: i64,
}

impl Model {
    fn record(&mut self, rev: i64, write: Op) {
        let known = Known { rev, write };
        self.latest.insert(known.write.key.clone(), known.clone());
        self.history.push(known);
        self.last_rev = rev;
    }

    fn live_keys(&self) -> usize {
        self.latest.values().filter(|k| k.write.value.is_some()).count()
    }
}

/// What one child run produced, as the parent saw it.
#[derive(Debug, Default)]
struct Run {
    started: bool,
    opened: Option<Duration>,
    acks: usize,
    /// Writes announced but not acknowledged, in order.
    pending: VecDeque<Op>,
    /// A compaction announced but not acknowledged.
    pending_compact: Option<i64>,
    /// The last acknowledged compaction whose physical part had not finished.
    running_compact: Option<i64>,
    /// Compactions acknowledged (for statistics).
    compactions: usize,
    /// Physical compactions seen to finish (for statistics).
    compactions_finished: usize,
}

#[derive(Debug, Default)]
struct Stats {
    kills: usize,
    kills_during_open: usize,
    kills_with_writes_in_flight: usize,
    kills_with_group_in_flight: usize,
    in_flight_writes_survived: usize,
    in_flight_writes_lost: usize,
    kills_during_physical_compaction: usize,
    kills_with_compact_in_flight: usize,
    compactions: usize,
    compactions_finished: usize,
    acks: usize,
    max_open: Duration,
    max_verify: Duration,
}

/// Applies one line of child output to the run and the model, checking what can be checked.
fn process_line(line: &str, run: &mut Run, model: &mut Model, ctx: &str) {
    let mut it = line.split(' ');
    let parse_i64 = |s: Option<&str>| -> i64 {
        s.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{ctx}: malformed child line {line:?}"))
    };
    match it.next().unwrap_or("") {
        "start" => run.started = true,
        "opened" => {
            let cur = parse_i64(it.next());
            let compact = parse_i64(it.next());
            let micros = parse_i64(it.next());
            run.opened = Some(Duration::from_micros(u64::try_from(micros).unwrap_or(0)));
            assert_eq!(cur, model.last_rev, "{ctx}: child opened at a revision other than the one last verified");
            assert!(
                compact >= model.acked_compact,
                "{ctx}: child opened with compact_rev {compact} < acked {}",
                model.acked_compact
            );
        }
        "try" => {
            let key = it.next().expect("try key").to_owned();
            let value = it.next().expect("try value").to_owned();
            run.pending.push_back(Op { key, value: Some(value) });
        }
        "trydel" => {
            let key = it.next().expect("trydel key").to_owned();
            run.pending.push_back(Op { key, value: None });
        }
        tag @ ("ack" | "del") => {
            let rev = parse_i64(it.next());
            let key = it.next().expect("ack key").to_owned();
            let value = if tag == "ack" { Some(it.next().expect("ack value").to_owned()) } else { None };
            let write = Op { key, value };
            let announced = run.pending.pop_front();
            assert_eq!(announced.as_ref(), Some(&write), "{ctx}: ack {rev} does not match the announced write");
            assert_eq!(rev, model.last_rev + 1, "{ctx}: acknowledged revisions must be consecutive ({write:?})");
            model.record(rev, write);
            run.acks += 1;
        }
        "trycompact" => run.pending_compact = Some(parse_i64(it.next())),
        "compact" => {
            let rev = parse_i64(it.next());
            assert_eq!(run.pending_compact.take(), Some(rev), "{ctx}: unannounced compaction");
            model.acked_compact = rev;
            run.running_compact = Some(rev);
            run.compactions += 1;
        }
        "compacted" => {
            let rev = parse_i64(it.next());
            if run.running_compact == Some(rev) {
                run.running_compact = None;
            }
            run.compactions_finished += 1;
        }
        _ => {} // libtest chatter, blank lines
    }
}

/// The child process with its output readers.
struct Spawned {
    child: KillOnDrop,
    lines: Receiver<String>,
    stdout_reader: JoinHandle<()>,
    stderr_reader: JoinHandle<String>,
}

fn spawn_child(dir: &Path, run: usize, seed: u64) -> Spawned {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child_writer", "--ignored", "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir)
        .env(RUN_ENV, run.to_string())
        .env(SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut stderr = child.stderr.take().expect("child stderr");
    let (tx, lines) = mpsc::channel();
    let stdout_reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                // A line cut short by the kill is not a report.
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    if tx.send(line.trim_end().to_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Spawned { child: KillOnDrop(child), lines, stdout_reader, stderr_reader }
}

/// The child writer, killed and reaped if the test panics before it kills it itself, so a
/// failed assertion does not leave it writing into a directory being deleted.
struct KillOnDrop(Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fails with the child's exit status and stderr.
fn child_died(mut spawned: Spawned, ctx: &str, what: &str) -> ! {
    let status = spawned.child.wait().map(|s| format!("{s:?}")).unwrap_or_else(|e| e.to_string());
    let stderr = spawned.stderr_reader.join().unwrap_or_default();
    panic!("{ctx}: {what}; child status {status}; child stderr:\n{stderr}");
}

/// Reads lines until `until` holds or `deadline` passes; returns whether `until` held.
fn pump(
    spawned: &Spawned,
    deadline: Instant,
    run: &mut Run,
    model: &mut Model,
    ctx: &str,
    until: impl Fn(&Run) -> bool,
) -> Result<bool, ()> {
    loop {
        if until(run) {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        match spawned.lines.recv_timeout(deadline - now) {
            Ok(line) => process_line(&line, run, model, ctx),
            Err(RecvTimeoutError::Timeout) => return Ok(false),
            Err(RecvTimeoutError::Disconnected) => return Err(()),
        }
    }
}

fn range_at(store: &KvStore, key: &str, rev: i64) -> watchkv::Result<watchkv::RangeResponse> {
    store.range(&RangeRequest::new(KeyRange::single(key)).at(rev))
}

/// Checks that `write` reads back at `rev`.
fn check_at(store: &KvStore, rev: i64, write: &Op, ctx: &str) {
    let resp = range_at(store, &write.key, rev).unwrap_or_else(|e| panic!("{ctx}: range {} at {rev}: {e}", write.key));
    match &write.value {
        Some(v) => {
            assert_eq!(resp.kvs.len(), 1, "{ctx}: acknowledged put of {} at {rev} is missing", write.key);
            let kv = &resp.kvs[0];
            assert_eq!(kv.value, v.as_bytes(), "{ctx}: wrong value of {} at {rev}", write.key);
            assert_eq!(kv.mod_revision, rev, "{ctx}: wrong mod_revision of {} at {rev}", write.key);
        }
        None => assert!(resp.kvs.is_empty(), "{ctx}: deleted key {} is present at {rev}: {:?}", write.key, resp.kvs),
    }
}

/// Reopens the store and checks it against the model, first adopting the in-flight writes that
/// survived (they must be a prefix of `pending` at consecutive revisions). Returns how many
/// survived.
fn verify(dir: &Path, model: &mut Model, pending: &[Op], ctx: &str) -> usize {
    let store = KvStore::open(config(dir)).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    let cur = store.current_rev();
    let compact = store.compact_rev();
    assert!(cur >= model.last_rev, "{ctx}: current_rev {cur} < last acknowledged revision {}", model.last_rev);
    assert!(
        compact >= model.acked_compact,
        "{ctx}: compact_rev {compact} < acknowledged compaction {}",
        model.acked_compact
    );
    let survived = usize::try_from(cur - model.last_rev).expect("revision delta");
    assert!(
        survived <= pending.len(),
        "{ctx}: current_rev {cur} is {survived} past the last ack but only {} writes were in flight",
        pending.len()
    );
    // The surviving in-flight writes take the next revisions, in order.
    for write in &pending[..survived] {
        let rev = model.last_rev + 1;
        if rev >= compact {
            check_at(&store, rev, write, &format!("{ctx} (in-flight write that survived)"));
        }
        model.record(rev, write.clone());
    }
    // Every known write at its own revision.
    for k in &model.history {
        if k.rev >= compact {
            check_at(&store, k.rev, &k.write, ctx);
        } else {
            match range_at(&store, &k.write.key, k.rev) {
                Err(Error::Compacted { .. }) => {}
                other => panic!("{ctx}: read of {} at {} below compact_rev {compact}: {other:?}", k.write.key, k.rev),
            }
        }
    }
    model.history.retain(|k| k.rev >= compact);
    // Every key at the current revision.
    for k in model.latest.values() {
        let resp = range_at(&store, &k.write.key, 0).unwrap_or_else(|e| panic!("{ctx}: range {}: {e}", k.write.key));
        match &k.write.value {
            Some(v) => {
                assert_eq!(resp.kvs.len(), 1, "{ctx}: key {} (last written at {}) is missing now", k.write.key, k.rev);
                assert_eq!(resp.kvs[0].value, v.as_bytes(), "{ctx}: key {} has a value nobody wrote last", k.write.key);
                assert_eq!(resp.kvs[0].mod_revision, k.rev, "{ctx}: key {} has the wrong mod_revision", k.write.key);
            }
            None => {
                assert!(resp.kvs.is_empty(), "{ctx}: key {} deleted at {} is back: {:?}", k.write.key, k.rev, resp.kvs)
            }
        }
    }
    let mut all = RangeRequest::new(KeyRange::prefix(KEY_PREFIX));
    all.count_only = true;
    let count = store.range(&all).unwrap_or_else(|e| panic!("{ctx}: count: {e}")).count;
    assert_eq!(count, i64::try_from(model.live_keys()).expect("count"), "{ctx}: live key count differs from the model");
    survived
}

#[test]
fn crash_recovery_across_sigkill() {
    let started = Instant::now();
    let seed: u64 = std::env::var(SEED_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (set {SEED_ENV}={seed} to replay the operation mix)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = Model { last_rev: 1, acked_compact: -1, ..Model::default() };
    let mut stats = Stats::default();
    let mut last_open = Duration::from_millis(5);

    for i in 0..KILLS {
        let ctx = format!("seed {seed}, run {i}");
        let during_open = i >= 2 && i % 4 == 3;
        let spawned = spawn_child(dir.path(), i, seed);
        let mut run = Run::default();
        let first_deadline = Instant::now() + FIRST_LINE_DEADLINE;
        let delay = if during_open {
            // Count from the child's "start" line, just before `KvStore::open`.
            match pump(&spawned, first_deadline, &mut run, &mut model, &ctx, |r| r.started) {
                Ok(true) => {}
                Ok(false) => child_died(spawned, &ctx, "no `start` line within 30 s"),
                Err(()) => child_died(spawned, &ctx, "child exited before printing `start`"),
            }
            last_open.mul_f64(rng.random_range(0.0..1.2))
        } else {
            match pump(&spawned, first_deadline, &mut run, &mut model, &ctx, |r| r.acks > 0) {
                Ok(true) => {}
                Ok(false) => child_died(spawned, &ctx, "no acknowledged write within 30 s"),
                Err(()) => child_died(spawned, &ctx, "child exited before its first ack"),
            }
            Duration::from_millis(rng.random_range(20..=300))
        };
        // Keep consuming reports while the delay runs out, then kill.
        if pump(&spawned, Instant::now() + delay, &mut run, &mut model, &ctx, |_| false).is_err() {
            child_died(spawned, &ctx, "child exited before it was killed");
        }
        let mut spawned = spawned;
        spawned.child.kill().expect("kill child");
        let status = spawned.child.wait().expect("wait child");
        // Everything the child printed before it died.
        while let Ok(line) = spawned.lines.recv() {
            process_line(&line, &mut run, &mut model, &ctx);
        }
        spawned.stdout_reader.join().expect("stdout reader");
        let stderr = spawned.stderr_reader.join().unwrap_or_default();
        assert_eq!(status.signal(), Some(9), "{ctx}: child was not killed by SIGKILL: {status:?}; stderr:\n{stderr}");

        stats.kills += 1;
        stats.acks += run.acks;
        stats.compactions += run.compactions;
        stats.compactions_finished += run.compactions_finished;
        match run.opened {
            Some(d) => {
                last_open = d.max(Duration::from_millis(1));
                stats.max_open = stats.max_open.max(d);
            }
            None => stats.kills_during_open += 1,
        }
        if run.running_compact.is_some() {
            stats.kills_during_physical_compaction += 1;
        }
        if run.pending_compact.is_some() {
            stats.kills_with_compact_in_flight += 1;
        }
        let pending: Vec<Op> = run.pending.into_iter().collect();
        if !pending.is_empty() {
            stats.kills_with_writes_in_flight += 1;
        }
        if pending.len() > 1 {
            stats.kills_with_group_in_flight += 1;
        }
        let t = Instant::now();
        let survived = verify(dir.path(), &mut model, &pending, &ctx);
        stats.max_verify = stats.max_verify.max(t.elapsed());
        stats.in_flight_writes_survived += survived;
        stats.in_flight_writes_lost += pending.len() - survived;
    }

    // After the last kill: reopen twice in a row, both must be complete, and the store must
    // still take writes at the next revision.
    for attempt in 1..=2 {
        let ctx = format!("seed {seed}, final reopen {attempt}");
        assert_eq!(verify(dir.path(), &mut model, &[], &ctx), 0, "{ctx}: revision moved without a write");
    }
    {
        let mut store = KvStore::open(config(dir.path())).expect("final open");
        assert_eq!(store.current_rev(), model.last_rev);
        let p = store.put(PutRequest::new(format!("{KEY_PREFIX}final"), "done")).expect("final put");
        assert_eq!(p.response.revision, model.last_rev + 1);
        model.record(p.response.revision, Op { key: format!("{KEY_PREFIX}final"), value: Some("done".into()) });
    }
    verify(dir.path(), &mut model, &[], &format!("seed {seed}, after final put"));

    eprintln!(
        "crash test: {} kills ({} during open; {} with writes in flight, {} of them in a group commit: \
         {} in-flight writes survived, {} lost; {} during physical compaction, {} with compact() in \
         flight); {} acked writes, {} compactions scheduled, {} seen to finish; final revision {}, \
         {} live keys; slowest child open {:?}, slowest parent verify {:?}, total {:?}",
        stats.kills,
        stats.kills_during_open,
        stats.kills_with_writes_in_flight,
        stats.kills_with_group_in_flight,
        stats.in_flight_writes_survived,
        stats.in_flight_writes_lost,
        stats.kills_during_physical_compaction,
        stats.kills_with_compact_in_flight,
        stats.acks,
        stats.compactions,
        stats.compactions_finished,
        model.last_rev,
        model.live_keys(),
        stats.max_open,
        stats.max_verify,
        started.elapsed(),
    );
}

/// One write of the child's group commit, waiting for the group's persist.
enum GroupWrite {
    Put(watchkv::Applied<watchkv::PutResponse>, String),
    Delete(watchkv::Applied<watchkv::DeleteRangeResponse>),
}
