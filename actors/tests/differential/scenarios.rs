//! The differential scenarios: KV, txn, leases, watches, compaction and status steps, each run
//! against both servers in the same order.

use serde_json::{json, Value};

use super::{create, line_rev, Diff, QUIET};
use crate::differences::result;
use crate::wire::{self, b64, int};

pub(crate) fn kv(d: &mut Diff) {
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
    // Over gRPC's receive limit (max-request-bytes + 512 KiB): grpc-go's ResourceExhausted,
    // which etcd's gateway passes on as 429.
    let huge = "x".repeat(2_200_000);
    d.unary("range over the receive limit", "/v3/kv/range", json!({"key": b64(&huge)}));
    d.unary("put over the receive limit", "/v3/kv/put", json!({"key": b64("k"), "value": b64(&huge)}));
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

pub(crate) fn txn(d: &mut Diff) {
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

pub(crate) fn leases(d: &mut Diff) {
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
    d.time_to_live(
        "lease timetolive with keys",
        "/v3/lease/timetolive",
        json!({"ID": L1, "keys": true}),
        &["lease-keys-order"],
        5,
    );
    d.time_to_live("lease timetolive without keys (kv path)", "/v3/kv/lease/timetolive", json!({"ID": L2}), &[], 5);
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

pub(crate) fn watches(d: &mut Diff) {
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
    // `null` and `{}` are the empty request, which etcd's watch ignores; the stream goes on.
    d.send(&mut s, Value::Null);
    d.send(&mut s, json!({}));
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

pub(crate) fn compaction(d: &mut Diff) {
    let r1 = d.put("k/1", "a");
    let r2 = d.put("k/1", "b");
    let r3 = d.put("k/1", "c");
    d.unary("compact in the future", "/v3/kv/compaction", json!({"revision": (r3 + 100).to_string()}));
    d.unary("compact at r2", "/v3/kv/compaction", json!({"revision": r2.to_string()}));
    d.unary("compact at r2 again", "/v3/kv/compaction", json!({"revision": r2}));
    d.unary("compact below r2", "/v3/kv/compaction", json!({"revision": r1}));
    let mirror_history = &["mirror-keeps-compacted-history"];
    d.unary_tagged(
        "range below the compaction",
        "/v3/kv/range",
        json!({"key": b64("k/1"), "revision": r1}),
        mirror_history,
    );
    d.unary("range at the compaction", "/v3/kv/range", json!({"key": b64("k/1"), "revision": r2}));
    d.unary("range after the compaction", "/v3/kv/range", json!({"key": b64("k/1"), "revision": r3}));
    d.unary_tagged(
        "txn range below the compaction",
        "/v3/kv/txn",
        json!({"success": [{"request_range": {"key": b64("k/1"), "revision": r1}}]}),
        mirror_history,
    );

    // A watch from below the compaction gets the compacted notice.
    let mut s = d.open("compacted");
    d.send(&mut s, create("k/1", json!({"start_revision": r1})));
    let got = d.expect_tagged(&mut s, "created and the compacted notice", 2, mirror_history);
    assert!(got.len() == 2 && line_rev(&got[1]) == 0, "compacted notice has no header revision: {got:?}");
    d.quiet(&mut s, "nothing after the notice");
    d.put("k/1", "d");
    d.quiet_tagged(&mut s, "a compacted watcher gets no events", mirror_history);
    // Its id is still on the stream: the client's cancel is answered, as etcd answers it.
    d.send(&mut s, json!({"cancel_request": {"watch_id": 0}}));
    let e = s.etcd.take_until(wire::DEADLINE, |l| !l.is_empty());
    let w = s.watchkv.take_until(wire::DEADLINE, |l| !l.is_empty());
    d.compare("compacted: cancel after the notice", &[], json!({"lines": e}), json!({"lines": w}));
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

pub(crate) fn status(d: &mut Diff) {
    d.unary_tagged("maintenance status", "/v3/maintenance/status", json!({}), &["status-server-fields"]);
}
