//! Differential suite: real etcd 3.4.23 (Debian `etcd-server`) is the oracle. The test starts
//! etcd on free loopback ports with a temporary data dir, starts the `watchkv` binary of this
//! build on another port, runs the same scripted HTTP/JSON scenarios against both, and compares
//! every output after parsing it as JSON and dropping `cluster_id`, `member_id` and `raft_term`.
//!
//! Scenarios: KV (put with prev_kv / ignore_value / lease, range with limit, revision, every
//! sort order and target, keys_only, count_only, mod/create revision filters, prefix, from-key,
//! all keys; deleterange with prev_kv), txn (compares of every target and result, ranges in
//! compares, success and failure branches, nested txn, empty txn, empty op, duplicate keys, too
//! many ops), compaction (ok, compacted, future, reads below it), leases (explicit ids, grant
//! errors, timetolive with keys, keepalive, leases, revoke on both paths, unknown lease) and
//! every watch response kind of docs/etcd-semantics.md §7.3 (created, created-failed for an empty range and a
//! duplicate id, cancel, cancel of an unknown id, live and catch-up events, filters, prev_kv,
//! future start revision, compacted notice, progress requested with watch_id -1).
//!
//! Where watchkv deliberately follows current etcd (docs/etcd-semantics.md) rather than 3.4.23,
//! the difference is listed in [`DIFFERENCES`] — the one place that says what may differ and
//! why. A step that may differ names the entry; the entry's normaliser first checks that each
//! side does what the table says and then rewrites exactly that part. Anything else must be
//! equal. An entry no step exercises fails the test too, so the table stays exact.
//!
//! etcd's `/v3/watch` only streams both ways when the request carries `Expect: 100-continue`
//! (docs/etcd-semantics.md §12 item 1), so every watch stream here sends it (watchkv accepts it too). Leases are
//! granted with explicit ids: server-chosen ids are random in both servers, so they are never
//! compared and need no entry in the table. Every step runs against both servers in the same
//! order, so revisions line up; a mismatch does not stop the run, all of them are reported.
//!
//! The system under test is a watchkv node of its own ([`Target::SingleNode`], over HTTP and
//! over gRPC) or a mirror (`watchkv --upstream`, docs/etcd-semantics.md §18) of a second fresh
//! etcd ([`Target::Mirror`], over HTTP and over gRPC): the mirror serves the reads and watches
//! and forwards the writes, leases and compactions to its upstream, which starts empty as the
//! oracle does, so revisions line up there too. A table entry names the targets it applies to;
//! each run must exercise every entry of its target.

// The test's own modules live beside it; `wire` and `grpc_wire` are shared with other tests.
#[path = "differential/differences.rs"]
mod differences;
mod grpc_wire;
#[path = "differential/scenarios.rs"]
mod scenarios;
mod wire;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use differences::{difference, result, DIFFERENCES};
use grpc_wire::GrpcClient;
use serde_json::{json, Value};
use wire::{b64, drop_identity, int, post, start_etcd, start_watchkv, Proc, WatchStream};

/// Quiet window used to check that no (further) response arrives on a watch stream. etcd's
/// catch-up loop runs every 100 ms, so anything pending shows up well within it.
const QUIET: Duration = Duration::from_millis(400);

// ------------------------------------------------------------------------------------------
// The harness: one etcd and one watchkv, fed the same steps.
// ------------------------------------------------------------------------------------------

/// What the oracle's answers are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A watchkv node on its own.
    SingleNode,
    /// A watchkv mirror (`watchkv --upstream`, docs/etcd-semantics.md §18) of a second, fresh
    /// etcd: both etcds start empty and every write reaches each once (the mirror forwards
    /// it), so revisions line up with the oracle's.
    Mirror,
}

