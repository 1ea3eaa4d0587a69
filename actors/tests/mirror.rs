//! Mirror mode against a real etcd 3.4.23 (`watchkv --upstream URL`): a mirror started over an
//! empty data directory bootstraps at upstream's revision, then follows upstream's writes (puts,
//! deletes, a leased key, txns of several puts, a delete of several keys) with upstream's
//! revision numbers: a watcher on the mirror gets exactly etcd's own history, revision by
//! revision, in order and once; a range on the mirror equals etcd's at the same revision; a
//! client write on the mirror's gateway goes to etcd; a mirror killed with SIGKILL and restarted while etcd
//! went on (large values included, so upstream's catch-up response comes in fragments) catches
//! up from its own applied revision with no gap and no duplicate; a mirror whose resume point
//! upstream has compacted (restarted, or cut off while running) reads upstream's keyspace again
//! and answers the watchers whose history fell into the gap with etcd's compaction notice; a mirror reports its upstream connection,
//! applied revision and lag in `/metrics`, `Status` and `/health`, and itself in `MemberList`;
//! a mirror's history is compacted by its own auto-compaction policy only, so it keeps serving
//! revisions upstream has compacted, and its own compactions never reach upstream; a prefix
//! mirror holds only its prefix and still reads linearizably and answers forwarded writes once
//! it holds them; a mirror behind a burst of upstream writes applies them in shared group
//! commits.

mod exit;
mod wire;

use std::time::Instant;

use serde_json::{json, Value};
use wire::proxy::TcpProxy;
use wire::{b64, bytes_field, int, post, start_etcd, start_watchkv, wait_for, WatchStream, DEADLINE};

/// One event as both servers' gateways give it:
/// `(revision, kind, key, value, create_revision, version, lease)`.
type Ev = (i64, String, Vec<u8>, Vec<u8>, i64, i64, i64);

/// `(key, value, create_revision, mod_revision, version, lease)`.
type Row = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

