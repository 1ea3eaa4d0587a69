//! The HTTP/JSON gateway end to end over real sockets (docs/etcd-semantics.md §7.1, §7.3, §8,
//! §12; cases H6–H9, X21, X22): unary routes through `awc`, `/v3/watch` through a raw HTTP/1.1 client that keeps
//! its chunked request body open while it reads the response, so full duplex is exercised with
//! and without `Expect: 100-continue`. Bad input must get etcd's error shapes and never harm the
//! server or other clients' streams.

mod gateway_common;

use std::time::Duration;

use gateway_common::{b64, int, rev, unb64, wait_until, Gw, Opts, RawStream};
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
    assert!((400..500).contains(&status), "GET on a POST route: {status}");
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
    let (status, json) = gw.post("/v3/kv/txn", deep.to_string()).await;
    assert!(status == 200 || (400..500).contains(&status), "nested txns: {status} {json}");
    assert_eq!(gw.get("/health").await.0, 200);
    gw.finish().await;
}

#[actix_rt::test]
async fn bodies_above_max_request_bytes() {
    let gw = Gw::with(Opts { max_request_bytes: Some(1024), ..Opts::default() }).await;
    let big = "x".repeat(2000);
    let too_large = status_body(3, "etcdserver: request is too large");
    for path in
        ["/v3/kv/put", "/v3/kv/range", "/v3/kv/txn", "/v3/lease/grant", "/v3/lease/leases", "/v3/maintenance/status"]
    {
        let (status, json) = gw.post(path, json!({"key": b64("k"), "value": b64(&big)}).to_string()).await;
        assert_eq!((status, &json), (400, &too_large), "{path}");
    }
    let (status, _) = gw.post_raw("/v3/lease/keepalive", format!(r#"{{"ID":"1","pad":"{big}"}}"#)).await;
    assert_eq!(status, 400);
    // Below the limit all is well.
    assert_eq!(gw.put("k", &"y".repeat(500)).await, 2);

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
    for part in body.as_bytes().chunks(300) {
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

// ----- watch: H6, X21, X22 -----

#[actix_rt::test]
async fn h6_x21_whole_body_then_eof_keeps_streaming() {
    let gw = Gw::start().await;
    let put = gw.post_raw("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#).await;
    assert!(String::from_utf8_lossy(&put.1).contains(r#""revision""#));
    // curl -d: a Content-Length body, ended right after the create request.
    let mut w =
        RawStream::open_with_body(gw.addr, "/v3/watch", br#"{"create_request": {"key":"Zm9v","start_revision":1}}"#)
            .await;
    assert_eq!(w.wait_head().await, 200);
    assert_eq!(w.header("content-type"), Some("application/json"));
    assert_eq!(w.header("transfer-encoding"), Some("chunked"));
    assert_eq!(w.next_result().await["created"], true);
    let caught_up = w.next_result().await;
    assert_eq!(events(&caught_up), [ev("foo", "bar")]);
    assert!(caught_up.to_string().contains("YmFy"));
    // X21: the body has ended but the stream keeps going.
    assert_eq!(w.line_within(QUIET).await, None, "nothing else is due");
    assert!(!w.ended(), "the response must not end with the request body");
    for i in 0..3 {
        let r = gw.put("foo", &format!("v{i}")).await;
        let resp = w.next_result().await;
        assert_eq!((rev(&resp["header"]), events(&resp)), (r, vec![ev("foo", &format!("v{i}"))]));
    }

    // The same with a chunked body ended by its last chunk.
    let mut w = gw.watch(false).await;
    w.send_json(&json!({"create_request": {"key": "Zm9v"}})).await;
    w.end_body().await.expect("end body");
    assert_eq!(w.next_result().await["created"], true);
    gw.put("foo", "after-eof").await;
    assert_eq!(events(&w.next_result().await), [ev("foo", "after-eof")]);
    gw.finish().await;
}

/// Number of watchers in every group.
async fn watchers(gw: &Gw) -> usize {
    let s = gw.handle.stats().await.expect("stats");
    s.store.synced + s.store.promoting + s.syncer.unsynced + s.victims.victims
}

/// A client that goes away after its body ended must not leave its watchers behind: with
/// nothing to write, only the socket's EOF tells that it is gone (Go's server, and so etcd's
/// gateway, cancels the request on it). A TCP half-close is such an EOF.
#[actix_rt::test]
async fn client_gone_after_body_end_frees_its_watchers() {
    let gw = Gw::start().await;
    let mut keep = bystander(&gw).await;
    for half_close in [false, true] {
        let mut w = gw.watch(false).await;
        w.send_json(&json!({"create_request": {"key": b64("idle")}})).await;
        w.send_json(&json!({"create_request": {"key": b64("idle2")}})).await;
        w.end_body().await.expect("end body");
        assert_eq!(w.next_result().await["created"], true);
        assert_eq!(w.next_result().await["watch_id"], "1");
        assert_eq!(watchers(&gw).await, 3);
        if half_close {
            w.shutdown_write().await.expect("half-close");
            w.expect_end().await;
        } else {
            drop(w);
        }
        wait_until("the gone client's watchers removed", || watchers(&gw), |n| *n == 1).await;
        let stats = gw.handle.stats().await.expect("stats");
        assert_eq!(stats.store.streams, 1, "only the bystander's stream is left");
    }
    bystander_still_served(&gw, &mut keep, "still").await;
    gw.finish().await;
}

#[actix_rt::test]
async fn x22_json_shape_of_watch_output() {
    let gw = Gw::start().await;
    let mut w = gw.watch(false).await;
    w.send(br#"{"create_request":{"key":"Zm9v"}}"#).await.expect("send");
    let created = w.next_result().await;
    assert_eq!(keys(&created), ["created", "header"], "no watch_id (0): {created}");
    assert_eq!(created["created"], true);
    let header = created["header"].clone();
    assert_eq!(keys(&header), ["cluster_id", "member_id", "raft_term", "revision"]);
    for k in ["cluster_id", "member_id", "raft_term", "revision"] {
        assert!(header[k].is_string(), "{k} must be a string: {header}");
    }
    assert_eq!(header["revision"], "1");

    gw.put("foo", "bar").await;
    let put = w.next_result().await;
    assert_eq!(keys(&put), ["events", "header"], "{put}");
    assert_eq!(put["header"]["revision"], "2");
    for k in ["cluster_id", "member_id", "raft_term"] {
        assert_eq!(put["header"][k], header[k]);
    }
    assert_eq!(
        put["events"],
        json!([{"kv": {"key": "Zm9v", "create_revision": "2", "mod_revision": "2", "version": "1", "value": "YmFy"}}])
    );
    gw.del("foo").await;
    let del = w.next_result().await;
    assert_eq!(del["header"]["revision"], "3");
    assert_eq!(del["events"], json!([{"type": "DELETE", "kv": {"key": "Zm9v", "mod_revision": "3"}}]));

    // A second watcher (id 1) with prev_kv: watch_id and prev_kv appear.
    w.send_json(&json!({"create_request": {"key": "Zm9v", "prev_kv": true}})).await;
    let created = w.next_result().await;
    assert_eq!((created["watch_id"].as_str(), created["created"].as_bool()), (Some("1"), Some(true)), "{created}");
    gw.put("foo", "a").await;
    gw.put("foo", "b").await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let r = w.next_result().await;
        for e in r["events"].as_array().expect("events") {
            seen.push((r.get("watch_id").cloned(), e.clone()));
        }
    }
    let for_1: Vec<&Value> = seen.iter().filter(|(id, _)| id.as_ref() == Some(&json!("1"))).map(|(_, e)| e).collect();
    assert_eq!(for_1.len(), 2);
    assert!(for_1[0].get("prev_kv").is_none(), "no previous value at the delete: {}", for_1[0]);
    assert_eq!(for_1[1]["prev_kv"]["value"], b64("a"));
    let for_0: Vec<&Value> = seen.iter().filter(|(id, _)| id.is_none()).map(|(_, e)| e).collect();
    assert!(for_0.iter().all(|e| e.get("prev_kv").is_none()), "{for_0:?}");
    gw.finish().await;
}

// ----- watch: full duplex, progress, cancel -----

/// The next result that is not a requested progress notification (`watch_id` -1, nothing else).
async fn next_skipping_progress(w: &mut RawStream) -> Value {
    loop {
        let r = w.next_result().await;
        if !(r["watch_id"] == "-1" && keys(&r) == ["header", "watch_id"]) {
            return r;
        }
    }
}

async fn full_duplex(expect_continue: bool) {
    let gw = Gw::start().await;
    let mut w = gw.watch(expect_continue).await;
    if expect_continue {
        assert!(w.continued, "100 Continue before the body");
    }
    w.send_json(&json!({"create_request": {"key": "Zm9v"}})).await;
    // The request body is still open: the created response must arrive now.
    let created = w.next_result().await;
    assert_eq!(w.status, 200);
    assert_eq!((created["created"].as_bool(), rev(&created["header"])), (Some(true), 1));
    gw.put("foo", "bar").await;
    let event = w.next_result().await;
    assert_eq!((rev(&event["header"]), events(&event)), (2, vec![ev("foo", "bar")]));

    // A second create, sent later on the same open body.
    w.send_json(&json!({"create_request": {"key": b64("baz"), "start_revision": "1"}})).await;
    let created = w.next_result().await;
    assert_eq!((created["watch_id"].as_str(), created["created"].as_bool()), (Some("1"), Some(true)), "{created}");
    assert_eq!(gw.put("baz", "qux").await, 3);
    let event = w.next_result().await;
    assert_eq!((event["watch_id"].as_str(), events(&event)), (Some("1"), vec![ev("baz", "qux")]));

    // A cancel of an unknown id gets no answer; a progress request is answered with id -1
    // once every watcher is synced (it may be dropped before: ask again).
    w.send_json(&json!({"cancel_request": {"watch_id": "77"}})).await;
    let deadline = std::time::Instant::now() + gateway_common::DEADLINE;
    let progress = loop {
        w.send(br#"{"progress_request":{}}"#).await.expect("send");
        if let Ok(Some(line)) = w.line_by(std::time::Instant::now() + Duration::from_millis(500)).await {
            break serde_json::from_str::<Value>(&line).expect("json")["result"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "no progress response");
    };
    assert_eq!(keys(&progress), ["header", "watch_id"], "{progress}");
    assert_eq!((progress["watch_id"].as_str(), rev(&progress["header"])), (Some("-1"), 3));
    // Cancel watcher 1: answered, and its key is no longer delivered. Answers to the progress
    // retries may still come; they are skipped.
    w.send_json(&json!({"cancel_request": {"watch_id": 1}})).await;
    let canceled = next_skipping_progress(&mut w).await;
    assert_eq!(keys(&canceled), ["canceled", "header", "watch_id"], "{canceled}");
    assert_eq!(
        (canceled["watch_id"].as_str(), canceled["canceled"].as_bool(), rev(&canceled["header"])),
        (Some("1"), Some(true), 3)
    );
    gw.put("baz", "gone").await;
    gw.put("foo", "still").await;
    let event = next_skipping_progress(&mut w).await;
    assert_eq!((event.get("watch_id"), events(&event)), (None, vec![ev("foo", "still")]));

    // Ending the body does not end the stream.
    w.end_body().await.expect("end body");
    gw.put("foo", "after-eof").await;
    assert_eq!(events(&w.next_result().await), [ev("foo", "after-eof")]);
    gw.finish().await;
}

#[actix_rt::test]
async fn full_duplex_without_expect_continue() {
    full_duplex(false).await;
}

#[actix_rt::test]
async fn full_duplex_with_expect_continue() {
    full_duplex(true).await;
}

#[actix_rt::test]
async fn create_failures_are_created_and_canceled() {
    let gw = Gw::with(Opts { max_watchers_per_stream: Some(2), ..Opts::default() }).await;
    let mut w = gw.watch(false).await;
    let failed = |r: &Value, reason: &str| {
        assert_eq!(keys(r), ["cancel_reason", "canceled", "created", "header", "watch_id"], "{r}");
        assert_eq!(
            (r["watch_id"].as_str(), r["created"].as_bool(), r["canceled"].as_bool()),
            (Some("-1"), Some(true), Some(true))
        );
        assert_eq!(r["cancel_reason"], reason);
    };
    w.send_json(&json!({"create_request": {"key": b64("b"), "range_end": b64("a")}})).await;
    failed(&w.next_result().await, "mvcc: watcher range is empty");
    w.send_json(&json!({"create_request": {"key": b64("a"), "start_revision": "-1"}})).await;
    failed(&w.next_result().await, "etcdserver: mvcc: required revision has been compacted");

    // Too many watchers on one stream.
    w.send_json(&json!({"create_request": {"key": b64("a")}})).await;
    w.send_json(&json!({"create_request": {"key": b64("b")}})).await;
    assert_eq!(w.next_result().await["created"], true);
    assert_eq!(w.next_result().await["watch_id"], "1");
    w.send_json(&json!({"create_request": {"key": b64("c")}})).await;
    let refused = w.next_result().await;
    failed(&refused, "etcdserver: too many watchers on this stream");
    w.send_json(&json!({"create_request": {"key": b64("a"), "watch_id": "1"}})).await;
    let dup = w.next_result().await;
    assert_eq!((dup["watch_id"].as_str(), dup["canceled"].as_bool()), (Some("-1"), Some(true)), "{dup}");
    // The stream is still fine: events flow, and after a cancel a new watcher fits.
    gw.put("b", "1").await;
    let e = w.next_result().await;
    assert_eq!((e["watch_id"].as_str(), events(&e)), (Some("1"), vec![ev("b", "1")]));
    w.send_json(&json!({"cancel_request": {"watch_id": "0"}})).await;
    assert_eq!(w.next_result().await["canceled"], true);
    w.send_json(&json!({"create_request": {"key": b64("c")}})).await;
    let created = w.next_result().await;
    assert_eq!((created["created"].as_bool(), created.get("canceled")), (Some(true), None), "{created}");
    let id = created.get("watch_id").cloned();
    gw.put("c", "2").await;
    let e = w.next_result().await;
    assert_eq!((e.get("watch_id").cloned(), events(&e)), (id, vec![ev("c", "2")]));
    // Another stream has its own budget.
    let mut other = gw.watch(false).await;
    other.send_json(&json!({"create_request": {"key": b64("c")}})).await;
    other.send_json(&json!({"create_request": {"key": b64("d")}})).await;
    assert_eq!(other.next_result().await["created"], true);
    assert_eq!(other.next_result().await["watch_id"], "1");
    gw.finish().await;
}

// ----- watch: bad input ends only its own stream -----

/// Opens a stream watching `foo` that must keep working while another stream misbehaves.
async fn bystander(gw: &Gw) -> RawStream {
    let mut w = gw.watch(false).await;
    w.send_json(&json!({"create_request": {"key": "Zm9v"}})).await;
    assert_eq!(w.next_result().await["created"], true);
    w
}

async fn bystander_still_served(gw: &Gw, w: &mut RawStream, value: &str) {
    let r = gw.put("foo", value).await;
    let resp = w.next_result().await;
    assert_eq!((rev(&resp["header"]), events(&resp)), (r, vec![ev("foo", value)]));
    assert_eq!(gw.get("/health").await.0, 200);
}

#[actix_rt::test]
async fn watch_body_that_stops_mid_object() {
    let gw = Gw::start().await;
    let mut other = bystander(&gw).await;
    for expect in [false, true] {
        let mut w = gw.watch(expect).await;
        w.send_json(&json!({"create_request": {"key": b64("x")}})).await;
        assert_eq!(w.next_result().await["created"], true);
        w.send(br#"{"create_request":{"key":"Zm"#).await.expect("send");
        w.end_body().await.expect("end body");
        let err = w.next_error().await;
        assert_eq!(keys(&err), ["code", "message"]);
        assert_eq!(err["code"], 3);
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        w.expect_end().await;
        bystander_still_served(&gw, &mut other, if expect { "b" } else { "a" }).await;
    }
    // Content-Length body cut short of an object.
    let mut w = RawStream::open_with_body(gw.addr, "/v3/watch", br#"{"create_request":{"key":"#).await;
    assert_eq!(w.next_error().await["code"], 3);
    w.expect_end().await;
    // The ended streams' watchers are gone: only the bystander's remains.
    wait_until(
        "watchers of ended streams removed",
        || async { gw.handle.stats().await.expect("stats").store.synced },
        |n| *n == 1,
    )
    .await;
    bystander_still_served(&gw, &mut other, "c").await;
    gw.finish().await;
}

#[actix_rt::test]
async fn malformed_request_mid_stream() {
    let gw = Gw::start().await;
    let mut other = bystander(&gw).await;
    for bad in [
        &br#"{"create_request": nonsense}"#[..],
        br#"{"create_request":{"key":"!!!"}}"#,
        br#"{"create_request":{"key":"Zm9v","start_revision":"x"}}"#,
        br#"{"create_request":{"filters":["NOSUCH"]}}"#,
        br#"[1,2,3]"#,
        br#"42"#,
        br#"}"#,
        b"\xff\xfe",
    ] {
        let mut w = gw.watch(false).await;
        w.send_json(&json!({"create_request": {"key": b64("x")}})).await;
        assert_eq!(w.next_result().await["created"], true);
        w.send(bad).await.expect("send");
        // Anything after the bad request is not processed.
        let _ = w.send(json!({"create_request": {"key": b64("y")}}).to_string().as_bytes()).await;
        let err = w.next_error().await;
        assert_eq!(err["code"], 3, "{}: {err}", String::from_utf8_lossy(bad));
        w.expect_end().await;
        bystander_still_served(&gw, &mut other, &format!("after {}", String::from_utf8_lossy(bad))).await;
    }
    // Requests with nothing set (or only unknown fields) are ignored; the stream goes on.
    let mut w = gw.watch(false).await;
    w.send(br#"{}{"unknown_request":{}} {"create_request":{"key":"Zm9v"}}"#).await.expect("send");
    assert_eq!(w.next_result().await["created"], true);
    bystander_still_served(&gw, &mut other, "z").await;
    assert_eq!(events(&w.next_result().await), [ev("foo", "z")]);
    gw.finish().await;
}

#[actix_rt::test]
async fn malformed_chunk_framing_mid_stream() {
    let gw = Gw::start().await;
    let mut other = bystander(&gw).await;
    for bad in [&b"zz\r\nabc\r\n"[..], b"3\r\nabcdef\r\n", b"\r\n\r\n\r\n"] {
        let mut w = gw.watch(false).await;
        w.send_json(&json!({"create_request": {"key": b64("x")}})).await;
        assert_eq!(w.next_result().await["created"], true);
        let _ = w.send_raw(bad).await;
        // The stream ends, with an error line if it can still carry one.
        while let Some(line) = w.next_line().await {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["error"]["code"], 3, "{line}");
        }
        bystander_still_served(&gw, &mut other, &format!("after {}", String::from_utf8_lossy(bad).escape_debug()))
            .await;
    }
    // A client that disappears mid-stream removes its watchers.
    let mut w = gw.watch(false).await;
    w.send_json(&json!({"create_request": {"key": b64("x")}})).await;
    assert_eq!(w.next_result().await["created"], true);
    drop(w);
    wait_until(
        "the dropped stream's watcher removed",
        || async { gw.handle.stats().await.expect("stats").store.synced },
        |n| *n == 1,
    )
    .await;
    bystander_still_served(&gw, &mut other, "end").await;
    gw.finish().await;
}