struct Diff {
    etcd: Proc,
    watchkv: Proc,
    /// The mirror's upstream etcd (kept running for as long as the mirror), on a mirror target.
    upstream: Option<Proc>,
    target: Target,
    /// Drive watchkv over gRPC instead of its HTTP gateway (etcd is always asked over HTTP).
    grpc: Option<GrpcClient>,
    failures: Vec<String>,
    used: BTreeSet<&'static str>,
    steps: usize,
    last_step: Instant,
}

/// One watch stream on each server.
struct Streams {
    name: String,
    etcd: WatchStream,
    watchkv: WatchStream,
}

impl Diff {
    /// etcd (the oracle) and a watchkv node, both fresh, under `dir`.
    fn start(dir: &Path, over_grpc: bool) -> Self {
        let etcd = start_etcd(&dir.join("etcd"));
        let port = wire::free_port();
        let watchkv = start_watchkv(&dir.join("watchkv"), port, &["--durability", "buffered"]);
        Self::new(etcd, watchkv, None, Target::SingleNode, over_grpc)
    }

    /// etcd (the oracle) and a watchkv mirror of a second fresh etcd, under `dir`. The mirror
    /// has bootstrapped from its empty upstream when it serves, so both sides start at
    /// revision 1.
    fn start_mirror(dir: &Path, over_grpc: bool) -> Self {
        let etcd = start_etcd(&dir.join("etcd"));
        let upstream = start_etcd(&dir.join("upstream"));
        let url = format!("http://127.0.0.1:{}", upstream.port);
        let port = wire::free_port();
        let mirror = start_watchkv(&dir.join("mirror"), port, &["--durability", "buffered", "--upstream", &url]);
        Self::new(etcd, mirror, Some(upstream), Target::Mirror, over_grpc)
    }

    fn new(etcd: Proc, watchkv: Proc, upstream: Option<Proc>, target: Target, over_grpc: bool) -> Self {
        let grpc = over_grpc.then(|| GrpcClient::connect(watchkv.port));
        Diff {
            etcd,
            watchkv,
            upstream,
            target,
            grpc,
            failures: Vec::new(),
            used: BTreeSet::new(),
            steps: 0,
            last_step: Instant::now(),
        }
    }

    fn compare(&mut self, step: &str, tags: &[&str], mut e: Value, mut w: Value) {
        self.steps += 1;
        if self.last_step.elapsed() > Duration::from_secs(1) {
            eprintln!("slow step ({:.1?}): {step}", self.last_step.elapsed());
        }
        self.last_step = Instant::now();
        for t in tags {
            let _ = difference(t);
        }
        drop_identity(&mut e);
        drop_identity(&mut w);
        let target = self.target;
        for d in DIFFERENCES.iter().filter(|d| d.applies_to(target) && (d.global || tags.contains(&d.id))) {
            match (d.normalise)(&mut e, &mut w) {
                Ok(changed) => {
                    if changed || !d.global {
                        self.used.insert(d.id);
                    }
                }
                Err(msg) => {
                    self.failures.push(format!("step `{step}`: difference `{}` not as documented: {msg}", d.id));
                    return;
                }
            }
        }
        if e != w {
            self.failures.push(format!(
                "step `{step}` differs:\n  etcd 3.4: {}\n  watchkv:  {}",
                serde_json::to_string(&e).unwrap_or_default(),
                serde_json::to_string(&w).unwrap_or_default()
            ));
        }
    }

    /// POSTs to both servers and compares; returns etcd's body.
    fn unary_tagged(&mut self, step: &str, path: &str, body: Value, tags: &[&str]) -> Value {
        let e = post(self.etcd.port, path, &body);
        let w = match &self.grpc {
            Some(g) => g.post(path, body.to_string().as_bytes()),
            None => post(self.watchkv.port, path, &body),
        };
        let ev = json!({"status": e.status, "body": e.json()});
        let wv = json!({"status": w.status, "body": w.json()});
        self.compare(step, tags, ev.clone(), wv);
        ev["body"].clone()
    }

    fn unary(&mut self, step: &str, path: &str, body: Value) -> Value {
        self.unary_tagged(step, path, body, &[])
    }