fn ok(port: u16, path: &str, body: &Value) -> Value {
    let reply = post(port, path, body);
    assert_eq!(reply.status, 200, "{path} on port {port}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

fn header_revision(v: &Value) -> i64 {
    int(&v["header"], "revision")
}

fn put(port: u16, key: &str, value: &str) -> i64 {
    header_revision(&ok(port, "/v3/kv/put", &json!({"key": b64(key), "value": b64(value)})))
}

fn put_leased(port: u16, key: &str, value: &str, lease: i64) -> i64 {
    let body = json!({"key": b64(key), "value": b64(value), "lease": lease.to_string()});
    header_revision(&ok(port, "/v3/kv/put", &body))
}

fn delete(port: u16, key: &str) -> i64 {
    header_revision(&ok(port, "/v3/kv/deleterange", &json!({"key": b64(key)})))
}

fn delete_prefix(port: u16, prefix: &str) -> i64 {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    header_revision(&ok(port, "/v3/kv/deleterange", &json!({"key": b64(prefix), "range_end": b64(end)})))
}

/// One txn of several puts: one revision.
fn txn_puts(port: u16, puts: &[(&str, &str)]) -> i64 {
    let ops: Vec<Value> = puts.iter().map(|(k, v)| json!({"request_put": {"key": b64(k), "value": b64(v)}})).collect();
    let resp = ok(port, "/v3/kv/txn", &json!({"success": ops}));
    assert_eq!(resp["succeeded"], json!(true), "{resp}");
    header_revision(&resp)
}

/// Every key at `revision` and the header revision.
fn rows_at(port: u16, revision: i64) -> (Vec<Row>, i64) {
    let resp =
        ok(port, "/v3/kv/range", &json!({"key": b64("\0"), "range_end": b64("\0"), "revision": revision.to_string()}));
    let rows = resp["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    let n = |f| int(kv, f);
                    (
                        bytes_field(kv, "key"),
                        bytes_field(kv, "value"),
                        n("create_revision"),
                        n("mod_revision"),
                        n("version"),
                        n("lease"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (rows, header_revision(&resp))
}

/// A whole-keyspace watch on `port` from `start`, after its `created` response.
fn watch_from(port: u16, start: i64) -> WatchStream {
    // etcd 3.4's gateway streams both ways only with `Expect: 100-continue`.
    let mut s = WatchStream::open(port, true).expect("open watch stream");
    s.send(&json!({"create_request": {"key": b64("\0"), "range_end": b64("\0"), "start_revision": start.to_string()}}));
    let created = s.recv(DEADLINE).expect("created response");
    assert_eq!(created["result"]["created"], json!(true), "watch from {start} on {port} not created: {created}");
    s
}

/// Events from `s` until one at revision `until` has arrived (and the rest of its response).
fn events_until(s: &mut WatchStream, until: i64) -> Vec<Ev> {
    let start = Instant::now();
    let mut out: Vec<Ev> = Vec::new();
    while out.last().map_or(0, |e| e.0) < until {
        let left = (DEADLINE * 2).saturating_sub(start.elapsed());
        let line = s.recv(left).unwrap_or_else(|| panic!("no event up to {until} in time; got {out:?}"));
        let r = &line["result"];
        assert!(r["canceled"] != json!(true) && r.get("compact_revision").is_none(), "watch ended: {line}");
        for e in r["events"].as_array().into_iter().flatten() {
            let kv = &e["kv"];
            out.push((
                int(kv, "mod_revision"),
                e["type"].as_str().unwrap_or("PUT").to_owned(),
                bytes_field(kv, "key"),
                bytes_field(kv, "value"),
                int(kv, "create_revision"),
                int(kv, "version"),
                int(kv, "lease"),
            ));
        }
    }
    out
}

/// etcd's own history from `from` to `to`, read back with a watch on etcd.
fn etcd_history(etcd: u16, from: i64, to: i64) -> Vec<Ev> {
    let mut s = watch_from(etcd, from);
    let history = events_until(&mut s, to);
    s.close();
    history
}

#[test]
fn a_mirror_follows_etcd_with_its_revisions_and_resumes_after_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let e = etcd.port;

    // History before the mirror exists: overwrites, a delete, a leased key, a txn.
    put(e, "a", "a1");
    put(e, "b", "b1");
    put(e, "a", "a2");
    delete(e, "b");
    let lease = int(&ok(e, "/v3/lease/grant", &json!({"TTL": "600"})), "ID");
    put_leased(e, "leased", "x", lease);
    let bootstrap_rev = txn_puts(e, &[("t/1", "one"), ("t/2", "two")]);

    let mirror_dir = dir.path().join("mirror");
    let upstream = format!("http://127.0.0.1:{e}");
    let port = wire::free_port();
    let mut mirror = start_watchkv(&mirror_dir, port, &["--upstream", &upstream]);

    // Bootstrapped at etcd's revision: the same key-values, the same header revision.
    let (at_bootstrap, rev) = rows_at(port, bootstrap_rev);
    assert_eq!(rev, bootstrap_rev, "the mirror starts at upstream's revision");
    assert_eq!(at_bootstrap, rows_at(e, bootstrap_rev).0);
    assert!(at_bootstrap.iter().any(|r| r.0 == b"leased" && r.5 == lease), "upstream's lease id: {at_bootstrap:?}");

    // Upstream goes on; the mirror's watcher sees every revision as etcd numbers it.
    let mut on_mirror = watch_from(port, bootstrap_rev + 1);
    put(e, "a", "a3");
    txn_puts(e, &[("x/1", "1"), ("x/2", "2"), ("x/3", "3")]);
    delete(e, "a");
    put_leased(e, "leased", "y", lease);
    put(e, "a", "again");
    let mid = delete_prefix(e, "t/");
    let followed = put(e, "c", "c1");
    let seen = events_until(&mut on_mirror, followed);
    let want = etcd_history(e, bootstrap_rev + 1, followed);
    assert_eq!(seen, want, "the mirror's watcher gets etcd's history exactly");
    assert_eq!(want.len(), 10, "{want:?}");
    assert_eq!(want.iter().filter(|ev| ev.0 == mid).count(), 2, "one delete of two keys is one revision");

    // Reads on the mirror are etcd's, at the latest and at a past revision.
    assert_eq!(rows_at(port, followed), rows_at(e, followed));
    assert_eq!(rows_at(port, mid - 1).0, rows_at(e, mid - 1).0);

    // A client write on the mirror's gateway goes to etcd, answered with etcd's revision once
    // the mirror holds it.
    let forwarded = put(port, "a", "through-the-mirror");
    assert_eq!(forwarded, followed + 1, "etcd's next revision");
    let read_only_txn = ok(port, "/v3/kv/txn", &json!({"success": [{"request_range": {"key": b64("a")}}]}));
    assert_eq!(header_revision(&read_only_txn), forwarded, "a read-only txn is a read: {read_only_txn}");
    assert_eq!(rows_at(port, forwarded), rows_at(e, forwarded));

    // SIGKILL the mirror; upstream goes on without it; the restarted mirror catches up.
    on_mirror.close();
    mirror.kill9();
    put(e, "c", "c2");
    // Three revisions of about 700 KiB each: the restarted mirror's catch-up response from etcd
    // is over etcd's 1.5 MiB request limit, so it comes in fragments.
    let big = "v".repeat(700 << 10);
    for key in ["big/1", "big/2", "big/3"] {
        put(e, key, &big);
    }
    txn_puts(e, &[("y/1", "1"), ("y/2", "2")]);
    delete(e, "x/2");
    let after_restart = put(e, "d", "d1");
    let mut mirror = start_watchkv(&mirror_dir, port, &["--upstream", &upstream]);
    let mut resumed = watch_from(port, followed + 1);
    let seen = events_until(&mut resumed, after_restart);
    assert_eq!(seen, etcd_history(e, followed + 1, after_restart), "no gap, no duplicate after the restart");
    assert_eq!(rows_at(port, after_restart), rows_at(e, after_restart));

    // And it keeps following.
    let last = put(e, "e", "e1");
    assert_eq!(events_until(&mut resumed, last), etcd_history(e, last, last));
    resumed.close();
    assert!(mirror.exited().is_none(), "the mirror is still running");
}

#[test]
fn a_mirror_restarted_past_upstreams_compaction_bootstraps_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let e = etcd.port;
    put(e, "k", "v1");
    put(e, "gone", "g");
    let mirror_dir = dir.path().join("mirror");
    let upstream = format!("http://127.0.0.1:{e}");
    let port = wire::free_port();
    let mut mirror = start_watchkv(&mirror_dir, port, &["--upstream", &upstream]);
    let applied = rows_at(port, 0).1;
    mirror.kill9();

    // While the mirror is down, upstream writes and compacts past the mirror's resume point.
    put(e, "k", "v2");
    delete(e, "gone");
    let compacted = put(e, "new", "n");
    ok(e, "/v3/kv/compaction", &json!({"revision": compacted.to_string(), "physical": true}));
    assert!(compacted > applied + 1);

    // The restarted mirror reads upstream's keyspace again: etcd's state, compacted below it.
    let _mirror = start_watchkv(&mirror_dir, port, &["--upstream", &upstream]);
    let (rows, rev) = wait_for("the re-bootstrap", || Some(rows_at(port, 0)).filter(|(_, rev)| *rev >= compacted));
    assert_eq!((rows, rev), rows_at(e, compacted));
    let err = post(port, "/v3/kv/range", &json!({"key": b64("k"), "revision": (compacted - 1).to_string()}));
    let text = String::from_utf8_lossy(&err.body);
    assert!(err.status != 200 && text.contains("required revision has been compacted"), "{text}");
    // And it follows from there.
    let next = put(e, "k", "v3");
    let mut resumed = watch_from(port, compacted + 1);
    assert_eq!(events_until(&mut resumed, next), etcd_history(e, next, next));
}

#[test]
fn a_running_mirror_cut_off_past_upstreams_compaction_bootstraps_again_and_tells_its_watchers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let e = etcd.port;
    put(e, "k", "v1");
    put(e, "gone", "g");
    let proxy = TcpProxy::start(e);
    let upstream = format!("http://127.0.0.1:{}", proxy.port);
    let port = wire::free_port();
    let mut mirror = start_watchkv(&dir.path().join("mirror"), port, &["--upstream", &upstream]);
    let applied = rows_at(port, 0).1;

    // One watcher at the mirror's next revision, one waiting for a revision past what upstream
    // is about to compact.
    let mut live = watch_from(port, applied + 1);
    let waiting_for = applied + 5;
    let mut waiting = watch_from(port, waiting_for);

    // The mirror loses upstream; upstream writes and compacts the revisions it missed.
    proxy.cut();
    put(e, "k", "v2");
    delete(e, "gone");
    put(e, "new", "n");
    let compacted = put(e, "k", "v3");
    assert_eq!(compacted, waiting_for - 1);
    ok(e, "/v3/kv/compaction", &json!({"revision": compacted.to_string(), "physical": true}));
    proxy.restore();

    // The live watcher's history fell into the gap: etcd's compaction notice, never a skip.
    let notice = live.recv(DEADLINE * 3).expect("a compaction notice");
    assert_eq!(notice["result"]["compact_revision"], json!(compacted.to_string()), "{notice}");
    assert_eq!(notice["result"]["canceled"], json!(true), "{notice}");
    assert!(notice["result"].get("events").is_none(), "{notice}");
    // The mirror now holds etcd's state at the compacted revision.
    let (rows, rev) = wait_for("the re-bootstrap", || Some(rows_at(port, 0)).filter(|(_, rev)| *rev >= compacted));
    assert_eq!((rows, rev), rows_at(e, compacted));
    assert_eq!(metric(port, "watchkv_mirror_applied_revision"), Some(compacted as f64));

    // The watcher waiting above the gap goes on, and so does a watcher resuming from the
    // compact revision as etcd's clients do after the notice.
    let mut resumed = watch_from(port, compacted + 1);
    let next = put(e, "k", "v4");
    let want = etcd_history(e, next, next);
    assert_eq!(events_until(&mut waiting, next), want);
    assert_eq!(events_until(&mut resumed, next), want);
    assert!(mirror.exited().is_none(), "the mirror is still running");
}

#[test]
fn a_mirrors_history_and_upstreams_are_compacted_each_by_its_own_policy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let e = etcd.port;
    let first = put(e, "k", "v0");
    let upstream = format!("http://127.0.0.1:{e}");
    let (keeps, compacts) = (wire::free_port(), wire::free_port());
    let _keeps = start_watchkv(&dir.path().join("keeps"), keeps, &["--upstream", &upstream]);
    let auto = ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"];
    let _compacts =
        start_watchkv(&dir.path().join("compacts"), compacts, &[&["--upstream", &upstream][..], &auto].concat());
    let mut history = watch_from(keeps, first + 1);
    let mut last = first;
    for i in 1..=5 {
        last = put(e, "k", &format!("v{i}"));
    }
    let want = etcd_history(e, first + 1, last);
    assert_eq!(events_until(&mut history, last), want);
    history.close();
    let read_at =
        |port: u16, rev: i64| post(port, "/v3/kv/range", &json!({"key": b64("k"), "revision": rev.to_string()}));
    let compacted = |reply: &wire::Reply| {
        reply.status != 200 && String::from_utf8_lossy(&reply.body).contains("required revision has been compacted")
    };

    // The mirror's own auto-compaction compacts its history, and only its own: upstream keeps
    // every revision, and the mirror goes on following.
    wait_for("the mirror's periodic compaction", || {
        put(e, "tick", "t");
        Some(()).filter(|()| compacted(&read_at(compacts, first + 1)))
    });
    assert_eq!(read_at(e, first + 1).status, 200, "upstream is not compacted by a mirror");
    let next = put(e, "k", "after-local-compaction");
    wait_for("the compacting mirror follows", || Some(()).filter(|()| rows_at(compacts, 0).1 >= next));

    // Upstream compacts; the mirror that keeps its history still serves the revisions
    // upstream no longer has, reads and watches alike.
    ok(e, "/v3/kv/compaction", &json!({"revision": next.to_string(), "physical": true}));
    assert!(compacted(&read_at(e, first + 1)), "upstream compacted");
    wait_for("the keeping mirror follows", || Some(()).filter(|()| rows_at(keeps, 0).1 >= next));
    let old = read_at(keeps, first + 1).json();
    assert_eq!(old["kvs"][0]["value"], json!(b64("v1")), "{old}");
    let after = put(e, "k", "after-upstream-compaction");
    let mut replay = watch_from(keeps, first + 1);
    let replayed = events_until(&mut replay, after);
    let (old, new): (Vec<Ev>, Vec<Ev>) = replayed.into_iter().partition(|ev| ev.0 <= last);
    assert_eq!(old, want, "history upstream compacted, replayed by the mirror");
    assert_eq!(new.last().map(|ev| ev.0), Some(after), "the mirror follows past upstream's compaction: {new:?}");
    assert!(new.windows(2).all(|w| w[0].0 < w[1].0) && new[0].0 > last, "in order, once: {new:?}");
}

#[test]
fn a_prefix_mirror_holds_only_its_prefix_and_reads_linearizably() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let e = etcd.port;
    put(e, "p/a", "a0");
    put(e, "q/x", "outside");
    let bootstrap_rev = put(e, "p/b", "b0");
    let upstream = format!("http://127.0.0.1:{e}");
    let port = wire::free_port();
    let mut mirror =
        start_watchkv(&dir.path().join("mirror"), port, &["--upstream", &upstream, "--upstream-prefix", "p/"]);
    let under_prefix = |rows: Vec<Row>| rows.into_iter().filter(|r| r.0.starts_with(b"p/")).collect::<Vec<_>>();
    assert_eq!(rows_at(port, 0).0, under_prefix(rows_at(e, bootstrap_rev).0), "only the prefix is imported");
    let mut on_mirror = watch_from(port, bootstrap_rev + 1);

    // A write made on etcd directly, then a linearizable read on the mirror at once: the read
    // waits for the write's revision even when upstream's latest revisions are outside the
    // prefix.
    let mut last = bootstrap_rev;
    for i in 0..20 {
        put(e, "q/x", &format!("outside-{i}"));
        put(e, "p/a", &format!("a{}", i + 1));
        last = put(e, "q/y", &format!("after-{i}"));
        let read = ok(port, "/v3/kv/range", &json!({"key": b64("p/a")}));
        assert_eq!(read["kvs"][0]["value"], json!(b64(format!("a{}", i + 1))), "round {i}: {read}");
    }
    // Forwarded writes: outside the prefix answered (the mirror sees their revision pass), inside
    // the prefix read back through the mirror at once.
    let outside = put(port, "q/z", "through-the-mirror");
    assert_eq!(outside, last + 1);
    let inside = put(port, "p/c", "through-the-mirror");
    let read = ok(port, "/v3/kv/range", &json!({"key": b64("p/c")}));
    assert_eq!(int(&read["kvs"][0], "mod_revision"), inside, "read-your-writes: {read}");

    // The mirror's watcher got exactly etcd's events under the prefix.
    let seen = events_until(&mut on_mirror, inside);
    let want: Vec<Ev> =
        etcd_history(e, bootstrap_rev + 1, inside).into_iter().filter(|ev| ev.2.starts_with(b"p/")).collect();
    assert_eq!(seen, want);
    assert_eq!(want.len(), 21, "{want:?}");

    // Restarted over its directory with another prefix, it refuses to start rather than follow
    // upstream's revisions on top of "p/"'s keys; with its own prefix it resumes.
    mirror.kill9();
    let mut other =
        wire::spawn_watchkv(&dir.path().join("mirror"), port, &["--upstream", &upstream, "--upstream-prefix", "q/"]);
    let exited = wait_for("the mirror started with another prefix to exit", || other.exited());
    let log = std::fs::read_to_string(&other.log).expect("log");
    let refusal = r#"mirrors upstream's prefix "p/", not upstream's prefix "q/""#;
    assert!(!exited.starts_with("exit status: 0") && log.contains(refusal), "{exited}\n{log}");
    let _resumed =
        start_watchkv(&dir.path().join("mirror"), port, &["--upstream", &upstream, "--upstream-prefix", "p/"]);
    let read = ok(port, "/v3/kv/range", &json!({"key": b64("p/c"), "serializable": true}));
    assert_eq!(int(&read["kvs"][0], "mod_revision"), inside, "{read}");
}

