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
//! (docs/etcd-semantics.md §12.1), so every watch stream here sends it (watchkv accepts it too). Leases are
//! granted with explicit ids: server-chosen ids are random in both servers, so they are never
//! compared and need no entry in the table. Every step runs against both servers in the same
//! order, so revisions line up; a mismatch does not stop the run, all of them are reported.

mod grpc_wire;
mod wire;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use grpc_wire::GrpcClient;
use serde_json::{json, Value};
use wire::{b64, drop_identity, int, post, start_etcd, start_watchkv, Proc, WatchStream};

/// Quiet window used to check that no (further) response arrives on a watch stream. etcd's
/// catch-up loop runs every 100 ms, so anything pending shows up well within it.
const QUIET: Duration = Duration::from_millis(400);

// ------------------------------------------------------------------------------------------
// The deliberate differences: the only things the comparison may normalise.
// ------------------------------------------------------------------------------------------

/// A documented difference between etcd 3.4.23 and watchkv.
struct Difference {
    /// Name used by the steps.
    id: &'static str,
    /// The sections of docs/etcd-semantics.md that discuss it.
    sections: &'static str,
    /// What etcd 3.4.23 does.
    etcd: &'static str,
    /// What watchkv does.
    watchkv: &'static str,
    /// Why watchkv does not copy 3.4.23.
    why: &'static str,
    /// `true`: applied to every step (a no-op unless the documented pattern is present);
    /// `false`: applied only to steps that name it.
    global: bool,
    /// Checks both outputs show the documented behaviour and rewrites it away. Returns whether
    /// it changed anything; `Err` when a side does not behave as documented.
    normalise: fn(&mut Value, &mut Value) -> Result<bool, String>,
}

/// Every deliberate difference, with the reason. Nothing else is normalised.
const DIFFERENCES: &[Difference] = &[
    Difference {
        id: "error-body-shape",
        sections: "§8, §12.2",
        etcd: r#"error body {"error":msg,"message":msg,"code":N} (old grpc-gateway v1)"#,
        watchkv: r#"error body {"code":N,"message":msg} (grpc-gateway v2, current etcd)"#,
        why: "current etcd's gateway writes google.rpc.Status; the duplicated `error` field is gone. Status and code still compared.",
        global: true,
        normalise: norm_error_body,
    },
    Difference {
        id: "failed-precondition-http-status",
        sections: "§8 (HTTPStatusFromCode)",
        etcd: "gRPC code 9 (FailedPrecondition, e.g. `etcdserver: lease already exists`) is HTTP 412 (grpc-gateway v1)",
        watchkv: "HTTP 400, as grpc-gateway v2 in current etcd maps FailedPrecondition",
        why: "follows current etcd's gateway; the gRPC code and message in the body are compared",
        global: false,
        normalise: norm_failed_precondition,
    },
    Difference {
        id: "json-syntax-error-text",
        sections: "§12.9",
        etcd: "a malformed body's message is Go encoding/json's text (e.g. `unexpected EOF`)",
        watchkv: "the message is serde_json's text (e.g. `EOF while parsing an object at line 1 column 12`)",
        why: "parser error texts are implementation detail; HTTP status 400 and code 3 are compared",
        global: false,
        normalise: norm_parser_message,
    },
    Difference {
        id: "status-server-fields",
        sections: "§12 (oracle identity)",
        etcd: r#"status: version "3.4.23", bbolt dbSize/dbSizeInUse, raft leader/index/term"#,
        watchkv: r#"status: version "3.5.0" (so clients' feature gates turn on, Xline #867), fjall sizes, no raft: leader = member id, raftIndex = revision"#,
        why: "different storage engine and no raft; only the field set and header revision are compared",
        global: false,
        normalise: norm_status,
    },
    Difference {
        id: "lease-keys-order",
        sections: "§12.3",
        etcd: "timetolive `keys` come in Go map iteration order (random from call to call)",
        watchkv: "`keys` sorted",
        why: "etcd's order is not deterministic, so only the set of keys can be compared",
        global: false,
        normalise: norm_lease_keys,
    },
    Difference {
        id: "progress-while-catching-up",
        sections: "§6.9, §12.4 (etcd #15220, fixed in 3.4.25)",
        etcd: "a progress request is answered at once (watch_id -1, current revision), even before an unsynced watcher's catch-up events",
        watchkv: "a progress request is answered only when every watcher of the stream is synced; one that arrives during catch-up is dropped (the client asks again), and an answer never precedes pending events",
        why: "a progress revision must never run ahead of events still to be delivered (Bookmarkable guarantee, §7.5); current etcd drops it",
        global: false,
        normalise: norm_progress_during_catch_up,
    },
    Difference {
        id: "progress-without-watchers",
        sections: "§6.9, §12.4",
        etcd: "a progress request on a stream with no watchers is answered (watch_id -1)",
        watchkv: "no response: a stream with zero watchers has nothing to report progress for (current etcd)",
        why: "follows current etcd's progressIfSync",
        global: false,
        normalise: norm_progress_without_watchers,
    },
    Difference {
        id: "compacted-watcher-forgotten",
        sections: "§7.2, §10 quirk 4, §12.7",
        etcd: "a compacted watcher stays on its stream until the client cancels it; the cancel is answered `{watch_id, canceled}`",
        watchkv: "the compaction notice ends the watcher: it leaves the stream at once, so a later cancel of its id gets no response (as for any unknown id)",
        why: "deliberate (docs/etcd-semantics.md §10 quirk 4): a lingering compacted watcher blocks every later progress request on the stream",
        global: false,
        normalise: norm_compacted_cancel,
    },
    Difference {
        id: "negative-start-revision",
        sections: "§7.1 step 2, §12.5",
        etcd: "start_revision -1 is accepted as a normal watch: created with a real id (its catch-up reads nothing before a compaction and a compaction notice after one)",
        watchkv: "created+canceled with watch_id -1 and cancel_reason `etcdserver: mvcc: required revision has been compacted`",
        why: "current etcd rejects a negative start revision",
        global: false,
        normalise: norm_negative_start,
    },
    Difference {
        id: "delete-at-compact-revision",
        sections: "§2.1, §11.7, §12.6 (etcd #18089/#19179, fixed in 3.4.34)",
        etcd: "compacting at a DELETE's revision drops the tombstone, so a watch from that revision never sees the DELETE",
        watchkv: "the tombstone at the compact revision is kept and the watch delivers the DELETE",
        why: "losing the event breaks the Reliable/Resumable guarantees; fixed upstream",
        global: false,
        normalise: norm_delete_at_compact,
    },
];