    /// A lease `TimeToLive` on both servers, compared with the remaining `TTL` checked on each
    /// side, not against the other: it is the time left in whole seconds (etcd:
    /// `int64(le.Remaining().Seconds())`), so two reads a few milliseconds apart may straddle a
    /// second. Each must lie within `slack` seconds below `grantedTTL`.
    fn time_to_live(&mut self, step: &str, path: &str, body: Value, tags: &[&str], slack: i64) {
        let e = post(self.etcd.port, path, &body);
        let w = match &self.grpc {
            Some(g) => g.post(path, body.to_string().as_bytes()),
            None => post(self.watchkv.port, path, &body),
        };
        let mut ev = json!({"status": e.status, "body": e.json()});
        let mut wv = json!({"status": w.status, "body": w.json()});
        for (side, v) in [("etcd", &mut ev), ("watchkv", &mut wv)] {
            let granted = int(&v["body"], "grantedTTL");
            let remaining = int(&v["body"], "TTL");
            if !(granted - slack..=granted).contains(&remaining) {
                self.failures.push(format!("step `{step}`: {side} answered TTL {remaining} of {granted}: {v}"));
                return;
            }
            v["body"]["TTL"] = json!("remaining");
        }
        self.compare(step, tags, ev, wv);
    }

    /// POSTs raw bytes to both and compares (malformed input).
    fn raw(&mut self, step: &str, path: &str, body: &[u8], tags: &[&str]) {
        if self.grpc.is_some() {
            // Malformed JSON is an HTTP matter; gRPC messages are typed.
            return;
        }
        let e = wire::try_post(self.etcd.port, path, body).expect("etcd reply");
        let w = wire::try_post(self.watchkv.port, path, body).expect("watchkv reply");
        self.compare(
            step,
            tags,
            json!({"status": e.status, "body": e.json()}),
            json!({"status": w.status, "body": w.json()}),
        );
    }

    /// A streaming unary endpoint (lease keepalive): one JSON line per request object.
    fn unary_lines(&mut self, step: &str, path: &str, body: &str) {
        let e = wire::try_post(self.etcd.port, path, body.as_bytes()).expect("etcd reply");
        let w = match &self.grpc {
            Some(g) => g.keep_alive_lines(body),
            None => wire::try_post(self.watchkv.port, path, body.as_bytes()).expect("watchkv reply"),
        };
        self.compare(
            step,
            &[],
            json!({"status": e.status, "lines": e.json_lines()}),
            json!({"status": w.status, "lines": w.json_lines()}),
        );
    }

    fn put(&mut self, k: &str, v: &str) -> i64 {
        let body = self.unary(&format!("put {k}={v}"), "/v3/kv/put", json!({"key": b64(k), "value": b64(v)}));
        int(&body["header"], "revision")
    }

    fn open(&mut self, name: &str) -> Streams {
        Streams {
            name: name.to_string(),
            etcd: WatchStream::open(self.etcd.port, true).expect("etcd watch stream"),
            watchkv: match &self.grpc {
                Some(g) => g.watch(),
                None => WatchStream::open(self.watchkv.port, true).expect("watchkv watch stream"),
            },
        }
    }

    fn send(&mut self, s: &mut Streams, req: Value) {
        s.etcd.send(&req);
        s.watchkv.send(&req);
    }

    /// Takes `n` lines from each side (each within the deadline) and compares them.
    fn expect_tagged(&mut self, s: &mut Streams, step: &str, n: usize, tags: &[&str]) -> Vec<Value> {
        let e = s.etcd.take(n);
        let w = s.watchkv.take(n);
        let out = e.clone();
        self.compare(&format!("{}: {step}", s.name), tags, json!({"lines": e}), json!({"lines": w}));
        out
    }

    fn expect(&mut self, s: &mut Streams, step: &str, n: usize) -> Vec<Value> {
        self.expect_tagged(s, step, n, &[])
    }

