//! etcdctl against watchkv's gRPC API, compared with the same commands against real etcd 3.4.23
//! (Debian `etcd-client` / `etcd-server`; `scripts/test.sh` installs both). Every command runs
//! on both servers; exit status, stdout and the final `Error:` line of stderr must match after
//! the normalisations below (identity fields, lease ids, seconds remaining). The KV, txn,
//! watch, lease and compaction commands also run against a mirror (`watchkv --upstream`) of a
//! second fresh etcd, where the one difference is listed in [`MIRROR_DIFFERENCES`].

mod wire;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use wire::{drop_identity, start_etcd, start_watchkv, Proc};

/// How long a watch must stay silent on etcd before its output counts as complete.
const WATCH_QUIET: Duration = Duration::from_millis(1500);

/// What one command printed, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Printed {
    ok: bool,
    stdout: String,
    error: String,
}

fn etcdctl(port: u16) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{port}"))
        .arg("--command-timeout=20s")
        .arg("--dial-timeout=20s");
    cmd
}

fn run(port: u16, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = etcdctl(port);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running etcdctl (install Debian's etcd-client; scripts/test.sh does): {e}"));
    if let Some(mut w) = child.stdin.take() {
        if let Some(text) = stdin {
            w.write_all(text.as_bytes()).expect("write etcdctl stdin");
        }
    }
    child.wait_with_output().expect("etcdctl output")
}

/// Replaces what names the cluster rather than the behaviour: in JSON output the identity
/// fields; in text, the lease ids the caller lists.
fn normalise(text: &str, leases: &[(String, &str)]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = match serde_json::from_str::<Value>(line) {
            Ok(mut v) if v.is_object() => {
                drop_identity(&mut v);
                v.to_string()
            }
            _ => line.to_string(),
        };
        let mut line = line;
        for (id, name) in leases {
            line = line.replace(id.as_str(), name);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn printed(out: &Output, leases: &[(String, &str)]) -> Printed {
    let stderr = String::from_utf8_lossy(&out.stderr);
    // etcdctl logs retries as JSON lines with timestamps; the last `Error:` line is the answer.
    let error = stderr.lines().rev().find(|l| l.starts_with("Error:")).unwrap_or("").to_string();
    Printed {
        ok: out.status.success(),
        stdout: normalise(&String::from_utf8_lossy(&out.stdout), leases),
        error: normalise(&error, leases),
    }
}

/// What may differ when the server compared with etcd is a mirror (`watchkv --upstream`, of a
/// second fresh etcd): the differential suite's entry of the same name, docs/etcd-semantics.md
/// §18. A step that may differ names it; on a node of its own the step compares as is.
struct MirrorDifference {
    id: &'static str,
    /// Checks both outputs show the documented behaviour and rewrites it away.
    normalise: fn(&mut Printed, &mut Printed) -> Result<(), String>,
}

/// Every way a mirror's etcdctl output may differ from etcd's; the mirror run must use each.
const MIRROR_DIFFERENCES: &[MirrorDifference] =
    &[MirrorDifference { id: "mirror-keeps-compacted-history", normalise: mirror_keeps_compacted_history }];

/// A Compact through a mirror compacts upstream only; the mirror's own history is kept until its
/// own auto-compaction. So where etcd refuses a read (or a watch) below the compact revision,
/// the mirror answers it from that history.
fn mirror_keeps_compacted_history(e: &mut Printed, w: &mut Printed) -> Result<(), String> {
    const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
    let etcd_refused = e.error == format!("Error: {COMPACTED}\n")
        || e.stdout.contains(&format!("stderr: watch was canceled ({COMPACTED})"));
    if !etcd_refused || e.stdout.lines().any(|l| l == "PUT" || l == "DELETE") {
        return Err(format!("etcd should refuse a read or watch below the compact revision: {e:?}"));
    }
    if !w.ok || w.stdout.trim().is_empty() || w.stdout.contains("compacted") || w.stdout.contains("stderr:") {
        return Err(format!("the mirror should answer from its own history: {w:?}"));
    }
    let placeholder = Printed { ok: true, stdout: "below upstream's compact revision".into(), error: String::new() };
    (*e, *w) = (placeholder.clone(), placeholder);
    Ok(())
}

struct Both {
    etcd: Proc,
    watchkv: Proc,
    /// The mirror's upstream etcd when `watchkv` is a mirror.
    upstream: Option<Proc>,
    failures: Vec<String>,
    steps: usize,
    /// Lease ids seen on each side, with the placeholder both are replaced by.
    etcd_leases: Vec<(String, &'static str)>,
    watchkv_leases: Vec<(String, &'static str)>,
    /// The [`MIRROR_DIFFERENCES`] steps have used.
    used: BTreeSet<&'static str>,
}

impl Both {
    /// Fails the test with every command whose outputs differed, and watchkv's log tail.
    fn assert_no_differences(&self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} etcdctl commands differ:\n\n{}\n\nwatchkv log tail:\n{}",
            self.failures.len(),
            self.steps,
            self.failures.join("\n\n"),
            self.watchkv.log_tail(2000)
        );
    }

    fn new(etcd: Proc, watchkv: Proc, upstream: Option<Proc>) -> Self {
        Self {
            etcd,
            watchkv,
            upstream,
            failures: Vec::new(),
            steps: 0,
            etcd_leases: Vec::new(),
            watchkv_leases: Vec::new(),
            used: BTreeSet::new(),
        }
    }

    /// Runs `args` on both servers and compares; returns both raw outputs.
    fn cmd_in(&mut self, args: &[&str], stdin: Option<&str>) -> (Output, Output) {
        self.cmd_tagged(args, stdin, None)
    }

    /// [`Self::cmd_in`] for a step that may differ on a mirror as `mirror_difference` says.
    fn cmd_tagged(&mut self, args: &[&str], stdin: Option<&str>, mirror_difference: Option<&str>) -> (Output, Output) {
        let e = run(self.etcd.port, args, stdin);
        let w = run(self.watchkv.port, args, stdin);
        let (pe, pw) = (printed(&e, &self.etcd_leases), printed(&w, &self.watchkv_leases));
        self.compare_tagged(&args.join(" "), pe, pw, mirror_difference);
        (e, w)
    }

    fn cmd(&mut self, args: &[&str]) -> (Output, Output) {
        self.cmd_in(args, None)
    }

    /// Runs a command that names a lease: `{lease}` in `args` becomes each side's own id.
    fn lease_cmd(&mut self, args: &[&str], name: &'static str) {
        let id_of = |list: &[(String, &str)]| list.iter().find(|(_, n)| *n == name).map(|(id, _)| id.clone());
        let (Some(e_id), Some(w_id)) = (id_of(&self.etcd_leases), id_of(&self.watchkv_leases)) else {
            panic!("lease {name} was not granted on both sides");
        };
        let fill = |id: &str| args.iter().map(|a| a.replace("{lease}", id)).collect::<Vec<_>>();
        let (ea, wa) = (fill(&e_id), fill(&w_id));
        let e = run(self.etcd.port, &ea.iter().map(String::as_str).collect::<Vec<_>>(), None);
        let w = run(self.watchkv.port, &wa.iter().map(String::as_str).collect::<Vec<_>>(), None);
        let (mut pe, mut pw) = (printed(&e, &self.etcd_leases), printed(&w, &self.watchkv_leases));
        // `remaining(N)` depends on when the command ran; both must be within 5 s of the TTL.
        for p in [&mut pe, &mut pw] {
            p.stdout = remaining_within(&p.stdout, 5);
        }
        self.compare(&args.join(" "), pe, pw);
    }

    /// Grants a lease on both sides and records the ids under `name`.
    fn grant(&mut self, ttl: &str, name: &'static str) {
        self.grant_as(ttl, name, "--user=");
    }

    /// [`Self::grant`] with a `--user=...` flag (`--user=` for none).
    fn grant_as(&mut self, ttl: &str, name: &'static str, user: &str) {
        let args: Vec<&str> = ["lease", "grant", ttl].into_iter().chain((user != "--user=").then_some(user)).collect();
        let e = run(self.etcd.port, &args, None);
        let w = run(self.watchkv.port, &args, None);
        for (out, list) in [(&e, &mut self.etcd_leases), (&w, &mut self.watchkv_leases)] {
            let text = String::from_utf8_lossy(&out.stdout);
            let id = text.split_whitespace().nth(1).unwrap_or_default().to_string();
            assert!(!id.is_empty(), "no lease id in `lease grant` output: {text:?}");
            list.push((id, name));
        }
        self.compare(&format!("lease grant {ttl}"), printed(&e, &self.etcd_leases), printed(&w, &self.watchkv_leases));
    }

    fn compare(&mut self, step: &str, e: Printed, w: Printed) {
        self.compare_tagged(step, e, w, None);
    }

    /// Compares, first normalising `mirror_difference` when the server is a mirror.
    fn compare_tagged(&mut self, step: &str, mut e: Printed, mut w: Printed, mirror_difference: Option<&str>) {
        self.steps += 1;
        if let Some(id) = mirror_difference {
            let d = MIRROR_DIFFERENCES
                .iter()
                .find(|d| d.id == id)
                .unwrap_or_else(|| panic!("step names unknown difference {id:?}"));
            if self.upstream.is_some() {
                self.used.insert(d.id);
                if let Err(msg) = (d.normalise)(&mut e, &mut w) {
                    self.failures.push(format!("`etcdctl {step}`: difference `{id}` not as documented: {msg}"));
                    return;
                }
            }
        }
        if e != w {
            self.failures.push(format!("`etcdctl {step}` differs:\n  etcd 3.4: {e:?}\n  watchkv:  {w:?}"));
        }
    }

    /// `etcdctl watch ...` on both: etcd's output is complete once it has been silent for
    /// [`WATCH_QUIET`]; watchkv must print the same lines (within the deadline) and nothing more.
    fn watch(&mut self, args: &[&str]) {
        self.watch_tagged(args, None);
    }

    /// [`Self::watch`] for a step that may differ on a mirror as `mirror_difference` says.
    fn watch_tagged(&mut self, args: &[&str], mirror_difference: Option<&str>) {
        let e = wire::watch_lines(etcdctl(self.etcd.port).args(args), None, WATCH_QUIET);
        assert!(!e.is_empty(), "etcd printed nothing for `etcdctl {}`: the step would compare nothing", args.join(" "));
        let w = wire::watch_lines(etcdctl(self.watchkv.port).args(args), Some(e.len()), WATCH_QUIET);
        let e = normalise(&e.join("\n"), &self.etcd_leases);
        let w = normalise(&w.join("\n"), &self.watchkv_leases);
        self.compare_tagged(
            &args.join(" "),
            Printed { ok: true, stdout: e, error: String::new() },
            Printed { ok: true, stdout: w, error: String::new() },
            mirror_difference,
        );
    }
}

/// Rewrites `remaining(N)` to `remaining(~)` after checking N is within `slack` of the TTL.
fn remaining_within(text: &str, slack: i64) -> String {
    let Some(start) = text.find("remaining(") else { return text.to_string() };
    let rest = &text[start + "remaining(".len()..];
    let Some(end) = rest.find("s)") else { return text.to_string() };
    let n: i64 = rest[..end].parse().unwrap_or(-1);
    let ttl: i64 =
        text.find("TTL(").and_then(|i| text[i + 4..].split('s').next().and_then(|t| t.parse().ok())).unwrap_or(-1);
    if n < 0 || n > ttl || ttl - n > slack {
        return text.to_string();
    }
    format!("{}remaining(~s){}", &text[..start], &rest[end + 2..])
}

#[test]
fn etcdctl_reads_the_same_from_watchkv_and_etcd() {
    etcdctl_reads_the_same(false);
}

/// The same commands against a mirror (docs/etcd-semantics.md §18) of a second fresh etcd: both
/// etcds start empty and the mirror forwards every write, so revisions line up with etcd's.
#[test]
fn etcdctl_reads_the_same_from_a_mirror_and_etcd() {
    etcdctl_reads_the_same(true);
}

fn etcdctl_reads_the_same(mirror: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let upstream = mirror.then(|| start_etcd(&dir.path().join("upstream")));
    let url = upstream.as_ref().map(|u| format!("http://127.0.0.1:{}", u.port));
    let mut args = vec!["--durability", "buffered"];
    if let Some(url) = &url {
        args.extend(["--upstream", url]);
    }
    let watchkv = start_watchkv(&dir.path().join("watchkv"), wire::free_port(), &args);
    let mut b = Both::new(etcd, watchkv, upstream);
    let mirror_history = Some("mirror-keeps-compacted-history");

    // KV.
    b.cmd(&["put", "foo", "bar"]);
    b.cmd(&["put", "foo", "baz", "--prev-kv"]);
    b.cmd(&["put", "foo1", "one"]);
    b.cmd(&["put", "foo2", "two"]);
    b.cmd(&["put", "zoo", "z"]);
    b.cmd(&["get", "foo"]);
    b.cmd(&["get", "foo", "--prefix"]);
    b.cmd(&["get", "foo", "--prefix", "--limit", "2"]);
    b.cmd(&["get", "foo", "--prefix", "--keys-only"]);
    b.cmd(&["get", "foo", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"]);
    b.cmd(&["get", "foo", "--rev", "2"]);
    b.cmd(&["get", "foo", "--prefix", "-w", "json"]);
    b.cmd(&["get", "foo", "--prefix", "--count-only", "-w", "json"]);
    b.cmd(&["get", "--from-key", "foo1"]);
    b.cmd(&["get", "nothing"]);
    b.cmd(&["get", "foo", "--rev", "1000"]);
    b.cmd(&["del", "foo1"]);
    b.cmd(&["del", "foo1"]);
    b.cmd(&["put", "foo", "qux", "-w", "json"]);
    b.cmd(&["del", "foo", "--prefix", "--prev-kv"]);
    b.cmd(&["put", "", "empty"]);
    // A value from stdin above max-request-bytes (1.5 MiB) but within gRPC's allowance.
    let big = "v".repeat(1_600_000);
    b.cmd_in(&["put", "big"], Some(&big));
    // etcd measures a write as its raft entry (the put wrapped with a request header), 17
    // bytes more than the put: 1,572,838 bytes of value fit under 1.5 MiB, not 1,572,855.
    // Both values stay clear of it by more than the one byte etcd's request id may take less.
    let near = "v".repeat(1_572_830);
    b.cmd_in(&["put", "big"], Some(&near));
    let over = "v".repeat(1_572_845);
    b.cmd_in(&["put", "big"], Some(&over));

    // Txn, from stdin as `etcdctl txn` reads it: compares, success ops, failure ops.
    b.cmd(&["put", "t", "1"]);
    b.cmd_in(&["txn"], Some("value(\"t\") = \"1\"\n\nput t 2\nget t\n\nput t failed\n\n"));
    b.cmd_in(&["txn"], Some("value(\"t\") = \"1\"\n\nput t 3\n\nget t\n\n"));
    b.cmd_in(&["txn", "-w", "json"], Some("mod(\"t\") > \"0\"\n\ndel t\n\n\n"));
    b.cmd_in(&["txn"], Some("\n\nput a 1\nput a 2\n\n\n"));

    // Watch history: every event so far, with and without prev_kv.
    b.watch(&["watch", "--prefix", "foo", "--rev", "1"]);
    b.watch(&["watch", "foo", "--rev", "2", "--prev-kv"]);
    b.watch(&["watch", "t", "--rev", "1", "-w", "json"]);

    // Leases.
    b.grant("100", "L1");
    b.lease_cmd(&["put", "leased", "v", "--lease={lease}"], "L1");
    b.lease_cmd(&["lease", "timetolive", "{lease}", "--keys"], "L1");
    b.lease_cmd(&["lease", "keep-alive", "--once", "{lease}"], "L1");
    // Listed soonest to expire first, as etcd sorts them, whatever their ids.
    b.grant("50", "L2");
    b.cmd(&["lease", "list"]);
    b.lease_cmd(&["lease", "revoke", "{lease}"], "L2");
    b.lease_cmd(&["lease", "revoke", "{lease}"], "L1");
    b.lease_cmd(&["lease", "timetolive", "{lease}"], "L1");
    b.lease_cmd(&["lease", "revoke", "{lease}"], "L1");
    b.cmd(&["get", "leased"]);
    b.cmd(&["put", "k", "v", "--lease=1234"]);

    // Compaction.
    b.cmd(&["compaction", "5"]);
    b.cmd_tagged(&["get", "foo", "--rev", "3"], None, mirror_history);
    b.cmd(&["compaction", "3"]);
    b.watch_tagged(&["watch", "--prefix", "foo", "--rev", "2"], mirror_history);
    b.watch(&["watch", "--prefix", "", "--rev", "5"]);

    // Our own identity answers (no comparison: they name the member).
    let status = run(b.watchkv.port, &["endpoint", "status", "-w", "json"], None);
    let text = String::from_utf8_lossy(&status.stdout);
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("endpoint status json {text}: {e}"));
    let st = &v[0]["Status"];
    assert_eq!(st["version"], "3.5.0", "status reports an etcd 3.5 version: {v}");
    assert_eq!(st["leader"], st["header"]["member_id"], "the member is its own leader: {v}");
    assert!(st["dbSize"].as_i64().unwrap_or(0) > 0, "db size reported: {v}");
    assert!(st["raftIndex"].as_u64().unwrap_or(0) >= 5, "raft index stands in for the revision: {v}");
    let members = run(b.watchkv.port, &["member", "list"], None);
    let text = String::from_utf8_lossy(&members.stdout);
    assert!(
        text.contains(&format!("watchkv, , http://127.0.0.1:{}", b.watchkv.port)),
        "one member with our client URL: {text}"
    );
    // etcd's cluster service answers with a header without a revision, on both.
    for (name, port) in [("etcd", b.etcd.port), ("watchkv", b.watchkv.port)] {
        let members = run(port, &["member", "list", "-w", "json"], None);
        let v: Value = serde_json::from_slice(&members.stdout).expect("member list json");
        assert!(v["header"]["revision"].is_null() && v["header"]["member_id"].is_u64(), "{name}: {v}");
    }
    // etcdctl 3.4 dials `endpoint status` (and `hashkv`, `snapshot save`) with the endpoint as
    // written as HTTP/2's `:authority`; with a URL endpoint that must work as it does on etcd.
    for (name, port) in [("etcd", b.etcd.port), ("watchkv", b.watchkv.port)] {
        let url = format!("--endpoints=http://127.0.0.1:{port}");
        for args in [&["endpoint", "status", "-w", "json"][..], &["endpoint", "health"][..], &["get", "foo"][..]] {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(&url)
                .arg("--command-timeout=20s")
                .args(args)
                .output()
                .expect("etcdctl output");
            assert!(out.status.success(), "{name}: etcdctl {url} {args:?}: {out:?}");
        }
    }
    // Auth cannot be enabled without a root user, on both (the whole round trip is
    // `etcdctl_auth_round_trip_matches_etcd`).
    b.cmd(&["auth", "enable"]);

    if b.upstream.is_some() {
        let unused: Vec<&str> = MIRROR_DIFFERENCES.iter().map(|d| d.id).filter(|id| !b.used.contains(id)).collect();
        if !unused.is_empty() {
            b.failures.push(format!("mirror differences no step exercised (remove them or add the step): {unused:?}"));
        }
    }
    eprintln!("etcdctl: {} commands compared{}", b.steps, if b.upstream.is_some() { " (mirror)" } else { "" });
    b.assert_no_differences();
}

/// The decimal member id `endpoint status` reports.
fn member_id(port: u16) -> String {
    let out = run(port, &["endpoint", "status", "-w", "json"], None);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("endpoint status json: {e}: {out:?}"));
    v[0]["Status"]["header"]["member_id"].to_string()
}

/// Puts 256 KiB values under `big/` until the server refuses one; returns the error line.
fn fill(port: u16) -> String {
    for i in 0..200 {
        // Pseudo-random letters, different per put, so that neither store's compression makes
        // them small (fjall's lz4 finds no repeats in them).
        let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let value: String = (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        let out = run(port, &["put", &format!("big/{i:03}")], Some(&value));
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return stderr.lines().rev().find(|l| l.starts_with("Error:")).unwrap_or("").to_string();
        }
    }
    panic!("port {port}: a 4 MiB quota not reached after 200 puts of 256 KiB");
}

#[test]
fn etcdctl_alarms_quota_and_recovery_match_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let quota = ["--quota-backend-bytes", "4194304"];
    let etcd = wire::start_etcd_with(&dir.path().join("etcd"), &quota);
    let mut wk_args = vec!["--durability", "buffered"];
    wk_args.extend(quota);
    let watchkv = start_watchkv(&dir.path().join("watchkv"), wire::free_port(), &wk_args);
    let (e_member, w_member) = (member_id(etcd.port), member_id(watchkv.port));
    let mut b = Both {
        etcd_leases: vec![(e_member, "MEMBER")],
        watchkv_leases: vec![(w_member, "MEMBER")],
        ..Both::new(etcd, watchkv, None)
    };

    b.cmd(&["alarm", "list"]);
    // Each server fills up at its own size; both refuse with etcd's text and raise NOSPACE.
    let (e_err, w_err) = (fill(b.etcd.port), fill(b.watchkv.port));
    assert_eq!(e_err, "Error: etcdserver: mvcc: database space exceeded");
    assert_eq!(w_err, e_err);
    b.cmd(&["alarm", "list"]);
    b.cmd(&["put", "small", "v"]);
    b.cmd(&["lease", "grant", "100"]);
    b.cmd(&["get", "big/000", "--keys-only"]);
    b.cmd(&["del", "big/000"]);
    b.cmd_in(&["txn"], Some("\n\ndel big/001\n\n"));
    b.cmd_in(&["txn"], Some("\n\nput small v\n\n"));
    for port in [b.etcd.port, b.watchkv.port] {
        let status = run(port, &["endpoint", "status", "-w", "json"], None);
        let v: Value = serde_json::from_slice(&status.stdout).expect("status json");
        let errors = v[0]["Status"]["errors"].to_string();
        assert!(errors.contains("alarm:NOSPACE"), "status lists the alarm: {v}");
        let (code, body) = wire::http_get(port, "/health");
        assert_eq!(code, 503, "port {port}: an alarm makes /health fail: {body}");
        assert!(body.contains("\"health\":\"false\""), "port {port}: {body}");
        if port == b.watchkv.port {
            assert!(body.contains("ALARM NOSPACE"), "the reason names the alarm as etcd 3.5 does: {body}");
            let (code, body) = wire::http_get(port, "/health?exclude=NOSPACE");
            assert_eq!(code, 200, "exclude=NOSPACE leaves that alarm out: {body}");
            // As etcd 3.5's `getQuerySet`: every `exclude` counts, and a value is one name.
            let (code, body) = wire::http_get(port, "/health?exclude=CORRUPT&exclude=NOSPACE&serializable=true");
            assert_eq!(code, 200, "both excluded: {body}");
            let (code, body) = wire::http_get(port, "/health?exclude=NOSPACE,CORRUPT");
            assert_eq!(code, 503, "one value names one alarm: {body}");
        }
    }
    // Disarming while still full: the next write that would go over the quota raises it again
    // (a put as large as the one that raised it; how many bytes are left below the quota
    // depends on each store's layout).
    b.cmd(&["alarm", "disarm"]);
    b.cmd_in(&["put", "big/again"], Some(&"x".repeat(300 * 1024)));
    b.cmd(&["alarm", "list"]);
    // etcd's recovery: free space, compact, defragment, disarm.
    for port in [b.etcd.port, b.watchkv.port] {
        let del = run(port, &["del", "big/", "--prefix"], None);
        assert!(del.status.success(), "{del:?}");
        let status = run(port, &["endpoint", "status", "-w", "json"], None);
        let v: Value = serde_json::from_slice(&status.stdout).expect("status json");
        let rev = v[0]["Status"]["header"]["revision"].to_string();
        let before = v[0]["Status"]["dbSize"].as_i64().unwrap_or(0);
        let compacted = run(port, &["compaction", "--physical", &rev], None);
        assert!(compacted.status.success(), "{compacted:?}");
        let defrag = run(port, &["defrag"], None);
        assert!(defrag.status.success(), "{defrag:?}");
        assert!(
            String::from_utf8_lossy(&defrag.stdout).starts_with("Finished defragmenting etcd member"),
            "{defrag:?}"
        );
        let status = run(port, &["endpoint", "status", "-w", "json"], None);
        let v: Value = serde_json::from_slice(&status.stdout).expect("status json");
        let after = v[0]["Status"]["dbSize"].as_i64().unwrap_or(0);
        assert!(after < before / 2, "port {port}: defrag shrinks the reported size: {before} -> {after}");
    }
    b.cmd(&["alarm", "disarm"]);
    b.cmd(&["alarm", "list"]);
    b.cmd(&["put", "small", "v"]);
    b.cmd(&["get", "small"]);

    b.assert_no_differences();
}

/// Auth as etcdctl drives it, step by step on etcd 3.4.23 and watchkv: users, roles, grants on a
/// key, a prefix and from a key, enable, allowed and denied reads, writes, txns, watches and
/// lease revokes, bad credentials, what a user may read of itself, revoking, and disable.
#[test]
fn etcdctl_auth_round_trip_matches_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    // The lowest bcrypt cost keeps the many password checks of this test fast.
    let watchkv = start_watchkv(
        &dir.path().join("watchkv"),
        wire::free_port(),
        &["--durability", "buffered", "--bcrypt-cost", "4"],
    );
    let mut b = Both::new(etcd, watchkv, None);
    let (root, alice, wrong, bob) = ("--user=root:rootpw", "--user=alice:apw", "--user=alice:nope", "--user=bob:x");

    b.cmd(&["user", "add", "root:rootpw", "--interactive=false"]);
    b.cmd(&["role", "add", "ro"]);
    b.cmd(&["role", "add", "ro"]);
    b.cmd(&["role", "grant-permission", "ro", "read", "foo"]);
    b.cmd(&["role", "grant-permission", "ro", "--prefix", "readwrite", "p/"]);
    b.cmd(&["role", "grant-permission", "ro", "--from-key", "read", "z"]);
    b.cmd(&["role", "grant-permission", "ro", "write", "w", "wz"]);
    b.cmd(&["role", "get", "ro"]);
    b.cmd(&["user", "add", "alice:apw", "--interactive=false"]);
    b.cmd(&["user", "add", "alice:apw", "--interactive=false"]);
    b.cmd(&["user", "grant-role", "alice", "ro"]);
    b.cmd(&["user", "grant-role", "alice", "nope"]);
    b.cmd(&["user", "get", "alice"]);
    b.cmd(&["user", "list"]);
    b.cmd(&["role", "list"]);
    b.cmd(&["put", "foo", "before"]);
    b.cmd(&["auth", "enable"]);
    b.cmd(&["role", "list", root]);

    // Without credentials, with bad ones, and as alice.
    b.cmd(&["get", "foo"]);
    b.cmd(&["get", "foo", wrong]);
    b.cmd(&["get", "foo", bob]);
    b.cmd(&["get", "foo", alice]);
    b.cmd(&["put", "foo", "x", alice]);
    b.cmd(&["put", "foo", "bar", root]);
    b.cmd(&["get", "foo", alice]);
    b.cmd(&["put", "p/1", "v", alice]);
    b.cmd(&["put", "p/2", "v", "--prev-kv", alice]);
    b.cmd(&["get", "p/", "--prefix", alice]);
    b.cmd(&["get", "--from-key", "z", alice]);
    b.cmd(&["get", "a", "--prefix", alice]);
    b.cmd(&["get", "", "--from-key", alice]);
    b.cmd(&["put", "wa", "v", alice]);
    b.cmd(&["get", "wa", alice]);
    b.cmd(&["del", "wa", alice]);
    b.cmd(&["del", "wa", "--prev-kv", alice]);
    b.cmd(&["del", "p/1", alice]);
    b.cmd_in(&["txn", alice], Some("value(\"foo\") = \"bar\"\n\nput p/3 t\n\n"));
    b.cmd_in(&["txn", alice], Some("value(\"a\") = \"bar\"\n\nput p/3 t\n\n"));
    b.cmd_in(&["txn", alice], Some("value(\"foo\") = \"bar\"\n\nput foo t\n\n"));
    b.watch(&["watch", "foo", "--rev", "1", alice]);
    b.watch(&["watch", "a", "--prefix", alice]);
    b.watch(&["watch", "foo", "--rev", "1"]);

    // Leases: alice may revoke one whose keys she may write, not one holding root's key.
    b.grant_as("100", "LA", alice);
    b.lease_cmd(&["put", "p/leased", "v", "--lease={lease}", alice], "LA");
    b.lease_cmd(&["lease", "revoke", "{lease}", alice], "LA");
    b.grant_as("100", "LR", root);
    b.lease_cmd(&["put", "foo", "leased", "--lease={lease}", root], "LR");
    b.lease_cmd(&["lease", "revoke", "{lease}", alice], "LR");
    b.lease_cmd(&["put", "p/4", "v", "--lease={lease}", alice], "LR");
    b.lease_cmd(&["lease", "revoke", "{lease}", root], "LR");

    // Administration needs the root role; a user may read itself and its roles.
    b.cmd(&["user", "list", alice]);
    b.cmd(&["user", "get", "alice", alice]);
    b.cmd(&["user", "get", "root", alice]);
    b.cmd(&["role", "get", "ro", alice]);
    b.cmd(&["role", "get", "root", alice]);
    b.cmd(&["role", "add", "r2", alice]);
    b.cmd(&["user", "delete", "root", root]);
    b.cmd(&["user", "revoke-role", "root", "root", root]);
    b.cmd(&["role", "delete", "root", root]);

    // Revocations take effect at once.
    b.cmd(&["role", "revoke-permission", "ro", "foo", root]);
    b.cmd(&["role", "revoke-permission", "ro", "foo", root]);
    b.cmd(&["get", "foo", alice]);
    b.cmd(&["user", "revoke-role", "alice", "ro", root]);
    b.cmd(&["user", "revoke-role", "alice", "ro", root]);
    b.cmd(&["get", "p/2", alice]);
    b.cmd_in(&["user", "passwd", "alice", "--interactive=false", root], Some("newpw\n"));
    b.cmd(&["user", "delete", "alice", root]);
    b.cmd(&["get", "p/2", alice]);
    b.cmd(&["auth", "disable", root]);
    b.cmd(&["get", "foo"]);
    b.cmd(&["user", "list"]);

    b.assert_no_differences();
}

/// The metrics a scrape finds: each sample line's name (labels included) and value.
fn scrape(port: u16) -> std::collections::BTreeMap<String, f64> {
    let (code, text) = wire::http_get(port, "/metrics");
    assert_eq!(code, 200, "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(name, value)| Some((name.to_string(), value.parse::<f64>().ok()?)))
        .collect()
}

/// `etcdctl check datascale` reads the server's memory from `/metrics`
/// (`process_resident_memory_bytes`), as it does from etcd's; and the etcd metrics that
/// dashboards and alerts use are there under etcd's names, counting what they count on etcd.
#[test]
fn etcdctl_check_datascale_and_etcds_metrics_read_from_watchkv_as_from_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = wire::start_etcd(&dir.path().join("etcd"));
    let watchkv = start_watchkv(&dir.path().join("watchkv"), wire::free_port(), &[]);
    for port in [etcd.port, watchkv.port] {
        let out = run(port, &["check", "datascale", "--load=s"], None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "port {port}: {out:?}");
        assert!(stdout.contains("PASS: Approximate system memory used"), "port {port}: {stdout}");
    }
    let (e, w) = (scrape(etcd.port), scrape(watchkv.port));
    // The same counts where the same operations make them: datascale's puts (then its
    // cleanup), no watchers, one leader that is this member, etcd's default quota.
    let same = [
        "etcd_server_has_leader",
        "etcd_server_is_leader",
        "etcd_server_is_learner",
        "etcd_server_leader_changes_seen_total",
        "etcd_server_quota_backend_bytes",
        "etcd_debugging_mvcc_keys_total",
        "etcd_debugging_mvcc_current_revision",
        "etcd_debugging_mvcc_watcher_total",
    ];
    // There on both, with values of each server's own.
    let present = [
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "etcd_debugging_mvcc_compact_revision",
        "etcd_debugging_mvcc_watch_stream_total",
        "etcd_debugging_mvcc_slow_watcher_total",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
        r#"etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"}"#,
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ];
    for name in same.iter().chain(&present) {
        assert!(e.contains_key(*name), "etcd has no {name}: the list is wrong");
        assert!(w.contains_key(*name), "watchkv has no {name}");
    }
    for name in same {
        assert_eq!(w[name], e[name], "{name}");
    }
    // fsync durability: every acknowledged put was synced, in group commits of 50 clients.
    let syncs = w["etcd_disk_wal_fsync_duration_seconds_count"];
    assert!(syncs >= 10_000.0 / 50.0, "{syncs} syncs for 10,000 puts");
    assert_eq!(w[r#"etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"}"#], syncs);
    assert!(w["etcd_disk_backend_commit_duration_seconds_count"] >= syncs - 1.0);
    assert!(w["process_resident_memory_bytes"] > 1e6);
    assert!(w["etcd_mvcc_db_total_size_in_bytes"] > 0.0);
}