fn difference(id: &str) -> &'static Difference {
    DIFFERENCES.iter().find(|d| d.id == id).unwrap_or_else(|| panic!("step names unknown difference {id:?}"))
}

/// `{"status":N,"body":{...}}` with a non-200 status.
fn error_body(v: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    if v.get("status").and_then(Value::as_u64).is_some_and(|s| s != 200) {
        v.get_mut("body").and_then(Value::as_object_mut)
    } else {
        None
    }
}

fn norm_error_body(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    let Some(eb) = error_body(e) else {
        return Ok(false);
    };
    let Some(err) = eb.get("error").cloned() else {
        return Ok(false);
    };
    if Some(&err) != eb.get("message") {
        return Err(format!("etcd error body's `error` differs from its `message`: {eb:?}"));
    }
    if let Some(wb) = error_body(w) {
        if wb.contains_key("error") {
            return Err(format!("watchkv error body has the old `error` field: {wb:?}"));
        }
    }
    eb.remove("error");
    Ok(true)
}

fn norm_failed_precondition(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    if e["status"] != json!(412)
        || w["status"] != json!(400)
        || e["body"]["code"] != json!(9)
        || w["body"]["code"] != json!(9)
    {
        return Err(format!("expected code 9 as HTTP 412 (etcd) and 400 (watchkv): etcd {e}, watchkv {w}"));
    }
    e["status"] = json!(400);
    Ok(true)
}

fn norm_lease_keys(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    let wkeys = w["body"]["keys"].as_array().cloned().unwrap_or_default();
    let mut sorted = wkeys.clone();
    sorted.sort_by_key(|k| wire::unb64(k.as_str().unwrap_or_default()));
    if sorted != wkeys {
        return Err(format!("watchkv's lease keys are not sorted: {wkeys:?}"));
    }
    if let Some(keys) = e["body"].get_mut("keys").and_then(Value::as_array_mut) {
        keys.sort_by_key(|k| wire::unb64(k.as_str().unwrap_or_default()));
    }
    Ok(true)
}

fn norm_parser_message(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    for (side, v) in [("etcd", &mut *e), ("watchkv", &mut *w)] {
        let text = v.to_string();
        let b = error_body(v).ok_or_else(|| format!("{side}: expected an error reply, got {text}"))?;
        if b.get("code") != Some(&json!(3)) {
            return Err(format!("{side}: a malformed body must be code 3: {b:?}"));
        }
        b.insert("message".into(), json!("<JSON parser error text>"));
    }
    Ok(true)
}

fn norm_status(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    const SERVER_FIELDS: [&str; 7] =
        ["version", "dbSize", "dbSizeInUse", "leader", "raftIndex", "raftTerm", "raftAppliedIndex"];
    let (eb, wb) = (&e["body"], &w["body"]);
    if eb["version"] != json!("3.4.23") || wb["version"] != json!(watchkv_actors::api::REPORTED_ETCD_VERSION) {
        return Err(format!("status versions: etcd {} watchkv {}", eb["version"], wb["version"]));
    }
    for v in [&mut *e, &mut *w] {
        let b = v["body"].as_object_mut().ok_or("status body is not an object")?;
        for f in SERVER_FIELDS {
            if b.contains_key(f) {
                b.insert(f.into(), json!("<server-specific>"));
            }
        }
    }
    Ok(true)
}

/// A watch line's `result`.
fn result(line: &Value) -> &Value {
    &line["result"]
}

fn is_requested_progress(line: &Value) -> bool {
    let r = result(line);
    int(r, "watch_id") == -1 && r.get("events").is_none() && r.get("created").is_none() && r.get("canceled").is_none()
}

fn norm_progress_during_catch_up(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    let (el, wl) = (lines_mut(e)?, lines_mut(w)?);
    // etcd 3.4: exactly one progress response, anywhere, at the current revision.
    let ep: Vec<usize> = (0..el.len()).filter(|&i| is_requested_progress(&el[i])).collect();
    if ep.len() != 1 {
        return Err(format!("etcd 3.4 should answer the progress request once: {el:?}"));
    }
    let progress_rev = line_rev(&el[ep[0]]);
    let max_event_rev = el.iter().map(line_rev).max().unwrap_or(0);
    if progress_rev != max_event_rev {
        return Err(format!("etcd's progress revision {progress_rev} is not the current revision {max_event_rev}"));
    }
    el.remove(ep[0]);
    // watchkv: no progress response, or one after every event line.
    let last_event = wl.iter().rposition(|l| result(l).get("events").is_some());
    let wp: Vec<usize> = (0..wl.len()).filter(|&i| is_requested_progress(&wl[i])).collect();
    if wp.len() > 1 || wp.first().is_some_and(|&p| last_event.is_some_and(|le| p < le)) {
        return Err(format!("watchkv answered a progress request before catch-up events: {wl:?}"));
    }
    if let Some(&p) = wp.first() {
        wl.remove(p);
    }
    Ok(true)
}