/// The runtime's side without etcd: upstream revisions applied through the store's group
/// commit reach a local watcher with upstream's numbers and `prev_kv`, as a local write's
/// events do; client writes on a mirror are refused and reads are served.
#[actix_rt::test]
async fn upstream_revisions_reach_local_watchers_and_client_writes_are_refused() {
    use futures::StreamExt;
    use watchkv::{
        Error, KeyRange, KeyValue, PutRequest, RangeRequest, RequestOp, TxnRequest, UpstreamChange, UpstreamRevision,
    };
    use watchkv_actors::{start, ActorsConfig, WatchCreate};

    let kv = |key: &str, value: &str, create: i64, modified: i64, version: i64| KeyValue {
        key: key.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        value: value.into(),
        lease: 0,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let handle = start(ActorsConfig::new(dir.path()).with_mirror(true)).await.expect("start");
    let mut create = WatchCreate::new(&KeyRange::all(), 0);
    create.prev_kv = true;
    let mut watch = handle.watch(create);
    let created = watch.next().await.expect("created");
    assert!(created.created, "{created:?}");

    let applied = handle
        .apply_upstream(vec![
            UpstreamRevision { after: 1, revision: 5, changes: vec![UpstreamChange::Put(kv("a", "a1", 5, 5, 1))] },
            UpstreamRevision {
                after: 5,
                revision: 9,
                changes: vec![UpstreamChange::Put(kv("b", "b1", 9, 9, 1)), UpstreamChange::Delete(b"a".to_vec())],
            },
        ])
        .await
        .expect("apply");
    assert_eq!((applied, handle.current_revision()), (9, 9));
    let mut seen = Vec::new();
    while seen.last().is_none_or(|(rev, _, _, _)| *rev < 9) {
        let response = tokio::time::timeout(wire::DEADLINE, watch.next()).await.expect("in time").expect("response");
        for e in response.events.iter() {
            seen.push((e.kv.mod_revision, e.kind, e.kv.key.clone(), e.prev_kv.as_ref().map(|p| p.value.clone())));
        }
    }
    use watchkv::EventKind::{Delete, Put};
    assert_eq!(
        seen,
        vec![
            (5, Put, b"a".to_vec(), None),
            (9, Put, b"b".to_vec(), None),
            (9, Delete, b"a".to_vec(), Some(b"a1".to_vec())),
        ]
    );

    // An upstream revision already applied is refused, not applied twice.
    let again = UpstreamRevision { after: 5, revision: 9, changes: vec![UpstreamChange::Put(kv("c", "c", 9, 9, 1))] };
    assert!(matches!(handle.apply_upstream(vec![again]).await, Err(Error::Upstream(_))));

    assert!(matches!(handle.put(PutRequest::new("c", "local")).await, Err(Error::MirrorWrite)));
    assert!(matches!(handle.lease_grant(0, 60).await, Err(Error::MirrorWrite)));
    let nested_put = TxnRequest {
        success: vec![RequestOp::Txn(TxnRequest {
            success: vec![RequestOp::Put(PutRequest::new("c", "local"))],
            ..TxnRequest::default()
        })],
        ..TxnRequest::default()
    };
    assert!(matches!(handle.txn(nested_put).await, Err(Error::MirrorWrite)));
    let read =
        TxnRequest { success: vec![RequestOp::Range(RangeRequest::new(KeyRange::all()))], ..TxnRequest::default() };
    assert_eq!(handle.txn(read).await.expect("a read-only txn").revision, 9);
    let all = handle.range(RangeRequest::new(KeyRange::all())).await.expect("range");
    assert_eq!(all.kvs, vec![kv("b", "b1", 9, 9, 1)]);
    assert_eq!(handle.current_revision(), 9, "nothing refused changed the store");
}

/// Upstream writes faster than a revision per `fdatasync`: a mirror applies the responses it
/// has already received together, so it commits fewer groups than it applies revisions, and its
/// watcher still gets etcd's history exactly.
#[test]
fn a_mirror_behind_a_burst_of_upstream_writes_shares_group_commits_and_misses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let e = etcd.port;
    let start = put(e, "before", "0");
    let port = wire::free_port();
    let upstream = format!("http://127.0.0.1:{e}");
    let _mirror = start_watchkv(&dir.path().join("mirror"), port, &["--upstream", &upstream]);
    wait_for("the mirror at upstream's revision", || (rows_at(port, start).1 >= start).then_some(()));
    let mut on_mirror = watch_from(port, start + 1);
    let batches_before = metric(port, "watchkv_write_batches_total").expect("write_batches");

    // 16 clients, 40 puts each, all at once: etcd commits them in groups and sends the mirror
    // one response per revision.
    let writers: Vec<_> = (0..16)
        .map(|w| std::thread::spawn(move || (0..40).map(|i| put(e, &format!("burst/{w}/{i}"), "v")).max()))
        .collect();
    let last = writers.into_iter().filter_map(|w| w.join().expect("writer")).max().expect("puts");
    assert_eq!(last, start + 640, "one revision per put");

    let seen = events_until(&mut on_mirror, last);
    assert_eq!(seen, etcd_history(e, start + 1, last), "every revision once, in order");
    let batches = metric(port, "watchkv_write_batches_total").expect("write_batches") - batches_before;
    // Applied alone, each response is a commit: 640. Sixteen writers' puts reach the mirror in
    // bursts, so it gathers several revisions per commit (about 110 commits here).
    assert!(batches <= 320.0, "640 upstream revisions in {batches} group commits: fewer than two per commit");
}

