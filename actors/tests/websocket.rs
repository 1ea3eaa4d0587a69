//! The gateway's WebSocket transport, against etcd 3.4.23, whose gateway is wrapped in
//! grpc-websocket-proxy: the same steps over `ws://…/v3/watch` and `ws://…/v3/lease/keepalive`
//! (each client message a request, each server message a response line) must give the same
//! messages, and closing the WebSocket must free the watchers on both. Then, on watchkv, a token
//! in the `Bearer, <token>` subprotocol (the one header a browser can set) authenticates.

mod wire;

use std::time::{Duration, Instant};

use awc::ws;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use wire::{b64, drop_identity, free_port, post, start_etcd, start_watchkv, DEADLINE};

/// A client WebSocket: frames out, frames in.
trait Socket:
    futures::Sink<ws::Message, Error = awc::error::WsProtocolError>
    + futures::Stream<Item = Result<ws::Frame, awc::error::WsProtocolError>>
    + Unpin
{
}

impl<S> Socket for S where
    S: futures::Sink<ws::Message, Error = awc::error::WsProtocolError>
        + futures::Stream<Item = Result<ws::Frame, awc::error::WsProtocolError>>
        + Unpin
{
}

async fn connect(port: u16, path: &str, token: Option<&str>) -> (awc::ClientResponse, impl Socket) {
    let mut request = awc::Client::new().ws(format!("ws://127.0.0.1:{port}{path}"));
    if let Some(token) = token {
        request = request.protocols(["Bearer", token]);
    }
    let (response, socket) = request.connect().await.unwrap_or_else(|e| panic!("WebSocket to {path}: {e}"));
    (response, socket)
}

async fn send(socket: &mut impl Socket, message: &Value) {
    socket.send(ws::Message::Text(message.to_string().into())).await.expect("send a message");
}

/// The next text message, as JSON without the identity fields.
async fn next(socket: &mut impl Socket, what: &str) -> Value {
    loop {
        let frame = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .unwrap_or_else(|_| panic!("{what} within the deadline"))
            .expect("the socket is open")
            .expect("a valid frame");
        if let ws::Frame::Text(text) = frame {
            let mut v: Value = serde_json::from_slice(&text).expect("a JSON message");
            drop_identity(&mut v);
            return v;
        }
    }
}

/// Puts over HTTP (a blocking call: the server is another process).
fn put(port: u16, key: &str, value: &str) {
    let r = post(port, "/v3/kv/put", &json!({"key": b64(key), "value": b64(value)}));
    assert_eq!(r.status, 200, "put {key}: {}", String::from_utf8_lossy(&r.body));
}

