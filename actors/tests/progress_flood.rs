//! A client that floods its watch stream with progress requests, against the `watchkv` binary
//! over gRPC: each request asks the store about every watcher of the stream, and none waits
//! for its answer. The server must hold bounded memory, answer in revision order and let a
//! writer on another connection go on. A stream has 16 slots for progress requests at the
//! store (`stream_actor::PROGRESS_REQUESTS_IN_FLIGHT`, etcd's `ctrlStreamBufLen`); the transport
//! waits for one before it reads the next request, so HTTP/2 flow control holds the client
//! back. Without them the requests, each with the stream's watcher list, queued in the store's
//! mailbox: this test's server peaked at 418 MiB.
//!
//! The client is raw HTTP/2 (`h2`): the whole flood is one body of pre-encoded gRPC messages,
//! sent as fast as the server's flow control lets it.

mod wire;

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use prost::Message as _;
use watchkv_actors::grpc::pb::etcdserverpb as pb;
use wire::{start_watchkv, DEADLINE};

/// Watchers on the flooding stream: each progress request lists them all.
const WATCHERS: usize = 2000;
/// Progress requests the client sends without waiting for answers.
const REQUESTS: usize = 30_000;
/// The server's peak RSS must stay under this (it is about 24 MiB); the requests' watcher
/// lists alone, were they all queued at once, would be ~1.4 GB.
const MAX_PEAK_RSS_KIB: u64 = 128 * 1024;

/// `VmHWM` of `pid` in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the server's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// `msg` as one gRPC message (uncompressed, length-prefixed), appended to `out`.
fn frame(out: &mut BytesMut, msg: &pb::WatchRequest) {
    let body = msg.encode_to_vec();
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&body);
}

/// Reads gRPC messages off a response body.
struct Responses {
    body: h2::RecvStream,
    buf: BytesMut,
}

impl Responses {
    /// The next response, or `None` when none comes within `wait` or the body ends.
    async fn next(&mut self, wait: Duration) -> Option<pb::WatchResponse> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let msg = self.buf.split_to(len);
                    return Some(pb::WatchResponse::decode(msg.freeze()).expect("a WatchResponse"));
                }
            }
            let data = tokio::time::timeout(wait, self.body.data()).await.ok()??.expect("response body");
            let _ = self.body.flow_control().release_capacity(data.len());
            self.buf.extend_from_slice(&data);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_progress_requests_is_held_back_and_answered_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let port = wire::free_port();
    let server = tokio::task::spawn_blocking(move || start_watchkv(&data, port, &[])).await.expect("start");
    let pid = server.child.id();

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    // The answers are small DATA frames; h2's defence against floods of them closes a client's
    // connection once it holds more unread than half its window allows (in overhead counted
    // per frame). This client reads more slowly than a release server answers, so it allows
    // what its window can bring in: the server's bounds are under test, not the client's.
    let (client, connection) =
        h2::client::Builder::new().data_frame_budget(16 << 20).handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://127.0.0.1:{port}/etcdserverpb.Watch/Watch"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut send) = client.send_request(request, false).expect("send the request");

    let mut creates = BytesMut::new();
    for i in 0..WATCHERS {
        let create = pb::WatchCreateRequest { key: format!("k/{i}").into_bytes(), ..Default::default() };
        frame(
            &mut creates,
            &pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) },
        );
    }
    send.send_data(creates.freeze(), false).expect("send the creates");
    let response = tokio::time::timeout(DEADLINE, response).await.expect("headers in time").expect("response");
    assert_eq!(response.status(), 200);
    let mut responses = Responses { body: response.into_body(), buf: BytesMut::new() };
    for _ in 0..WATCHERS {
        let resp = responses.next(DEADLINE).await.expect("a created response");
        assert!(resp.created, "{resp:?}");
    }

    let mut flood = BytesMut::new();
    let progress =
        pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(Default::default())) };
    for _ in 0..REQUESTS {
        frame(&mut flood, &progress);
    }
    let flood: Bytes = flood.freeze();
    send.send_data(flood, false).expect("send the flood");

    // A writer on another connection puts meanwhile; each put must go through in time.
    let writer = tokio::spawn(async move {
        let mut kv =
            watchkv_actors::grpc::pb::etcdserverpb::kv_client::KvClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .expect("connect the writer");
        let mut last = 0;
        for _ in 0..20 {
            let put = pb::PutRequest { key: b"unwatched".to_vec(), value: b"v".to_vec(), ..Default::default() };
            let resp = tokio::time::timeout(DEADLINE, kv.put(put)).await.expect("a put in time").expect("put");
            last = resp.into_inner().header.expect("header").revision;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last
    });
    let mut answers = Vec::new();
    // The first answer may take long on a busy machine; after it, 3 s of silence ends the flood.
    let mut wait = DEADLINE;
    while let Some(resp) = responses.next(wait).await {
        wait = Duration::from_secs(3);
        assert_eq!((resp.watch_id, resp.events.len()), (-1, 0), "only progress answers: {resp:?}");
        answers.push(resp.header.expect("header").revision);
    }
    let last_put = writer.await.expect("writer");
    let peak = peak_rss_kib(pid);
    assert!(peak < MAX_PEAK_RSS_KIB, "the server's peak RSS was {peak} KiB");
    assert_eq!(last_put, 21, "every put of the writer went through");
    assert!(!answers.is_empty() && answers.len() <= REQUESTS, "{} answers to {REQUESTS} requests", answers.len());
    assert!(answers.windows(2).all(|w| w[0] <= w[1]), "progress revisions go backwards");
    drop(send);
    drop(server);
}
