//! The deliberate differences between etcd 3.4.23 and watchkv: the only things the
//! differential comparison may normalise, each with the sections of docs/etcd-semantics.md that
//! discuss it, and the normalisers that check both sides behave as documented.

use serde_json::{json, Value};

use super::{line_rev, Target};
use crate::wire::{self, int};

/// A documented difference between etcd 3.4.23 and watchkv.
pub(crate) struct Difference {
    /// Name used by the steps.
    pub(crate) id: &'static str,
    /// The sections of docs/etcd-semantics.md that discuss it.
    pub(crate) sections: &'static str,
    /// What etcd 3.4.23 does.
    pub(crate) etcd: &'static str,
    /// What watchkv does.
    pub(crate) watchkv: &'static str,
    /// Why watchkv does not copy 3.4.23.
    pub(crate) why: &'static str,
    /// `true`: applied to every step (a no-op unless the documented pattern is present);
    /// `false`: applied only to steps that name it.
    pub(crate) global: bool,
    /// The targets it applies to (a step naming it on another target compares as is); each
    /// target's run must exercise every entry that applies to it.
    pub(crate) targets: &'static [Target],
    /// Checks both outputs show the documented behaviour and rewrites it away. Returns whether
    /// it changed anything; `Err` when a side does not behave as documented.
    pub(crate) normalise: fn(&mut Value, &mut Value) -> Result<bool, String>,
}

/// A difference of watchkv itself, on a node of its own and on a mirror alike.
const EVERY_TARGET: &[Target] = &[Target::SingleNode, Target::Mirror];

/// A difference of mirror mode only (docs/etcd-semantics.md §18).
const MIRROR_ONLY: &[Target] = &[Target::Mirror];

impl Difference {
    /// Whether this entry applies to `target`.
    pub(crate) fn applies_to(&self, target: Target) -> bool {
        self.targets.contains(&target)
    }
}

/// Every deliberate difference, with the reason. Nothing else is normalised.
pub(crate) const DIFFERENCES: &[Difference] = &[
    Difference {
        id: "error-body-shape",
        sections: "§8, §12 item 2",
        etcd: r#"error body {"error":msg,"message":msg,"code":N} (old grpc-gateway v1)"#,
        watchkv: r#"error body {"code":N,"message":msg} (grpc-gateway v2, current etcd)"#,
        why: "current etcd's gateway writes google.rpc.Status; the duplicated `error` field is gone. Status and code still compared.",
        global: true,
        targets: EVERY_TARGET,
        normalise: norm_error_body,
    },
    Difference {
        id: "failed-precondition-http-status",
        sections: "§8 (HTTPStatusFromCode)",
        etcd: "gRPC code 9 (FailedPrecondition, e.g. `etcdserver: lease already exists`) is HTTP 412 (grpc-gateway v1)",
        watchkv: "HTTP 400, as grpc-gateway v2 in current etcd maps FailedPrecondition",
        why: "follows current etcd's gateway; the gRPC code and message in the body are compared",
        global: false,
        targets: EVERY_TARGET,
        normalise: norm_failed_precondition,
    },
    Difference {
        id: "json-syntax-error-text",
        sections: "§12 item 9",
        etcd: "a malformed body's message is Go encoding/json's text (e.g. `unexpected EOF`)",
        watchkv: "the message is serde_json's text (e.g. `EOF while parsing an object at line 1 column 12`)",
        why: "parser error texts are implementation detail; HTTP status 400 and code 3 are compared",
        global: false,
        targets: EVERY_TARGET,
        normalise: norm_parser_message,
    },
    Difference {
        id: "status-server-fields",
        sections: "§12 (oracle identity)",
        etcd: r#"status: version "3.4.23", bbolt dbSize/dbSizeInUse, raft leader/index/term"#,
        watchkv: r#"status: version "3.5.0" (so clients' feature gates turn on, Xline #867), fjall sizes, no raft: leader = member id, raftIndex = revision"#,
        why: "different storage engine and no raft; only the field set and header revision are compared",
        global: false,
        targets: EVERY_TARGET,
        normalise: norm_status,
    },
    Difference {
        id: "lease-keys-order",
        sections: "§12 item 3",
        etcd: "timetolive `keys` come in Go map iteration order (random from call to call)",
        watchkv: "`keys` sorted",
        why: "etcd's order is not deterministic, so only the set of keys can be compared",
        global: false,
        targets: EVERY_TARGET,
        normalise: norm_lease_keys,
    },
    Difference {
        id: "progress-while-catching-up",
        sections: "§6.9, §12 item 4 (etcd #15220, fixed in 3.4.25)",
        etcd: "a progress request is answered at once (watch_id -1, current revision), even before an unsynced watcher's catch-up events",
        watchkv: "a progress request is answered only when every watcher of the stream is synced; one that arrives during catch-up is dropped (the client asks again), and an answer never precedes pending events",
        why: "a progress revision must never run ahead of events still to be delivered (Bookmarkable guarantee, §7.5); current etcd drops it",
        global: false,
        targets: EVERY_TARGET,
        normalise: norm_progress_during_catch_up,
    },
    Difference {
        id: "progress-without-watchers",
        sections: "§6.9, §12 item 4",
        etcd: "a progress request on a stream with no watchers is answered (watch_id -1)",
        watchkv: "no response: a stream with zero watchers has nothing to report progress for (current etcd)",
        why: "follows current etcd's progressIfSync",
        global: false,
        targets: EVERY_TARGET,
        normalise: norm_progress_without_watchers,
    },
    Difference {
        id: "negative-start-revision",
        sections: "§7.1 step 2, §12 item 5",
        etcd: "start_revision -1 is accepted as a normal watch: created with a real id (its catch-up reads nothing before a compaction and a compaction notice after one)",
        watchkv: "created+canceled with watch_id -1 and cancel_reason `etcdserver: mvcc: required revision has been compacted`",
        why: "current etcd rejects a negative start revision",
        global: false,
        targets: EVERY_TARGET,
        normalise: norm_negative_start,
    },
    Difference {
        id: "delete-at-compact-revision",
        sections: "§2.1, §11 item 7, §12 item 6 (etcd #18089/#19179, fixed in 3.4.34)",
        etcd: "compacting at a DELETE's revision drops the tombstone, so a watch from that revision never sees the DELETE",
        watchkv: "the tombstone at the compact revision is kept and the watch delivers the DELETE (a mirror keeps every row: upstream's compaction is not its own)",
        why: "losing the event breaks the Reliable/Resumable guarantees; fixed upstream",
        global: false,
        targets: EVERY_TARGET,
        normalise: norm_delete_at_compact,
    },
    Difference {
        id: "mirror-keeps-compacted-history",
        sections: "§18 (Writes and leases go upstream; Retention)",
        etcd: "after a Compact, a range or txn below the compact revision fails with `etcdserver: mvcc: required revision has been compacted` (code 11), and a watch from below it gets the compaction notice (canceled, compact_revision) and no events",
        watchkv: "a mirror forwards the Compact to upstream, which compacts; the mirror's own history is kept until its own auto-compaction, so the range and txn answer from it and the watch delivers its events, catch-up and live",
        why: "a mirror's history is its own: it keeps serving revisions upstream has compacted, so its clients can still read and resume from them",
        global: false,
        targets: MIRROR_ONLY,
        normalise: norm_mirror_keeps_compacted_history,
    },
];