fn norm_progress_without_watchers(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    let (el, wl) = (lines_mut(e)?, lines_mut(w)?);
    if el.len() != 1 || !is_requested_progress(&el[0]) {
        return Err(format!("etcd 3.4 should answer a progress request on an empty stream: {el:?}"));
    }
    if !wl.is_empty() {
        return Err(format!("watchkv should not answer a progress request on an empty stream: {wl:?}"));
    }
    el.clear();
    Ok(true)
}

fn norm_compacted_cancel(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    let (el, wl) = (lines_mut(e)?, lines_mut(w)?);
    let ok = el.len() == 1 && {
        let r = result(&el[0]);
        r.get("canceled") == Some(&json!(true)) && r.get("created").is_none() && r.get("compact_revision").is_none()
    };
    if !ok {
        return Err(format!("etcd 3.4 should answer the cancel of a compacted watcher with `canceled`: {el:?}"));
    }
    if !wl.is_empty() {
        return Err(format!("watchkv should have forgotten the compacted watcher: {wl:?}"));
    }
    el.clear();
    Ok(true)
}

fn norm_negative_start(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    let (el, wl) = (lines_mut(e)?, lines_mut(w)?);
    let first = el.first().map(result).ok_or("etcd sent nothing")?;
    if first.get("created") != Some(&json!(true)) || first.get("canceled").is_some() {
        return Err(format!("etcd 3.4 should accept start_revision -1 as a normal watch: {el:?}"));
    }
    let rev = int(&first["header"], "revision");
    let expected = json!({"result": {"header": {"revision": rev.to_string()}, "watch_id": "-1", "created": true, "canceled": true,
        "cancel_reason": "etcdserver: mvcc: required revision has been compacted"}});
    if wl.len() != 1 || wl[0] != expected {
        return Err(format!(
            "watchkv should reject start_revision -1 as current etcd does: {wl:?}, expected [{expected}]"
        ));
    }
    *el = vec![json!("start_revision -1 (see the differences table)")];
    *wl = el.clone();
    Ok(true)
}

fn norm_delete_at_compact(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    let (el, wl) = (lines_mut(e)?, lines_mut(w)?);
    // Both: a created line first; watchkv then one line with exactly the DELETE, etcd nothing.
    if el.len() != 1 || wl.len() != 2 {
        return Err(format!("expected etcd [created] and watchkv [created, DELETE]: etcd {el:?} watchkv {wl:?}"));
    }
    let evs = result(&wl[1])["events"].as_array().cloned().unwrap_or_default();
    if evs.len() != 1 || evs[0]["type"] != json!("DELETE") {
        return Err(format!("watchkv should deliver the DELETE at the compact revision: {:?}", wl[1]));
    }
    wl.truncate(1);
    Ok(true)
}

fn lines_mut(v: &mut Value) -> Result<&mut Vec<Value>, String> {
    let text = v.to_string();
    v.get_mut("lines").and_then(Value::as_array_mut).ok_or(format!("not a watch output: {text}"))
}

// ------------------------------------------------------------------------------------------
// The harness: one etcd and one watchkv, fed the same steps.
// ------------------------------------------------------------------------------------------