/// The value of the untyped metric `name` in `/metrics`' text, if it is there.
fn metric(port: u16, name: &str) -> Option<f64> {
    let (code, body) = wire::http_get(port, "/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `Maintenance.Status` and `Cluster.MemberList` on the mirror over gRPC.
fn grpc_status_and_members(port: u16) -> (Vec<String>, Vec<String>) {
    use watchkv_actors::api::pb::etcdserverpb::cluster_client::ClusterClient;
    use watchkv_actors::api::pb::etcdserverpb::maintenance_client::MaintenanceClient;
    use watchkv_actors::api::pb::etcdserverpb::{MemberListRequest, StatusRequest};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let status =
            MaintenanceClient::new(channel.clone()).status(StatusRequest {}).await.expect("Status").into_inner();
        let members = ClusterClient::new(channel)
            .member_list(MemberListRequest::default())
            .await
            .expect("MemberList")
            .into_inner();
        assert_eq!(members.members.len(), 1, "{members:?}");
        (status.errors, members.members[0].client_ur_ls.clone())
    })
}

/// A mirror shows its upstream in `/metrics` (connected, applied and upstream revisions, lag),
/// lists its own client URL in `MemberList`, and once upstream is gone says so in
/// `Status.errors` at once and in `/health` after the threshold.
#[test]
fn a_mirror_reports_its_upstream_in_metrics_status_health_and_member_list() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut etcd = start_etcd(&dir.path().join("etcd"));
    let e = etcd.port;
    put(e, "a", "1");
    let upstream = format!("http://127.0.0.1:{e}");
    let port = wire::free_port();
    let _mirror = start_watchkv(&dir.path().join("mirror"), port, &["--upstream", &upstream]);

    put(e, "a", "2");
    let last = txn_puts(e, &[("b", "1"), ("c", "1")]);
    wait_for("the mirror's metrics at etcd's revision", || {
        let at = |name| metric(port, name).map(|v| v as i64);
        let seen = (
            at("watchkv_mirror_upstream_connected"),
            at("watchkv_mirror_applied_revision"),
            at("watchkv_mirror_upstream_revision"),
            at("watchkv_mirror_lag_revisions"),
            metric(port, "watchkv_mirror_lag_seconds"),
        );
        (seen == (Some(1), Some(last), Some(last), Some(0), Some(0.0))).then_some(())
    });
    let (code, body) = wire::http_get(port, "/health");
    assert_eq!((code, body.contains("\"health\":\"true\"")), (200, true), "{body}");
    let (errors, client_urls) = grpc_status_and_members(port);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(client_urls, vec![format!("http://127.0.0.1:{port}")], "MemberList names the mirror, not etcd");

    etcd.kill9();
    wait_for("upstream_connected 0", || (metric(port, "watchkv_mirror_upstream_connected") == Some(0.0)).then_some(()));
    let (errors, client_urls) = grpc_status_and_members(port);
    assert!(errors.iter().any(|e| e.contains(&upstream) && e.contains("lost")), "Status.errors names it: {errors:?}");
    assert_eq!(client_urls, vec![format!("http://127.0.0.1:{port}")]);
    let gateway_status = ok(port, "/v3/maintenance/status", &json!({}));
    assert!(gateway_status["errors"].to_string().contains(&upstream), "{gateway_status}");
    let body = wait_for("/health false", || {
        let (code, body) = wire::http_get(port, "/health");
        (code == 503).then_some(body)
    });
    assert!(body.contains("\"health\":\"false\"") && body.contains(&upstream), "the reason names upstream: {body}");
    assert_eq!(metric(port, "watchkv_mirror_applied_revision"), Some(last as f64), "still serving what it has");
}