pub(crate) fn difference(id: &str) -> &'static Difference {
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
pub(crate) fn result(line: &Value) -> &Value {
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

/// etcd's error for a revision below the compact revision (etcd: mvcc/kvstore.go
/// `ErrCompacted`, as the gateway renders it).
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

fn norm_mirror_keeps_compacted_history(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    if e.get("lines").is_some() {
        return norm_mirror_watch_below_compaction(e, w);
    }
    // A range or txn below the compact revision: etcd's error, the mirror's answer.
    if e["status"] != json!(400) || e["body"]["code"] != json!(11) || e["body"]["message"] != json!(COMPACTED) {
        return Err(format!("etcd should refuse a read below the compact revision: {e}"));
    }
    let rows = |b: &Value| -> Vec<Value> {
        let own = b["kvs"].as_array().cloned().unwrap_or_default();
        let in_txn = b["responses"].as_array().into_iter().flatten();
        own.into_iter()
            .chain(in_txn.flat_map(|r| r["response_range"]["kvs"].as_array().cloned().unwrap_or_default()))
            .collect()
    };
    let kvs = rows(&w["body"]);
    if w["status"] != json!(200) || kvs.is_empty() {
        return Err(format!("the mirror should answer a read below upstream's compact revision from its history: {w}"));
    }
    *e = json!("a read below upstream's compact revision (see the differences table)");
    *w = e.clone();
    Ok(true)
}

fn norm_mirror_watch_below_compaction(e: &mut Value, w: &mut Value) -> Result<bool, String> {
    let is_notice = |l: &Value| result(l).get("compact_revision").is_some();
    let has_events = |l: &Value| result(l).get("events").is_some();
    let (el, wl) = (lines_mut(e)?, lines_mut(w)?);
    if el.iter().any(has_events) || wl.iter().any(is_notice) {
        return Err(format!(
            "expected the compaction notice and no events from etcd, events and no notice from the mirror: etcd {el:?} mirror {wl:?}"
        ));
    }
    if !el.iter().any(is_notice) && !wl.iter().any(has_events) {
        return Err(format!("neither the compaction notice nor events: etcd {el:?} mirror {wl:?}"));
    }
    el.retain(|l| !is_notice(l));
    wl.retain(|l| !has_events(l));
    Ok(true)
}