struct Diff {
    etcd: Proc,
    watchkv: Proc,
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
        for d in DIFFERENCES.iter().filter(|d| d.global || tags.contains(&d.id)) {
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
        let e = s.etcd.drain_for(QUIET);
        let w = s.watchkv.drain_for(QUIET);
        self.compare(&format!("{}: {step} (nothing more)", s.name), &[], json!({"lines": e}), json!({"lines": w}));
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

// ------------------------------------------------------------------------------------------
// Scenarios.
// ------------------------------------------------------------------------------------------

fn kv(d: &mut Diff) {
    d.unary("range on the empty store", "/v3/kv/range", json!({"key": b64("foo")}));
    d.unary("put foo=bar", "/v3/kv/put", json!({"key": b64("foo"), "value": b64("bar")}));
    d.unary("put foo=baz with prev_kv", "/v3/kv/put", json!({"key": b64("foo"), "value": b64("baz"), "prev_kv": true}));
    d.unary(
        "put new key with prev_kv (none)",
        "/v3/kv/put",
        json!({"key": b64("foo/a"), "value": b64("3"), "prev_kv": true}),
    );
    for (k, v) in [("foo/b", "1"), ("foo/c", "2"), ("foo/b", "4"), ("fo", "5"), ("fop", "0"), ("zed", "9"), ("a", "7")]
    {
        d.put(k, v);
    }
    d.unary(
        "put with int64 fields as numbers",
        "/v3/kv/put",
        json!({"key": b64("num"), "value": b64("n"), "lease": 0}),
    );
    d.unary("put an empty value", "/v3/kv/put", json!({"key": b64("empty")}));
    d.unary("range single key", "/v3/kv/range", json!({"key": b64("foo")}));
    d.unary("range missing key", "/v3/kv/range", json!({"key": b64("nope")}));
    d.unary("range empty value", "/v3/kv/range", json!({"key": b64("empty")}));
    d.unary("range prefix foo/", "/v3/kv/range", json!({"key": b64("foo/"), "range_end": b64("foo0")}));
    d.unary("range from-key fop", "/v3/kv/range", json!({"key": b64("fop"), "range_end": b64("\0")}));
    d.unary("range all keys", "/v3/kv/range", json!({"key": b64("\0"), "range_end": b64("\0")}));
    d.unary("range interval [fo, foo/b)", "/v3/kv/range", json!({"key": b64("fo"), "range_end": b64("foo/b")}));
    d.unary("range limit 2", "/v3/kv/range", json!({"key": b64("foo/"), "range_end": b64("foo0"), "limit": "2"}));
    d.unary(
        "range limit larger than the range",
        "/v3/kv/range",
        json!({"key": b64("foo/"), "range_end": b64("foo0"), "limit": 10}),
    );
    d.unary("range at revision 2", "/v3/kv/range", json!({"key": b64("foo"), "revision": "2"}));
    d.unary(
        "range prefix at revision 5",
        "/v3/kv/range",
        json!({"key": b64("foo/"), "range_end": b64("foo0"), "revision": 5}),
    );
    d.unary("range at a future revision", "/v3/kv/range", json!({"key": b64("foo"), "revision": "1000"}));
    for target in ["KEY", "VERSION", "CREATE", "MOD", "VALUE"] {
        for order in ["NONE", "ASCEND", "DESCEND"] {
            d.unary(
                &format!("range all sorted by {target} {order}"),
                "/v3/kv/range",
                json!({"key": b64("\0"), "range_end": b64("\0"), "sort_target": target, "sort_order": order}),
            );
        }
    }
    d.unary(
        "range sorted DESCEND by VALUE with limit 3",
        "/v3/kv/range",
        json!({"key": b64("\0"), "range_end": b64("\0"), "sort_target": "VALUE", "sort_order": "DESCEND", "limit": 3}),
    );
    d.unary(
        "range sort enums as numbers",
        "/v3/kv/range",
        json!({"key": b64("\0"), "range_end": b64("\0"), "sort_target": 3, "sort_order": 2}),
    );
    d.unary(
        "range keys_only",
        "/v3/kv/range",
        json!({"key": b64("foo/"), "range_end": b64("foo0"), "keys_only": true}),
    );
    d.unary(
        "range count_only",
        "/v3/kv/range",
        json!({"key": b64("foo/"), "range_end": b64("foo0"), "count_only": true}),
    );
    d.unary(
        "range count_only with limit",
        "/v3/kv/range",
        json!({"key": b64("\0"), "range_end": b64("\0"), "count_only": true, "limit": 1}),
    );
    d.unary(
        "range min_mod_revision",
        "/v3/kv/range",
        json!({"key": b64("\0"), "range_end": b64("\0"), "min_mod_revision": "6"}),
    );
    d.unary(
        "range max_mod_revision",
        "/v3/kv/range",
        json!({"key": b64("\0"), "range_end": b64("\0"), "max_mod_revision": "6"}),
    );
    d.unary(
        "range min_create_revision",
        "/v3/kv/range",
        json!({"key": b64("\0"), "range_end": b64("\0"), "min_create_revision": "7"}),
    );
    d.unary(
        "range max_create_revision",
        "/v3/kv/range",
        json!({"key": b64("\0"), "range_end": b64("\0"), "max_create_revision": "7"}),
    );
    d.unary(
        "range lowerCamelCase fields",
        "/v3/kv/range",
        json!({"key": b64("foo/"), "rangeEnd": b64("foo0"), "keysOnly": true}),
    );
    d.unary("range without a key", "/v3/kv/range", json!({}));
    d.unary("put without a key", "/v3/kv/put", json!({"value": b64("x")}));
    d.unary("put ignore_value on a missing key", "/v3/kv/put", json!({"key": b64("ghost"), "ignore_value": true}));
    d.unary(
        "put ignore_value with a value",
        "/v3/kv/put",
        json!({"key": b64("foo"), "value": b64("v"), "ignore_value": true}),
    );
    d.unary(
        "put ignore_value keeps the value",
        "/v3/kv/put",
        json!({"key": b64("foo"), "ignore_value": true, "prev_kv": true}),
    );
    d.unary(
        "put ignore_lease on a missing key",
        "/v3/kv/put",
        json!({"key": b64("ghost"), "value": b64("v"), "ignore_lease": true}),
    );
    d.unary(
        "put with an unknown lease",
        "/v3/kv/put",
        json!({"key": b64("ghost"), "value": b64("v"), "lease": "12345"}),
    );
    d.raw("put with a truncated JSON body", "/v3/kv/put", br#"{"key":"Zm9v","#, &["json-syntax-error-text"]);
    d.unary("deleterange a missing key", "/v3/kv/deleterange", json!({"key": b64("nope")}));
    d.unary("deleterange single with prev_kv", "/v3/kv/deleterange", json!({"key": b64("fo"), "prev_kv": true}));
    d.unary(
        "deleterange prefix with prev_kv",
        "/v3/kv/deleterange",
        json!({"key": b64("foo/"), "range_end": b64("foo0"), "prev_kv": true}),
    );
    d.unary(
        "deleterange from-key without prev_kv",
        "/v3/kv/deleterange",
        json!({"key": b64("zed"), "range_end": b64("\0")}),
    );
    d.unary("deleterange without a key", "/v3/kv/deleterange", json!({}));
    d.unary("range all after deletes", "/v3/kv/range", json!({"key": b64("\0"), "range_end": b64("\0")}));
    d.unary("range a deleted key at an old revision", "/v3/kv/range", json!({"key": b64("foo/b"), "revision": 7}));
    d.put("foo/a", "reborn");
    d.unary("a re-created key restarts its version", "/v3/kv/range", json!({"key": b64("foo/a")}));
}

fn cmp(target: &str, result: &str, key: &str, field: &str, value: Value) -> Value {
    let mut c = json!({"target": target, "result": result, "key": b64(key)});
    c[field] = value;
    c
}

fn txn(d: &mut Diff) {
    let r1 = d.put("t1", "v1");
    d.put("t1", "v2");
    let get_t1 = json!({"request_range": {"key": b64("t1")}});
    let compares: Vec<(&str, Value)> = vec![
        ("VERSION EQUAL 2", cmp("VERSION", "EQUAL", "t1", "version", json!("2"))),
        ("VERSION GREATER 1", cmp("VERSION", "GREATER", "t1", "version", json!("1"))),
        ("VERSION LESS 2", cmp("VERSION", "LESS", "t1", "version", json!("2"))),
        ("VERSION NOT_EQUAL 2", cmp("VERSION", "NOT_EQUAL", "t1", "version", json!("2"))),
        ("CREATE EQUAL r1", cmp("CREATE", "EQUAL", "t1", "create_revision", json!(r1.to_string()))),
        ("CREATE LESS r1", cmp("CREATE", "LESS", "t1", "create_revision", json!(r1.to_string()))),
        ("MOD GREATER r1", cmp("MOD", "GREATER", "t1", "mod_revision", json!(r1.to_string()))),
        ("MOD EQUAL r1", cmp("MOD", "EQUAL", "t1", "mod_revision", json!(r1))),
        ("VALUE EQUAL v2", cmp("VALUE", "EQUAL", "t1", "value", json!(b64("v2")))),
        ("VALUE LESS v3", cmp("VALUE", "LESS", "t1", "value", json!(b64("v3")))),
        ("VALUE GREATER v3", cmp("VALUE", "GREATER", "t1", "value", json!(b64("v3")))),
        ("VALUE NOT_EQUAL v1", cmp("VALUE", "NOT_EQUAL", "t1", "value", json!(b64("v1")))),
        ("LEASE EQUAL 0", cmp("LEASE", "EQUAL", "t1", "lease", json!("0"))),
        ("LEASE GREATER 0", cmp("LEASE", "GREATER", "t1", "lease", json!("0"))),
        (
            "enums as numbers: MOD(2) LESS(2) 1000",
            json!({"target": 2, "result": 2, "key": b64("t1"), "mod_revision": 1000}),
        ),
        ("missing key: CREATE EQUAL 0", cmp("CREATE", "EQUAL", "nokey", "create_revision", json!("0"))),
        ("missing key: VERSION EQUAL 0", cmp("VERSION", "EQUAL", "nokey", "version", json!("0"))),
        ("missing key: VALUE EQUAL empty", cmp("VALUE", "EQUAL", "nokey", "value", json!(""))),
        ("missing key: MOD GREATER 0", cmp("MOD", "GREATER", "nokey", "mod_revision", json!("0"))),
        ("range compare: every key in [t, u) VERSION GREATER 0", {
            let mut c = cmp("VERSION", "GREATER", "t", "version", json!("0"));
            c["range_end"] = json!(b64("u"));
            c
        }),
        ("range compare: every key in [t, u) VERSION EQUAL 2", {
            let mut c = cmp("VERSION", "EQUAL", "t", "version", json!("2"));
            c["range_end"] = json!(b64("u"));
            c
        }),
    ];
    for (name, c) in compares {
        d.unary(
            &format!("txn compare {name}"),
            "/v3/kv/txn",
            json!({"compare": [c], "success": [get_t1.clone()], "failure": [{"request_range": {"key": b64("nokey")}}]}),
        );
    }
    d.unary(
        "txn two compares, success writes",
        "/v3/kv/txn",
        json!({
            "compare": [cmp("VALUE", "EQUAL", "t1", "value", json!(b64("v2"))), cmp("CREATE", "EQUAL", "t2", "create_revision", json!(0))],
            "success": [
                {"request_put": {"key": b64("t2"), "value": b64("w"), "prev_kv": true}},
                {"request_put": {"key": b64("t3"), "value": b64("w")}},
                {"request_range": {"key": b64("t"), "range_end": b64("u")}},
                {"request_delete_range": {"key": b64("t1"), "prev_kv": true}},
            ],
            "failure": [get_t1.clone()],
        }),
    );
    d.unary(
        "txn failure branch writes",
        "/v3/kv/txn",
        json!({
            "compare": [cmp("VERSION", "GREATER", "t2", "version", json!(5))],
            "success": [{"request_put": {"key": b64("t4"), "value": b64("never")}}],
            "failure": [{"request_put": {"key": b64("t4"), "value": b64("else")}}, {"request_range": {"key": b64("t4")}}],
        }),
    );
    d.unary(
        "nested txn",
        "/v3/kv/txn",
        json!({
            "success": [
                {"request_txn": {
                    "compare": [cmp("VALUE", "EQUAL", "t4", "value", json!(b64("else")))],
                    "success": [{"request_put": {"key": b64("t5"), "value": b64("nested")}}, {"request_range": {"key": b64("t5")}}],
                    "failure": [],
                }},
                {"request_txn": {
                    "compare": [cmp("VALUE", "EQUAL", "t4", "value", json!(b64("no")))],
                    "success": [],
                    "failure": [{"request_range": {"key": b64("t"), "range_end": b64("u"), "count_only": true}}],
                }},
            ],
        }),
    );
    d.unary("empty txn", "/v3/kv/txn", json!({}));
    d.unary(
        "read-only txn keeps the revision",
        "/v3/kv/txn",
        json!({"success": [get_t1.clone(), {"request_range": {"key": b64("t2")}}]}),
    );
    d.unary(
        "txn with an empty request op",
        "/v3/kv/txn",
        json!({"success": [{"Request": {"request_put": {"key": b64("x"), "value": b64("y")}}}]}),
    );
    d.unary(
        "txn putting one key twice",
        "/v3/kv/txn",
        json!({"success": [{"request_put": {"key": b64("t6"), "value": b64("1")}}, {"request_put": {"key": b64("t6"), "value": b64("2")}}]}),
    );
    d.unary(
        "txn putting and deleting one key",
        "/v3/kv/txn",
        json!({"success": [{"request_put": {"key": b64("t6"), "value": b64("1")}}, {"request_delete_range": {"key": b64("t"), "range_end": b64("u")}}]}),
    );
    let many: Vec<Value> = (0..129).map(|i| json!({"request_range": {"key": b64(format!("k{i}"))}})).collect();
    d.unary("txn with 129 ops", "/v3/kv/txn", json!({"success": many}));
    d.unary(
        "txn range with a future revision",
        "/v3/kv/txn",
        json!({"success": [{"request_range": {"key": b64("t2"), "revision": 100000}}]}),
    );
    d.unary(
        "txn put with an unknown lease",
        "/v3/kv/txn",
        json!({"success": [{"request_put": {"key": b64("t7"), "value": b64("x"), "lease": 777}}]}),
    );
    d.unary("range after txns", "/v3/kv/range", json!({"key": b64("t"), "range_end": b64("u")}));
}

fn leases(d: &mut Diff) {
    const L1: i64 = 0x1000;
    const L2: i64 = 0x2000;
    d.unary("lease grant explicit ID", "/v3/lease/grant", json!({"ID": L1.to_string(), "TTL": "60"}));
    d.unary_tagged(
        "lease grant duplicate ID",
        "/v3/lease/grant",
        json!({"ID": L1, "TTL": 60}),
        &["failed-precondition-http-status"],
    );
    d.unary("lease grant second lease", "/v3/lease/grant", json!({"ID": L2, "TTL": 120}));
    d.unary("lease grant too large TTL", "/v3/lease/grant", json!({"ID": 0x3000, "TTL": "9000000001"}));
    d.unary("put l1 with lease", "/v3/kv/put", json!({"key": b64("l1"), "value": b64("a"), "lease": L1.to_string()}));
    d.unary("put l2 with lease", "/v3/kv/put", json!({"key": b64("l2"), "value": b64("b"), "lease": L1}));
    d.unary("put l3 with the other lease", "/v3/kv/put", json!({"key": b64("l3"), "value": b64("c"), "lease": L2}));
    d.unary(
        "put ignore_lease keeps the lease",
        "/v3/kv/put",
        json!({"key": b64("l3"), "value": b64("c2"), "ignore_lease": true, "prev_kv": true}),
    );
    d.unary("range shows leases", "/v3/kv/range", json!({"key": b64("l"), "range_end": b64("m")}));
    d.unary(
        "txn compare LEASE EQUAL",
        "/v3/kv/txn",
        json!({"compare": [cmp("LEASE", "EQUAL", "l1", "lease", json!(L1.to_string()))], "success": [{"request_range": {"key": b64("l1")}}]}),
    );
    // The remaining TTL is truncated to whole seconds (etcd: `int64(le.Remaining().Seconds())`),
    // so both servers answer grantedTTL - 1 a few milliseconds after the grant.
    d.unary_tagged(
        "lease timetolive with keys",
        "/v3/lease/timetolive",
        json!({"ID": L1, "keys": true}),
        &["lease-keys-order"],
    );
    d.unary("lease timetolive without keys (kv path)", "/v3/kv/lease/timetolive", json!({"ID": L2}));
    d.unary("lease timetolive unknown", "/v3/lease/timetolive", json!({"ID": 0x4000, "keys": true}));
    d.unary_lines("lease keepalive", "/v3/lease/keepalive", &json!({"ID": L1}).to_string());
    d.unary_lines("lease keepalive unknown", "/v3/lease/keepalive", &json!({"ID": 0x4000}).to_string());
    d.unary("lease leases", "/v3/lease/leases", json!({}));
    d.unary("lease revoke deletes attached keys", "/v3/lease/revoke", json!({"ID": L1.to_string()}));
    d.unary("range after revoke", "/v3/kv/range", json!({"key": b64("l"), "range_end": b64("m")}));
    d.unary("lease revoke unknown", "/v3/lease/revoke", json!({"ID": L1}));
    d.unary("lease revoke on the kv path", "/v3/kv/lease/revoke", json!({"ID": L2}));
    d.unary("lease timetolive after revoke", "/v3/kv/lease/timetolive", json!({"ID": L2, "keys": true}));
    d.unary("lease leases after revoke", "/v3/kv/lease/leases", json!({}));
}

fn watches(d: &mut Diff) {
    // Live events on one watcher, cancel, unknown cancel.
    let mut s = d.open("live");
    d.send(&mut s, create("w1", json!({})));
    d.expect(&mut s, "created (auto id 0)", 1);
    d.put("w1", "a");
    d.expect(&mut s, "live PUT", 1);
    d.put("w2", "unwatched");
    d.put("w1", "b");
    d.expect(&mut s, "only the watched key", 1);
    d.unary("delete w1", "/v3/kv/deleterange", json!({"key": b64("w1")}));
    d.expect(&mut s, "live DELETE", 1);
    d.unary(
        "txn writing two watched keys",
        "/v3/kv/txn",
        json!({"success": [{"request_put": {"key": b64("w1"), "value": b64("t")}}, {"request_put": {"key": b64("w2"), "value": b64("t")}}]}),
    );
    d.expect(&mut s, "one event for a txn", 1);
    d.send(&mut s, json!({"progress_request": {}}));
    d.expect(&mut s, "progress on a synced stream", 1);
    d.send(&mut s, create("w2", json!({"watch_id": 7})));
    d.expect(&mut s, "created with explicit id 7", 1);
    d.send(&mut s, create("w2", json!({"watch_id": "7"})));
    d.expect(&mut s, "created-failed: duplicate id", 1);
    d.send(&mut s, create("w9", json!({"range_end": b64("w1")})));
    d.expect(&mut s, "created-failed: empty range", 1);
    d.send(&mut s, create("w3", json!({})));
    d.expect(&mut s, "created (next auto id)", 1);
    d.send(&mut s, json!({"cancel_request": {"watch_id": "0"}}));
    d.expect(&mut s, "cancel id 0", 1);
    d.send(&mut s, json!({"cancel_request": {"watch_id": 7}}));
    d.expect(&mut s, "cancel id 7", 1);
    d.send(&mut s, json!({"cancel_request": {"watch_id": 77}}));
    d.quiet(&mut s, "cancel of an unknown id gets no response");
    d.put("w1", "after-cancel");
    d.put("w3", "x");
    d.expect(&mut s, "cancelled watchers get nothing; w3 does", 1);
    d.quiet(&mut s, "end of live");
    Diff::close(s);

    // Prefix, prev_kv and filters, one watcher per stream (etcd orders responses of different
    // watchers for one revision by map iteration).
    let mut all = d.open("prefix prev_kv");
    d.send(&mut all, create("p/", json!({"range_end": b64("p0"), "prev_kv": true})));
    d.expect(&mut all, "created", 1);
    let mut noput = d.open("NOPUT");
    d.send(&mut noput, create("p/", json!({"range_end": b64("p0"), "filters": ["NOPUT"]})));
    d.expect(&mut noput, "created", 1);
    let mut nodel = d.open("NODELETE");
    d.send(&mut nodel, create("p/", json!({"range_end": b64("p0"), "filters": [1]})));
    d.expect(&mut nodel, "created", 1);
    let mut fromkey = d.open("from-key");
    d.send(&mut fromkey, create("p/b", json!({"range_end": b64("\0")})));
    d.expect(&mut fromkey, "created", 1);
    d.put("p/a", "1");
    d.expect(&mut all, "PUT with no prev_kv (create)", 1);
    d.expect(&mut nodel, "PUT passes NODELETE", 1);
    d.put("p/b", "2");
    d.put("p/a", "3");
    d.expect(&mut all, "PUT p/b and PUT p/a with prev_kv", 2);
    d.expect(&mut nodel, "two PUTs", 2);
    d.expect(&mut fromkey, "PUT p/b only", 1);
    d.unary("delete prefix p/", "/v3/kv/deleterange", json!({"key": b64("p/"), "range_end": b64("p0")}));
    d.expect(&mut all, "two DELETEs in one response with prev_kv", 1);
    d.expect(&mut noput, "two DELETEs", 1);
    d.expect(&mut fromkey, "DELETE p/b", 1);
    d.put("q", "beyond the prefix");
    d.expect(&mut fromkey, "from-key sees q", 1);
    for s in [all, noput, nodel, fromkey] {
        let mut s = s;
        d.quiet(&mut s, "end");
        Diff::close(s);
    }

    // Catch-up from an old revision, then live.
    let base = d.put("c/1", "a");
    d.put("c/2", "b");
    d.put("c/1", "c");
    d.unary("delete c/2", "/v3/kv/deleterange", json!({"key": b64("c/2")}));
    let mut s = d.open("catch-up");
    d.send(&mut s, create("c/", json!({"range_end": b64("c0"), "start_revision": base.to_string(), "prev_kv": true})));
    d.expect(&mut s, "created and one catch-up batch", 2);
    d.put("c/3", "live");
    d.expect(&mut s, "then live", 1);
    d.quiet(&mut s, "end");
    Diff::close(s);

    // Catch-up with a filter and from the middle of the history.
    let mut s = d.open("catch-up NOPUT");
    d.send(&mut s, create("c/", json!({"range_end": b64("c0"), "start_revision": base + 1, "filters": ["NOPUT"]})));
    d.expect(&mut s, "created and the DELETE only", 2);
    d.quiet(&mut s, "end");
    Diff::close(s);

    // Progress request while a watcher is still catching up; asked again once it has caught up.
    let mut s = d.open("progress during catch-up");
    d.send(&mut s, create("c/", json!({"range_end": b64("c0"), "start_revision": base})));
    d.expect(&mut s, "created", 1);
    d.send(&mut s, json!({"progress_request": {}}));
    let has_events = |l: &[Value]| l.iter().any(|x| result(x).get("events").is_some());
    let mut e = s.etcd.take_until(wire::DEADLINE, has_events);
    e.extend(s.etcd.drain_for(QUIET));
    let mut w = s.watchkv.take_until(wire::DEADLINE, has_events);
    w.extend(s.watchkv.drain_for(QUIET));
    d.compare(
        "progress during catch-up: events",
        &["progress-while-catching-up"],
        json!({"lines": e}),
        json!({"lines": w}),
    );
    d.send(&mut s, json!({"progress_request": {}}));
    d.expect(&mut s, "progress once synced", 1);
    d.quiet(&mut s, "end");
    Diff::close(s);

    // A stream with no watchers.
    let mut s = d.open("no watchers");
    d.send(&mut s, json!({"progress_request": {}}));
    let e = s.etcd.take_until(wire::DEADLINE, |l| !l.is_empty());
    let w = s.watchkv.drain_for(QUIET);
    d.compare(
        "no watchers: progress request",
        &["progress-without-watchers"],
        json!({"lines": e}),
        json!({"lines": w}),
    );
    d.send(&mut s, json!({}));
    d.send(&mut s, json!({"cancel_request": {"watch_id": 0}}));
    d.quiet(&mut s, "an empty request and an unknown cancel");
    Diff::close(s);

    // A start revision in the future.
    let cur = d.put("f", "0");
    let mut s = d.open("future start");
    d.send(&mut s, create("f", json!({"start_revision": cur + 2})));
    d.expect(&mut s, "created", 1);
    d.put("f", "1");
    d.quiet(&mut s, "no event below the start revision");
    d.put("f", "2");
    d.expect(&mut s, "the event at the start revision", 1);
    Diff::close(s);

    // start_revision -1.
    let mut s = d.open("negative start");
    d.send(&mut s, create("c/1", json!({"start_revision": -1})));
    let mut e = s.etcd.take(1);
    e.extend(s.etcd.drain_for(QUIET));
    let mut w = s.watchkv.take(1);
    w.extend(s.watchkv.drain_for(QUIET));
    d.compare("negative start: created", &["negative-start-revision"], json!({"lines": e}), json!({"lines": w}));
    Diff::close(s);

    // Half-closing the request body does not end the response stream (docs/etcd-semantics.md §7.1).
    let mut s = d.open("half-close");
    d.send(&mut s, create("h", json!({})));
    d.expect(&mut s, "created", 1);
    s.etcd.end_body();
    s.watchkv.end_body();
    d.put("h", "after half-close");
    d.expect(&mut s, "events after the body ended", 1);
    Diff::close(s);
}

fn compaction(d: &mut Diff) {
    let r1 = d.put("k/1", "a");
    let r2 = d.put("k/1", "b");
    let r3 = d.put("k/1", "c");
    d.unary("compact in the future", "/v3/kv/compaction", json!({"revision": (r3 + 100).to_string()}));
    d.unary("compact at r2", "/v3/kv/compaction", json!({"revision": r2.to_string()}));
    d.unary("compact at r2 again", "/v3/kv/compaction", json!({"revision": r2}));
    d.unary("compact below r2", "/v3/kv/compaction", json!({"revision": r1}));
    d.unary("range below the compaction", "/v3/kv/range", json!({"key": b64("k/1"), "revision": r1}));
    d.unary("range at the compaction", "/v3/kv/range", json!({"key": b64("k/1"), "revision": r2}));
    d.unary("range after the compaction", "/v3/kv/range", json!({"key": b64("k/1"), "revision": r3}));
    d.unary(
        "txn range below the compaction",
        "/v3/kv/txn",
        json!({"success": [{"request_range": {"key": b64("k/1"), "revision": r1}}]}),
    );

    // A watch from below the compaction gets the compacted notice.
    let mut s = d.open("compacted");
    d.send(&mut s, create("k/1", json!({"start_revision": r1})));
    let got = d.expect(&mut s, "created and the compacted notice", 2);
    assert!(got.len() == 2 && line_rev(&got[1]) == 0, "compacted notice has no header revision: {got:?}");
    d.quiet(&mut s, "nothing after the notice");
    d.put("k/1", "d");
    d.quiet(&mut s, "a compacted watcher gets no events");
    d.send(&mut s, json!({"cancel_request": {"watch_id": 0}}));
    let e = s.etcd.take_until(wire::DEADLINE, |l| !l.is_empty());
    let w = s.watchkv.drain_for(QUIET);
    d.compare(
        "compacted: cancel after the notice",
        &["compacted-watcher-forgotten"],
        json!({"lines": e}),
        json!({"lines": w}),
    );
    Diff::close(s);

    // A watch from exactly the compaction revision is fine.
    let mut s = d.open("at compaction");
    d.send(&mut s, create("k/1", json!({"start_revision": r2})));
    d.expect(&mut s, "created and catch-up from the compact revision", 2);
    Diff::close(s);

    // The DELETE at the compact revision.
    d.put("dk", "x");
    let del = d.unary("delete dk", "/v3/kv/deleterange", json!({"key": b64("dk")}));
    let rd = int(&del["header"], "revision");
    d.unary(
        "compact physically at the DELETE",
        "/v3/kv/compaction",
        json!({"revision": rd.to_string(), "physical": true}),
    );
    let mut s = d.open("delete at compaction");
    d.send(&mut s, create("dk", json!({"start_revision": rd})));
    let e = s.etcd.take(1);
    let mut e2 = e.clone();
    e2.extend(s.etcd.drain_for(QUIET));
    let w = s.watchkv.take_until(wire::DEADLINE, |l| l.len() >= 2);
    d.compare(
        "delete at compaction: created, DELETE",
        &["delete-at-compact-revision"],
        json!({"lines": e2}),
        json!({"lines": w}),
    );
    Diff::close(s);
}

fn status(d: &mut Diff) {
    d.unary_tagged("maintenance status", "/v3/maintenance/status", json!({}), &["status-server-fields"]);
}

#[test]
fn differential_against_etcd_3_4() {
    run_differential(false);
}

/// The same scenarios with watchkv driven over gRPC (requests and responses translated from
/// and to gateway JSON with etcd's descriptors) and etcd over its gateway, as before.
#[test]
fn differential_over_grpc_against_etcd_3_4() {
    run_differential(true);
}

fn run_differential(over_grpc: bool) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let wk_port = wire::free_port();
    let watchkv = start_watchkv(&dir.path().join("watchkv"), wk_port, &["--durability", "buffered"]);
    let grpc = over_grpc.then(|| GrpcClient::connect(wk_port));
    let mut d =
        Diff { etcd, watchkv, grpc, failures: Vec::new(), used: BTreeSet::new(), steps: 0, last_step: Instant::now() };

    kv(&mut d);
    txn(&mut d);
    leases(&mut d);
    watches(&mut d);
    compaction(&mut d);
    status(&mut d);

    let unused: Vec<&str> = DIFFERENCES.iter().map(|x| x.id).filter(|id| !d.used.contains(id)).collect();
    // Malformed-JSON steps only exist over HTTP, so only that run must use every entry.
    if !unused.is_empty() && !over_grpc {
        d.failures
            .push(format!("differences table entries no step exercised (remove them or add the step): {unused:?}"));
    }
    eprintln!(
        "differential ({}): {} steps compared in {:.1?}; deliberate differences exercised:",
        if over_grpc { "watchkv over gRPC" } else { "watchkv over HTTP" },
        d.steps,
        started.elapsed()
    );
    for x in DIFFERENCES {
        eprintln!("  - {} ({}): etcd 3.4.23: {}; watchkv: {}; why: {}", x.id, x.sections, x.etcd, x.watchkv, x.why);
    }
    assert!(
        d.failures.is_empty(),
        "{} of {} steps differ from etcd 3.4.23 beyond the documented differences:\n\n{}\n\netcd log tail:\n{}\nwatchkv log tail:\n{}",
        d.failures.len(),
        d.steps,
        d.failures.join("\n\n"),
        d.etcd.log_tail(2000),
        d.watchkv.log_tail(2000)
    );
}
