//! `/v3/watch` end to end: a whole body then EOF keeps streaming, a client that goes away frees
//! its watchers, the JSON shape of watch output, full duplex with and without
//! `Expect: 100-continue`, progress, cancel, failed creates, and bad input that ends only its
//! own stream.

use std::time::Duration;

use serde_json::{json, Value};

use super::{ev, events, keys, QUIET};
use crate::gateway_common::{self, b64, rev, wait_until, Gw, Opts, RawStream};

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
    // A good request and a bad one in the same chunk: the good one is served (its created
    // response comes first), then the error line ends the stream.
    for _ in 0..5 {
        let mut w = gw.watch(false).await;
        let both = format!(r#"{{"create_request":{{"key":"{}"}}}}{{"create_request":{{"key":5}}}}"#, b64("x"));
        w.send(both.as_bytes()).await.expect("send");
        assert_eq!(w.next_result().await["created"], true);
        assert_eq!(w.next_error().await["code"], 3);
        w.expect_end().await;
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
