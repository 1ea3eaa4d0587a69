//! The HTTP/JSON gateway end to end over real sockets (docs/etcd-semantics.md §7.1, §7.3, §8,
//! §12; cases H6–H9, X21, X22): unary routes through `awc` here, `/v3/watch` in [`watch`]
//! through a raw HTTP/1.1 client that keeps its chunked request body open while it reads the
//! response, so full duplex is exercised with and without `Expect: 100-continue`. Bad input must
//! get etcd's error shapes and never harm the server or other clients' streams.

mod gateway_common;
#[path = "gateway/watch.rs"]
mod watch;

use std::time::Duration;

use gateway_common::{b64, int, rev, unb64, wait_until, Gw, Opts};
use serde_json::{json, Value};

/// A window in which something must *not* happen (never used to wait for something expected).
const QUIET: Duration = Duration::from_millis(300);

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
    k.sort();
    k
}

fn status_body(code: i64, message: &str) -> Value {
    json!({"code": code, "message": message})
}

/// The values of a response's events, as (key, value, type) strings.
fn events(r: &Value) -> Vec<(String, String, String)> {
    r["events"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .map(|e| {
                    let kv = &e["kv"];
                    (
                        unb64(kv["key"].as_str().unwrap_or("")),
                        kv["value"].as_str().map(unb64).unwrap_or_default(),
                        e["type"].as_str().unwrap_or("PUT").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ev(k: &str, v: &str) -> (String, String, String) {
    (k.to_string(), v.to_string(), "PUT".to_string())
}

// ----- unary routes: H7, H8, H9 -----

#[actix_rt::test]
async fn h7_put_range_deleterange() {
    let gw = Gw::start().await;
    let (status, body) = gw.post_raw("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""revision":""#), "int64 as a string: {text}");
    let put: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(keys(&put), ["header"]);
    assert_eq!(keys(&put["header"]), ["cluster_id", "member_id", "raft_term", "revision"]);
    assert_eq!(rev(&put["header"]), 2);

    let range = gw.ok("/v3/kv/range", &json!({"key": "Zm9v"})).await;
    assert_eq!(range["kvs"][0]["value"], "YmFy");
    assert_eq!(
        range["kvs"][0],
        json!({"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"})
    );
    assert_eq!(range["count"], "1");
    // lowerCamelCase input names and int64 as a number are accepted too.
    let put2 = gw.ok("/v3/kv/put", &json!({"key": "Zm9vMg==", "value": "eA==", "prevKv": true})).await;
    assert_eq!(rev(&put2["header"]), 3);
    let ranged = gw.ok("/v3/kv/range", &json!({"key": "Zm9v", "rangeEnd": "Zm9w", "limit": 1, "revision": "3"})).await;
    assert_eq!(
        (ranged["count"].as_str(), ranged["more"].as_bool(), ranged["kvs"].as_array().map(Vec::len)),
        (Some("2"), Some(true), Some(1))
    );

    let del = gw.ok("/v3/kv/deleterange", &json!({"key": "Zm9v"})).await;
    assert_eq!(del["deleted"], "1");
    let empty = gw.ok("/v3/kv/range", &json!({"key": "Zm9v"})).await;
    assert_eq!(keys(&empty), ["header"], "no kvs, count 0 omitted: {empty}");

    let status = gw.ok("/v3/maintenance/status", &json!({})).await;
    assert_eq!(status["version"], watchkv_actors::api::REPORTED_ETCD_VERSION);
    gw.finish().await;
}

#[actix_rt::test]
async fn h8_txn_and_malformed_txn() {
    let gw = Gw::start().await;
    let txn = gw
        .ok(
            "/v3/kv/txn",
            &json!({
                "compare": [{"key": "Zm9v", "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
                "success": [{"request_put": {"key": "Zm9v", "value": "YmFy"}}]
            }),
        )
        .await;
    assert_eq!(txn["succeeded"], true);
    let responses = txn["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 1);
    assert!(responses[0].get("response_put").is_some(), "{txn}");

    // etcd's malformed txn: unknown fields are dropped, leaving an empty RequestOp.
    let malformed = r#"{"compare":[{"result":0,"target":1,"key":"Zm9v","TargetUnion":null}],"success":[{"Request":{"RequestPut":{"key":"Zm9v","value":"YmFy"}}}]}"#;
    // Every op of both branches is checked before the compare runs (etcd `checkTxnRequest`):
    // the answer does not depend on whether foo exists.
    for body in [malformed.to_string(), malformed.replace("Zm9v", "bmV3")] {
        let (status, json) = gw.post("/v3/kv/txn", body.clone()).await;
        assert_eq!((status, json), (400, status_body(3, "etcdserver: key not found")), "{body}");
    }
    // An empty op, an op with only unknown fields: the same.
    for op in [json!({}), json!({"request_foo": {"key": "Zm9v"}}), json!({"RequestPut": {"key": "Zm9v"}})] {
        let (status, body) = gw.post("/v3/kv/txn", json!({"success": [op]}).to_string()).await;
        assert_eq!((status, body), (400, status_body(3, "etcdserver: key not found")), "op {op}");
    }
    // Nothing was written by the failures and the server is fine.
    let range = gw.ok("/v3/kv/range", &json!({"key": "bmV3"})).await;
    assert!(range.get("kvs").is_none(), "{range}");
    assert_eq!(rev(&range["header"]), 2);
    assert_eq!(gw.get("/health").await.0, 200);
    gw.finish().await;
}

#[actix_rt::test]
async fn h9_compaction_in_the_future() {
    let gw = Gw::start().await;
    let (status, body) = gw.post_raw("/v3/kv/compaction", r#"{"revision":10000}"#).await;
    assert_eq!(status, 400);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""message":"etcdserver: mvcc: required revision is a future revision""#), "{text}");
    let parsed: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(parsed, status_body(11, "etcdserver: mvcc: required revision is a future revision"));
    // A compaction that is allowed, then a read below it.
    gw.put("a", "1").await;
    gw.put("a", "2").await;
    let compacted = gw.ok("/v3/kv/compaction", &json!({"revision": "3", "physical": true})).await;
    assert_eq!(rev(&compacted["header"]), 3);
    let (status, body) = gw.post("/v3/kv/range", json!({"key": b64("a"), "revision": 2}).to_string()).await;
    assert_eq!((status, body), (400, status_body(11, "etcdserver: mvcc: required revision has been compacted")));
    gw.finish().await;
}

// ----- bad unary input -----

#[actix_rt::test]
async fn bad_unary_input_gets_4xx_in_etcds_shape() {
    let gw = Gw::start().await;
    // Malformed JSON.
    for body in [r#"{"key":"#, "{", "[1,2", "nonsense", r#"{"key":"Zm9v","value":"YmFy"}}"#, "\u{0}"] {
        let (status, json) = gw.post("/v3/kv/put", body).await;
        assert_eq!(status, 400, "{body:?}: {json}");
        assert_eq!(keys(&json), ["code", "message"], "{json}");
        assert_eq!(json["code"], 3);
    }
    // Invalid base64.
    for key in ["!!!", "Zm9v*", "a", "Zm9v\u{0}"] {
        let (status, json) = gw.post("/v3/kv/put", json!({"key": key, "value": "YmFy"}).to_string()).await;
        assert_eq!((status, &json["code"]), (400, &json!(3)), "key {key:?}: {json}");
        assert!(json["message"].as_str().is_some_and(|m| m.contains("base64")), "{json}");
    }
    // Wrong types, bad int64, bad enums.
    for (path, body) in [
        ("/v3/kv/put", json!({"key": 5})),
        ("/v3/kv/put", json!({"key": "Zm9v", "lease": "12x"})),
        ("/v3/kv/range", json!({"key": "Zm9v", "sort_order": "SIDEWAYS"})),
        ("/v3/kv/range", json!({"key": "Zm9v", "sort_target": 9})),
        ("/v3/kv/range", json!({"key": "Zm9v", "limit": 1.5})),
        ("/v3/kv/txn", json!({"compare": [{"key": "Zm9v", "target": "NOPE"}]})),
        ("/v3/kv/txn", json!({"success": {"request_put": {}}})),
        ("/v3/kv/txn", json!({"success": [{"request_put": {"key": "Zm9v"}, "request_range": {"key": "Zm9v"}}]})),
        ("/v3/lease/grant", json!({"TTL": "sixty"})),
        ("/v3/kv/compaction", json!({"revision": []})),
    ] {
        let (status, json) = gw.post(path, body.to_string()).await;
        assert_eq!((status, &json["code"]), (400, &json!(3)), "{path} {body}: {json}");
    }
    // Empty key: etcd's own message.
    let (status, json) = gw.post("/v3/kv/put", json!({"value": "YmFy"}).to_string()).await;
    assert_eq!((status, json), (400, status_body(3, "etcdserver: key is not provided")));
    // A body that is only whitespace is the empty message.
    let (status, json) = gw.post("/v3/kv/range", "  \n").await;
    assert_eq!((status, json), (400, status_body(3, "etcdserver: key is not provided")));
    // Unknown route and wrong method.
    let (status, _) = gw.post_raw("/v3/kv/nope", "{}").await;
    assert_eq!(status, 404);
    let (status, _) = gw.get("/v3/kv/range").await;
    assert_eq!(status, 405, "GET on a POST route");
    // A deeply nested body is refused, not a stack overflow.
    let mut nested = String::new();
    for _ in 0..5000 {
        nested.push_str(r#"{"success":[{"request_txn":"#);
    }
    let (status, json) = gw.post("/v3/kv/txn", nested).await;
    assert_eq!((status, &json["code"]), (400, &json!(3)), "{json}");
    let mut deep = json!({"success": [{"request_range": {"key": "Zm9v"}}]});
    for _ in 0..30 {
        deep = json!({"success": [{"request_txn": deep}]});
    }
    // etcd has no depth limit of its own: a read 31 txns deep is answered, nested as asked.
    let (status, json) = gw.post("/v3/kv/txn", deep.to_string()).await;
    assert_eq!(status, 200, "nested txns: {json}");
    let mut answer = &json;
    for depth in 0..30 {
        answer = &answer["responses"][0]["response_txn"];
        assert_eq!(answer["succeeded"], json!(true), "depth {depth}: {json}");
    }
    assert!(answer["responses"][0]["response_range"].is_object(), "{json}");
    assert_eq!(gw.get("/health").await.0, 200);
    gw.finish().await;
}

/// As over gRPC: a write whose protobuf is larger than `max_request_bytes` is refused, any
/// request larger than gRPC's receive limit (`max_request_bytes` plus 512 KiB) too, and a JSON
/// body may be several times its protobuf (base64, names, quoting) without counting against it.
#[actix_rt::test]
async fn bodies_above_max_request_bytes() {
    let gw = Gw::with(Opts { max_request_bytes: Some(1024), ..Opts::default() }).await;
    let too_large = status_body(3, "etcdserver: request is too large");
    // Writes: their protobuf counts.
    let over = "x".repeat(2000);
    let (status, json) = gw.post("/v3/kv/put", json!({"key": b64("k"), "value": b64(&over)}).to_string()).await;
    assert_eq!((status, &json), (400, &too_large));
    let txn = json!({"success": [{"request_put": {"key": b64("k"), "value": b64(&over)}}]});
    let (status, json) = gw.post("/v3/kv/txn", txn.to_string()).await;
    assert_eq!((status, &json), (400, &too_large));
    // A value whose JSON is larger than the limit and whose protobuf is not goes in.
    let value = "y".repeat(900);
    let body = json!({"key": b64("k"), "value": b64(&value)}).to_string();
    assert!(body.len() > 1024, "the JSON body alone would have been refused");
    let (status, json) = gw.post("/v3/kv/put", body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(gw.put("k", &"y".repeat(500)).await, 3);

    // Any request (and any body) beyond gRPC's receive limit.
    let big = "x".repeat(600 * 1024);
    for path in
        ["/v3/kv/put", "/v3/kv/range", "/v3/kv/txn", "/v3/lease/grant", "/v3/lease/leases", "/v3/maintenance/status"]
    {
        let (status, json) = gw.post(path, json!({"key": b64(&big)}).to_string()).await;
        assert_eq!((status, &json), (400, &too_large), "{path}");
    }
    let (status, _) = gw.post_raw("/v3/lease/keepalive", format!(r#"{{"ID":"1","pad":"{big}"}}"#)).await;
    assert_eq!(status, 400);
    // A read a little over `max_request_bytes` is within it, as over gRPC; so is a txn of
    // ranges alone, which etcd serves without a proposal, but not one with a nested txn.
    let (status, json) = gw.post("/v3/kv/range", json!({"key": b64(&over)}).to_string()).await;
    assert_eq!(status, 200, "{json}");
    let compare = json!([{"key": b64("k"), "target": "VALUE", "result": "EQUAL", "value": b64(&over)}]);
    let ranges = json!({"compare": compare, "success": [{"request_range": {"key": b64("k")}}]});
    let (status, json) = gw.post("/v3/kv/txn", ranges.to_string()).await;
    assert_eq!(status, 200, "a txn of ranges: {json}");
    let nested = json!({"compare": compare, "success": [{"request_txn": {}}]});
    let (status, json) = gw.post("/v3/kv/txn", nested.to_string()).await;
    assert_eq!((status, &json), (400, &too_large), "a txn with a nested txn");

    // On the watch stream: a single request over the limit ends the stream with an error; a
    // stream of many small requests is not limited in total.
    let mut w = gw.watch(false).await;
    for i in 0..40 {
        w.send_json(&json!({"create_request": {"key": b64(format!("key-{i:04}")), "start_revision": "0"}})).await;
    }
    for _ in 0..40 {
        let r = w.next_result().await;
        assert_eq!((r["created"].as_bool(), r.get("canceled")), (Some(true), None), "{r}");
    }
    w.send_json(&json!({"create_request": {"key": b64(&big)}})).await;
    let err = w.next_error().await;
    assert_eq!(err, too_large);
    w.expect_end().await;
    // The same request split over several chunks.
    let mut w = gw.watch(false).await;
    let body = json!({"create_request": {"key": b64(&big)}}).to_string();
    for part in body.as_bytes().chunks(64 * 1024) {
        if w.send(part).await.is_err() {
            break;
        }
    }
    assert_eq!(w.next_error().await, too_large);
    w.expect_end().await;
    assert_eq!(gw.get("/health").await.0, 200);
    gw.finish().await;
}

// ----- leases -----

#[actix_rt::test]
async fn lease_grant_keepalive_timetolive_revoke() {
    let gw = Gw::start().await;
    let grant = gw.ok("/v3/lease/grant", &json!({"TTL": 60})).await;
    assert_eq!(keys(&grant), ["ID", "TTL", "header"], "{grant}");
    assert_eq!(grant["TTL"], "60");
    let id = int(&grant["ID"]);
    assert!(id > 0, "{grant}");
    let explicit = gw.ok("/v3/lease/grant", &json!({"ID": "777", "TTL": "30"})).await;
    assert_eq!((int(&explicit["ID"]), int(&explicit["TTL"])), (777, 30));
    let (status, json) = gw.post("/v3/lease/grant", json!({"ID": 777, "TTL": 30}).to_string()).await;
    assert_eq!((status, json), (400, status_body(9, "etcdserver: lease already exists")));

    gw.ok("/v3/kv/put", &json!({"key": b64("leased"), "value": b64("v"), "lease": id.to_string()})).await;

    // keepalive is a stream: one result line per request object.
    let (status, body) =
        gw.post_raw("/v3/lease/keepalive", format!(r#"{{"ID":"{id}"}} {{"ID":{id}}}{{"ID":"424242"}}"#)).await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = String::from_utf8_lossy(&body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines[..2] {
        assert_eq!((int(&l["result"]["ID"]), int(&l["result"]["TTL"])), (id, 60), "{l}");
        assert!(l["result"]["header"].is_object());
    }
    assert_eq!(
        (int(&lines[2]["result"]["ID"]), lines[2]["result"].get("TTL")),
        (424_242, None),
        "unknown lease: TTL 0"
    );
    // A bad object ends it with an error line.
    let (status, body) = gw.post_raw("/v3/lease/keepalive", format!(r#"{{"ID":"{id}"}}{{"ID":"#)).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let last: Value = serde_json::from_str(text.lines().last().expect("lines")).expect("json");
    assert_eq!(last["error"]["code"], 3, "{text}");

    // Over a body that stays open, each request is answered as it arrives (a client keeping
    // one request open renews its lease for as long as it sends).
    for expect_continue in [false, true] {
        let mut k = gateway_common::RawStream::open_chunked(gw.addr, "/v3/lease/keepalive", expect_continue).await;
        for _ in 0..3 {
            k.send(format!(r#"{{"ID":"{id}"}}"#).as_bytes()).await.expect("send");
            let answer = k.next_result().await;
            assert_eq!((int(&answer["ID"]), int(&answer["TTL"])), (id, 60), "{answer}");
        }
        // A bad request after good ones ends the body with its error.
        k.send(br#"{"ID":"#).await.expect("send");
        k.send(br#"[]}"#).await.expect("send");
        assert_eq!(k.next_error().await["code"], 3);
        k.expect_end().await;
    }

    for path in ["/v3/lease/timetolive", "/v3/kv/lease/timetolive"] {
        let ttl = gw.ok(path, &json!({"ID": id.to_string(), "keys": true})).await;
        assert_eq!(int(&ttl["ID"]), id);
        assert!((1..=60).contains(&int(&ttl["TTL"])), "{ttl}");
        assert_eq!(ttl["grantedTTL"], "60");
        assert_eq!(ttl["keys"], json!([b64("leased")]));
    }
    for path in ["/v3/lease/leases", "/v3/kv/lease/leases"] {
        let leases = gw.ok(path, &json!({})).await;
        let ids: Vec<i64> = leases["leases"].as_array().expect("leases").iter().map(|l| int(&l["ID"])).collect();
        assert!(ids.contains(&id) && ids.contains(&777), "{leases}");
    }

    let revoked = gw.ok("/v3/lease/revoke", &json!({"ID": id.to_string()})).await;
    assert_eq!(keys(&revoked), ["header"]);
    let range = gw.ok("/v3/kv/range", &json!({"key": b64("leased")})).await;
    assert!(range.get("kvs").is_none(), "revoking deletes the lease's keys: {range}");
    let (status, json) = gw.post("/v3/lease/revoke", json!({"ID": id.to_string()}).to_string()).await;
    assert_eq!((status, json), (404, status_body(5, "etcdserver: requested lease not found")));
    gw.ok("/v3/kv/lease/revoke", &json!({"ID": "777"})).await;

    let unknown = gw.ok("/v3/lease/timetolive", &json!({"ID": id.to_string()})).await;
    assert_eq!(
        (int(&unknown["ID"]), &unknown["TTL"], unknown.get("grantedTTL")),
        (id, &json!("-1"), None),
        "{unknown}"
    );
    gw.finish().await;
}

// ----- /health, /metrics, mounting -----

/// etcd 3.4 serves its gateway under the deprecated `/v3beta/` as well (checked against etcd
/// 3.4.23: `/v3beta/kv/put`, `/v3beta/watch`, `/v3beta/lock/lock` answer as under `/v3/`; a GET
/// gets 405; `/v3alpha/` is not served).
#[actix_rt::test]
async fn v3beta_paths_are_the_v3_routes() {
    let gw = Gw::start().await;
    let put = gw.ok("/v3beta/kv/put", &json!({"key": "Zm9v", "value": "YmFy"})).await;
    assert_eq!(rev(&put["header"]), 2);
    let range = gw.ok("/v3/kv/range", &json!({"key": "Zm9v"})).await;
    assert_eq!(range["kvs"][0]["value"], "YmFy");
    let beta = gw.ok("/v3beta/kv/range", &json!({"key": "Zm9v"})).await;
    assert_eq!(beta["kvs"], range["kvs"]);
    let txn = gw.ok("/v3beta/kv/txn", &json!({"success": [{"request_put": {"key": "YmF6", "value": "cXV4"}}]})).await;
    assert_eq!(txn["succeeded"], true);
    let status = gw.ok("/v3beta/maintenance/status", &json!({})).await;
    assert_eq!(status["version"], watchkv_actors::api::REPORTED_ETCD_VERSION);
    assert_eq!(gw.get("/v3beta/kv/range").await.0, 405, "GET on a POST route");
    assert_eq!(gw.post_raw("/v3alpha/kv/range", r#"{"key":"Zm9v"}"#).await.0, 404);
    gw.finish().await;
}

#[actix_rt::test]
async fn health_and_metrics() {
    let gw = Gw::start().await;
    let (status, body) = gw.get("/health").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["health"], "true");

    let mut w = gw.watch(false).await;
    w.send_json(&json!({"create_request": {"key": "Zm9v"}})).await;
    assert_eq!(w.next_result().await["created"], true);
    gw.put("foo", "bar").await;
    assert_eq!(events(&w.next_result().await), [ev("foo", "bar")]);
    let (status, text) = wait_until(
        "the watcher in /metrics",
        || gw.get("/metrics"),
        |(_, text): &(u16, String)| text.contains(r#"watchkv_watchers{group="synced"} 1"#),
    )
    .await;
    assert_eq!(status, 200);
    for name in
        ["watchkv_watchers", "watchkv_streams", "watchkv_current_revision", "watchkv_events_sent_total", "# EOF"]
    {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(text.contains("watchkv_current_revision 2"), "{text}");
    gw.finish().await;
}

#[actix_rt::test]
async fn mounted_under_a_prefix() {
    let gw = Gw::with(Opts { prefix: Some("/kv".into()), ..Opts::default() }).await;
    assert_eq!(gw.url("/health"), format!("http://{}/kv/health", gw.addr));
    assert_eq!(gw.get("/health").await.0, 200);
    let mut w = gw.watch(true).await;
    w.send_json(&json!({"create_request": {"key": "Zm9v"}})).await;
    assert_eq!(w.next_result().await["created"], true);
    assert_eq!(gw.put("foo", "bar").await, 2);
    assert_eq!(events(&w.next_result().await), [ev("foo", "bar")]);
    let range = gw.ok("/v3/kv/range", &json!({"key": "Zm9v"})).await;
    assert_eq!(range["kvs"][0]["value"], "YmFy");
    // Nothing is mounted at the root.
    let url = format!("http://{}/v3/kv/range", gw.addr);
    let resp = gw.client.post(&url).send_body(r#"{"key":"Zm9v"}"#).await.expect("send");
    assert_eq!(resp.status().as_u16(), 404);
    gw.finish().await;
}

/// HTTP/1.0 has no chunked encoding: the streaming routes answer an HTTP/1.0 request with the
/// JSON lines as they are and end the body by closing the connection, as etcd's gateway (Go's
/// `net/http`) does. A keep-alive body of two requests gets two lines, then the close; a watch
/// gets its created line and a later event, unchunked.
#[actix_rt::test]
async fn an_http_1_0_client_gets_streamed_lines_unchunked_and_the_close_ends_them() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let deadline = gateway_common::DEADLINE;
    let gw = Gw::start().await;
    let lease = gw.ok("/v3/lease/grant", &json!({"TTL": "60"})).await;
    let id = lease["ID"].as_str().expect("lease id").to_owned();
    let body = format!(r#"{{"ID":"{id}"}} {{"ID":"{id}"}}"#);
    let mut socket = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let request = format!("POST /v3/lease/keepalive HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut reply = Vec::new();
    tokio::time::timeout(deadline, socket.read_to_end(&mut reply)).await.expect("closed in time").expect("read");
    let reply = String::from_utf8(reply).expect("utf-8");
    let (head, lines) = reply.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
    let answers: Vec<Value> =
        lines.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect();
    assert_eq!(answers.len(), 2, "{lines}");
    for answer in &answers {
        assert_eq!((&answer["result"]["ID"], &answer["result"]["TTL"]), (&json!(id), &json!("60")), "{answer}");
    }

    let create = json!({"create_request": {"key": b64("h10")}}).to_string();
    let socket = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let mut socket = tokio::io::BufReader::new(socket);
    let request = format!("POST /v3/watch HTTP/1.0\r\nContent-Length: {}\r\n\r\n{create}", create.len());
    socket.get_mut().write_all(request.as_bytes()).await.expect("send");
    let mut read_line = async || {
        let mut line = String::new();
        tokio::time::timeout(deadline, socket.read_line(&mut line)).await.expect("a line in time").expect("read");
        line
    };
    let mut head = String::new();
    loop {
        let line = read_line().await;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.0 200") && !head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
    let created: Value = serde_json::from_str(&read_line().await).expect("the created line, unchunked");
    assert_eq!(created["result"]["created"], json!(true), "{created}");
    let put = gw.put("h10", "v").await;
    let event: Value = serde_json::from_str(&read_line().await).expect("the event line, unchunked");
    assert_eq!(int(&event["result"]["events"][0]["kv"]["mod_revision"]), put, "{event}");
    gw.finish().await;
}

/// `Grpc-Timeout` bounds a call as etcd's gateway makes it the gRPC call's deadline (etcd
/// 3.4.23 answers the same): a deadline already past is 504 `context deadline exceeded` and the
/// put is not made; a malformed one is refused; a lock that waits past its deadline is 504
/// too, and its waiter's key is given back.
#[actix_rt::test]
async fn a_grpc_timeout_header_is_the_calls_deadline() {
    let gw = Gw::start().await;
    let client = gateway_common::client();
    let post = |path: &str, timeout: &'static str, body: Value| {
        let request = client.post(gw.url(path)).insert_header(("Grpc-Timeout", timeout));
        async move {
            let mut response = request.send_body(body.to_string()).await.expect("POST");
            let json: Value = serde_json::from_slice(&response.body().await.expect("body")).expect("JSON");
            (response.status().as_u16(), json)
        }
    };
    let deadline = json!({"code": 4, "message": "context deadline exceeded"});
    let put = json!({"key": b64("t"), "value": b64("v")});
    assert_eq!(post("/v3/kv/put", "1n", put.clone()).await, (504, deadline.clone()));
    let read = gw.ok("/v3/kv/range", &json!({"key": b64("t")})).await;
    assert!(read.get("kvs").is_none(), "the put was made: {read}");
    let refused = post("/v3/kv/put", "1x", put.clone()).await;
    assert_eq!(refused, (400, json!({"code": 3, "message": "invalid grpc-timeout: 1x"})));
    let (status, answer) = post("/v3/kv/put", "5S", put).await;
    assert_eq!(status, 200, "{answer}");

    for id in ["4097", "4098"] {
        gw.ok("/v3/lease/grant", &json!({"ID": id, "TTL": "60"})).await;
    }
    let held = gw.ok("/v3/lock/lock", &json!({"name": b64("l"), "lease": "4097"})).await;
    let started = std::time::Instant::now();
    let waited = post("/v3/lock/lock", "300m", json!({"name": b64("l"), "lease": "4098"})).await;
    assert_eq!(waited, (504, deadline));
    assert!(started.elapsed() >= Duration::from_millis(300), "answered before the deadline");
    let prefix = json!({"key": b64("l/"), "range_end": b64("l0"), "keys_only": true});
    let holders = wait_until(
        "the second waiter's key given back",
        || gw.ok("/v3/kv/range", &prefix),
        |r: &Value| r["kvs"].as_array().map(Vec::len) == Some(1),
    )
    .await;
    assert_eq!(holders["kvs"][0]["key"], held["key"]);
    gw.finish().await;
}