/// The server's watchers, from its `/metrics` (etcd's name, which both export).
fn watchers(port: u16) -> Option<i64> {
    let (_, body) = wire::http_get(port, "/metrics");
    body.lines()
        .find(|l| l.starts_with("etcd_debugging_mvcc_watcher_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as i64)
}

/// The steps, on the server at `port`: every message received, in order.
async fn steps(port: u16) -> Vec<Value> {
    let mut seen = Vec::new();
    let (response, mut watch) = connect(port, "/v3/watch", None).await;
    assert_eq!(response.status().as_u16(), 101);
    send(&mut watch, &json!({"create_request": {"key": b64("foo")}})).await;
    seen.push(next(&mut watch, "foo's created").await);
    put(port, "foo", "1");
    seen.push(next(&mut watch, "foo's event").await);
    send(&mut watch, &json!({"create_request": {"key": b64("bar"), "prev_kv": true}})).await;
    seen.push(next(&mut watch, "bar's created").await);
    put(port, "bar", "1");
    put(port, "bar", "2");
    seen.push(next(&mut watch, "bar's first event").await);
    seen.push(next(&mut watch, "bar's second event").await);
    send(&mut watch, &json!({"cancel_request": {"watch_id": "0"}})).await;
    seen.push(next(&mut watch, "the cancel").await);
    // Only bar's watcher is left.
    put(port, "foo", "2");
    put(port, "bar", "3");
    seen.push(next(&mut watch, "bar's third event").await);

    let grant = post(port, "/v3/lease/grant", &json!({"TTL": "60"}));
    let grant: Value = serde_json::from_slice(&grant.body).expect("grant");
    let id = grant["ID"].as_str().expect("lease id").to_string();
    let (_, mut keep_alive) = connect(port, "/v3/lease/keepalive", None).await;
    for _ in 0..2 {
        send(&mut keep_alive, &json!({"ID": id})).await;
        let mut renewed = next(&mut keep_alive, "a keep-alive").await;
        assert_eq!(renewed["result"]["ID"], json!(id), "{renewed}");
        renewed["result"]["ID"] = json!("the lease");
        seen.push(renewed);
    }

    // Closing the WebSocket ends the watch stream: its watcher goes.
    assert_eq!(watchers(port), Some(1));
    watch.send(ws::Message::Close(None)).await.expect("close");
    drop(watch);
    let start = Instant::now();
    while watchers(port) != Some(0) {
        assert!(start.elapsed() < DEADLINE, "the watcher outlived its WebSocket: {:?}", watchers(port));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

#[actix_rt::test]
async fn watch_and_keep_alive_over_a_websocket_answer_as_etcds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let on_etcd = steps(etcd.port).await;
    drop(etcd);
    let port = free_port();
    let _watchkv = start_watchkv(&dir.path().join("watchkv"), port, &[]);
    let on_watchkv = steps(port).await;
    assert_eq!(on_watchkv.len(), on_etcd.len());
    for (i, (w, e)) in on_watchkv.iter().zip(&on_etcd).enumerate() {
        assert_eq!(w, e, "message {i}: watchkv {w} against etcd {e}");
    }

    // A request in fragments (Go's gorilla client splits a message longer than its 4 KiB write
    // buffer) is joined, as wsproxy reads whole messages.
    let (_, mut fragmented) = connect(port, "/v3/watch", None).await;
    let create = json!({"create_request": {"key": b64("x".repeat(3000)), "range_end": b64("y")}}).to_string();
    let (first, rest) = create.split_at(1000);
    let (middle, last) = rest.split_at(1000);
    for item in [
        actix_http::ws::Item::FirstText(first.to_string().into()),
        actix_http::ws::Item::Continue(middle.to_string().into()),
        actix_http::ws::Item::Last(last.to_string().into()),
    ] {
        fragmented.send(ws::Message::Continuation(item)).await.expect("a fragment");
    }
    assert_eq!(next(&mut fragmented, "the created of a fragmented request").await["result"]["created"], json!(true));

    // A client that closes before the route has answered (the keep-alive route waits for its
    // first request) is answered with a Close, not a dropped connection.
    let (_, mut early) = connect(port, "/v3/lease/keepalive", None).await;
    early.send(ws::Message::Close(None)).await.expect("close");
    let reply = tokio::time::timeout(DEADLINE, early.next()).await.expect("an answer within the deadline");
    assert!(matches!(reply, Some(Ok(ws::Frame::Close(_)))), "{reply:?}");

    // A token in the subprotocol: the only header a browser sets on a WebSocket.
    for (path, body) in [
        ("/v3/auth/user/add", json!({"name": "root", "password": "rootpw"})),
        ("/v3/auth/user/grant", json!({"user": "root", "role": "root"})),
    ] {
        let r = post(port, path, &body);
        assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    }
    let enabled = post(port, "/v3/auth/enable", &json!({}));
    assert_eq!(enabled.status, 200, "{}", String::from_utf8_lossy(&enabled.body));
    let auth = post(port, "/v3/auth/authenticate", &json!({"name": "root", "password": "rootpw"}));
    let auth: Value = serde_json::from_slice(&auth.body).expect("authenticate");
    let token = auth["token"].as_str().expect("token").to_string();
    let (response, mut watch) = connect(port, "/v3/watch", Some(&token)).await;
    let protocol = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
    assert_eq!(protocol, Some("Bearer"), "the subprotocol is echoed, as wsproxy echoes it");
    send(&mut watch, &json!({"create_request": {"key": b64("foo")}})).await;
    assert_eq!(next(&mut watch, "the created with a token").await["result"]["created"], json!(true));
    put_with_token(port, &token);
    let event = next(&mut watch, "the event with a token").await;
    assert_eq!(event["result"]["events"][0]["kv"]["value"], json!(b64("3")), "{event}");
    // Without it, the create is refused.
    let (_, mut anonymous) = connect(port, "/v3/watch", None).await;
    send(&mut anonymous, &json!({"create_request": {"key": b64("foo")}})).await;
    let refused = next(&mut anonymous, "the refusal without a token").await;
    assert!(refused.to_string().contains("user name is empty"), "{refused}");
}

fn put_with_token(port: u16, token: &str) {
    let body = json!({"key": b64("foo"), "value": b64("3")}).to_string();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    use std::io::{Read, Write};
    let head = format!(
        "POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
