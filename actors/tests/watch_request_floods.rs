//! Clients that flood a watch stream with requests, against the `watchkv` binary over gRPC,
//! none waiting for its answer. The server must hold bounded memory, answer in order and let a
//! writer on another connection go on.
//!
//! - Progress requests: each asks the store about every watcher of the stream. A stream has 16
//!   slots for them at the store (`stream_actor::PROGRESS_REQUESTS_IN_FLIGHT`, etcd's
//!   `ctrlStreamBufLen`); the transport waits for one before it reads the next request, so
//!   HTTP/2 flow control holds the client back. Without them the requests, each with the
//!   stream's watcher list, queued in the store's mailbox: this test's server peaked at 418 MiB.
//! - Creates from history, each cancelled at once: they go to the syncer, which runs at the
//!   idle scheduling class, through the runtime's create slots
//!   (`stream_actor::CREATES_IN_FLIGHT`); a create beyond them waits in its stream's backlog
//!   with the requests behind it. Every create is answered, then its cancel, and nothing of a
//!   watcher comes after its cancel.
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

/// Opens a watch call on a new connection to `port`, sends `first` as the start of its body,
/// and returns the body's sender and a reader of the responses.
async fn open_watch(port: u16, first: Bytes) -> (h2::SendStream<Bytes>, Responses) {
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
    send.send_data(first, false).expect("send the first requests");
    let response = tokio::time::timeout(DEADLINE, response).await.expect("headers in time").expect("response");
    assert_eq!(response.status(), 200);
    (send, Responses { body: response.into_body(), buf: BytesMut::new() })
}

/// A writer on another connection: 20 puts of an unwatched key, each of which must go through
/// in time; returns the last one's revision.
fn spawn_writer(port: u16) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let mut kv = pb::kv_client::KvClient::connect(format!("http://127.0.0.1:{port}")).await.expect("connect");
        let mut last = 0;
        for _ in 0..20 {
            let put = pb::PutRequest { key: b"unwatched".to_vec(), value: b"v".to_vec(), ..Default::default() };
            let resp = tokio::time::timeout(DEADLINE, kv.put(put)).await.expect("a put in time").expect("put");
            last = resp.into_inner().header.expect("header").revision;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last
    })
}

/// Starts the server on a free port in a fresh directory, which lives as long as the returned
/// guard.
async fn start_server() -> (tempfile::TempDir, wire::Proc) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let port = wire::free_port();
    let server = tokio::task::spawn_blocking(move || start_watchkv(&data, port, &[])).await.expect("start");
    (dir, server)
}

/// `request` as a `WatchRequest`.
fn watch_request(request: pb::watch_request::RequestUnion) -> pb::WatchRequest {
    pb::WatchRequest { request_union: Some(request) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_progress_requests_is_held_back_and_answered_in_order() {
    let (_dir, server) = start_server().await;
    let (port, pid) = (server.port, server.child.id());

    let mut creates = BytesMut::new();
    for i in 0..WATCHERS {
        let create = pb::WatchCreateRequest { key: format!("k/{i}").into_bytes(), ..Default::default() };
        frame(&mut creates, &watch_request(pb::watch_request::RequestUnion::CreateRequest(create)));
    }
    let (mut send, mut responses) = open_watch(port, creates.freeze()).await;
    for _ in 0..WATCHERS {
        let resp = responses.next(DEADLINE).await.expect("a created response");
        assert!(resp.created, "{resp:?}");
    }

    let mut flood = BytesMut::new();
    let progress = watch_request(pb::watch_request::RequestUnion::ProgressRequest(Default::default()));
    for _ in 0..REQUESTS {
        frame(&mut flood, &progress);
    }
    let flood: Bytes = flood.freeze();
    send.send_data(flood, false).expect("send the flood");

    let writer = spawn_writer(port);
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

/// Creates from history on the flooding stream, each followed by its cancel.
const CREATE_CANCEL_PAIRS: usize = 10_000;
/// Puts under `h/` before the flood: the history each create starts from.
const HISTORY_PUTS: i64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_creates_from_history_each_cancelled_is_answered_in_order() {
    let (_dir, server) = start_server().await;
    let (port, pid) = (server.port, server.child.id());
    let mut kv = pb::kv_client::KvClient::connect(format!("http://127.0.0.1:{port}")).await.expect("connect");
    for i in 0..HISTORY_PUTS {
        let put = pb::PutRequest { key: format!("h/{i}").into_bytes(), value: b"v".to_vec(), ..Default::default() };
        kv.put(put).await.expect("put");
    }

    let mut flood = BytesMut::new();
    for id in 1..=CREATE_CANCEL_PAIRS as i64 {
        let create = pb::WatchCreateRequest {
            key: b"h/".to_vec(),
            range_end: b"h0".to_vec(),
            start_revision: 1,
            watch_id: id,
            ..Default::default()
        };
        frame(&mut flood, &watch_request(pb::watch_request::RequestUnion::CreateRequest(create)));
        let cancel = pb::WatchCancelRequest { watch_id: id };
        frame(&mut flood, &watch_request(pb::watch_request::RequestUnion::CancelRequest(cancel)));
    }
    let (send, mut responses) = open_watch(port, flood.freeze()).await;
    let writer = spawn_writer(port);

    // Each watcher's created response, then perhaps some of its history, then its canceled
    // response, one watcher after the other: nothing of a watcher after its cancel, nothing
    // of one before its create.
    let mut open: Option<(i64, i64)> = None;
    let mut next_id = 1;
    while next_id <= CREATE_CANCEL_PAIRS as i64 || open.is_some() {
        let resp = responses.next(DEADLINE).await.expect("a response in time");
        match open {
            None => {
                assert!(
                    resp.created && !resp.canceled && resp.watch_id == next_id,
                    "watcher {next_id}'s created: {resp:?}"
                );
                open = Some((next_id, 0));
                next_id += 1;
            }
            Some((id, _)) if resp.canceled => {
                assert!(
                    !resp.created && resp.watch_id == id && resp.events.is_empty(),
                    "watcher {id}'s canceled: {resp:?}"
                );
                open = None;
            }
            Some((id, last_rev)) => {
                assert!(
                    resp.watch_id == id && !resp.created && !resp.events.is_empty(),
                    "watcher {id}'s events: {resp:?}"
                );
                let revs: Vec<i64> =
                    resp.events.iter().map(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision)).collect();
                assert!(revs.iter().all(|&r| (2..=HISTORY_PUTS + 1).contains(&r)), "history only: {revs:?}");
                assert!(revs.windows(2).all(|w| w[0] < w[1]) && revs[0] > last_rev, "in order: {revs:?}");
                open = Some((id, revs[revs.len() - 1]));
            }
        }
    }
    let last_put = writer.await.expect("writer");
    let peak = peak_rss_kib(pid);
    assert!(peak < MAX_PEAK_RSS_KIB, "the server's peak RSS was {peak} KiB");
    assert_eq!(last_put, HISTORY_PUTS + 21, "every put of the writer went through");
    drop(send);
    drop(server);
}