    /// Checks that neither side sends anything within the quiet window.
    fn quiet(&mut self, s: &mut Streams, step: &str) {
        self.quiet_tagged(s, step, &[]);
    }

    /// [`Self::quiet`] for a step that may differ as the named entries say.
    fn quiet_tagged(&mut self, s: &mut Streams, step: &str, tags: &[&str]) {
        let e = s.etcd.drain_for(QUIET);
        let w = s.watchkv.drain_for(QUIET);
        self.compare(&format!("{}: {step} (nothing more)", s.name), tags, json!({"lines": e}), json!({"lines": w}));
    }

    fn close(s: Streams) {
        s.etcd.close();
        s.watchkv.close();
    }
}

fn create(key: &str, extra: Value) -> Value {
    let mut c = json!({"key": b64(key)});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    json!({"create_request": c})
}

/// Revision of a watch line's header (0 when omitted).
fn line_rev(line: &Value) -> i64 {
    int(&result(line)["header"], "revision")
}

#[test]
fn differential_against_etcd_3_4() {
    run_differential(Target::SingleNode, false);
}

/// The same scenarios with watchkv driven over gRPC (requests and responses translated from
/// and to gateway JSON with etcd's descriptors) and etcd over its gateway, as before.
#[test]
fn differential_over_grpc_against_etcd_3_4() {
    run_differential(Target::SingleNode, true);
}

/// The same scenarios against a mirror (docs/etcd-semantics.md §18) whose upstream is a second
/// fresh etcd 3.4.23: the mirror serves reads and watches itself and forwards writes, leases
/// and compactions to its upstream.
#[test]
fn differential_mirror_against_etcd_3_4() {
    run_differential(Target::Mirror, false);
}

/// The mirror driven over gRPC, whose forwarding and answers are its own code path.
#[test]
fn differential_mirror_over_grpc_against_etcd_3_4() {
    run_differential(Target::Mirror, true);
}

fn run_differential(target: Target, over_grpc: bool) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut d = match target {
        Target::SingleNode => Diff::start(dir.path(), over_grpc),
        Target::Mirror => Diff::start_mirror(dir.path(), over_grpc),
    };

    scenarios::kv(&mut d);
    scenarios::txn(&mut d);
    scenarios::leases(&mut d);
    scenarios::watches(&mut d);
    scenarios::compaction(&mut d);
    scenarios::status(&mut d);

    let unused: Vec<&str> =
        DIFFERENCES.iter().filter(|x| x.applies_to(target)).map(|x| x.id).filter(|id| !d.used.contains(id)).collect();
    // Malformed-JSON steps only exist over HTTP, so only the runs over HTTP must use every
    // entry that applies to their target.
    if !unused.is_empty() && !over_grpc {
        d.failures.push(format!(
            "differences table entries for {target:?} no step exercised (remove them or add the step): {unused:?}"
        ));
    }
    eprintln!(
        "differential ({target:?}, {}): {} steps compared in {:.1?}; deliberate differences exercised:",
        if over_grpc { "watchkv over gRPC" } else { "watchkv over HTTP" },
        d.steps,
        started.elapsed()
    );
    for x in DIFFERENCES.iter().filter(|x| x.applies_to(target)) {
        eprintln!("  - {} ({}): etcd 3.4.23: {}; watchkv: {}; why: {}", x.id, x.sections, x.etcd, x.watchkv, x.why);
    }
    assert!(
        d.failures.is_empty(),
        "{} of {} steps differ from etcd 3.4.23 beyond the documented differences ({target:?}):\n\n{}\n\netcd log tail:\n{}\nwatchkv log tail:\n{}{}",
        d.failures.len(),
        d.steps,
        d.failures.join("\n\n"),
        d.etcd.log_tail(2000),
        d.watchkv.log_tail(2000),
        d.upstream.as_ref().map(|u| format!("\nupstream etcd log tail:\n{}", u.log_tail(2000))).unwrap_or_default()
    );
}