/// A data directory copied from one etcd cluster (`watchkv import`) is not followed on another:
/// the mirror stops at that upstream's first response, naming both clusters, rather than apply
/// its revisions on top of the first cluster's keys; over the cluster it came from, it resumes.
#[test]
fn a_mirror_follows_only_the_cluster_its_data_came_from() {
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = start_etcd(&dir.path().join("origin"));
    let other = start_etcd(&dir.path().join("other"));
    let imported = put(origin.port, "k", "from-origin");
    put(other.port, "k", "from-other");
    let data = dir.path().join("mirror");
    let url = |p: &wire::Proc| format!("http://127.0.0.1:{}", p.port);
    let import = exit::run_to_exit(
        std::process::Command::new(env!("CARGO_BIN_EXE_watchkv"))
            .args(["import", "--from", &url(&origin), "--data-dir"])
            .arg(&data),
        DEADLINE,
    );
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));

    let port = wire::free_port();
    let mut wrong = wire::spawn_watchkv(&data, port, &["--upstream", &url(&other)]);
    let exited = wait_for("the mirror of another cluster to stop", || wrong.exited());
    let log = std::fs::read_to_string(&wrong.log).expect("log");
    assert!(
        !exited.starts_with("exit status: 0") && log.contains("that the data directory was copied from"),
        "{exited}\n{log}"
    );
    drop(wrong);

    let _mirror = start_watchkv(&data, port, &["--upstream", &url(&origin)]);
    assert_eq!(rows_at(port, imported).0, rows_at(origin.port, imported).0);
    let later = put(origin.port, "k", "later");
    wait_for("the mirror at origin's later revision", || (rows_at(port, 0).1 >= later).then_some(()));
    assert_eq!(rows_at(port, later).0, rows_at(origin.port, later).0);
}
