//! The gRPC API in process, through the shared client port (`listener::serve`) as the binary
//! runs it: both protocols on one address, fragments, request size limits, error codes, and
//! methods we do not serve.

mod client_port;

use std::time::Duration;

use actix_server::ServerHandle;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;
use watchkv::Durability;
use watchkv_actors::gateway::Gateway;
use watchkv_actors::grpc::pb::etcdserverpb as pb;
use watchkv_actors::grpc::GrpcApi;
use watchkv_actors::{ActorsConfig, Handle};

const DEADLINE: Duration = Duration::from_secs(20);

struct Served {
    port: u16,
    handle: Handle,
    server: ServerHandle,
    _dir: tempfile::TempDir,
}

/// A store and the client port on `127.0.0.1:0`, with fragments above `max_response_bytes`
/// and requests refused above `max_request_bytes`.
async fn serve(max_response_bytes: usize, max_request_bytes: usize) -> Served {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ActorsConfig::new(dir.path())
        .with_store(watchkv::StoreConfig::new(dir.path()).with_durability(Durability::Buffered))
        .with_watch(watchkv::WatchConfig::default().with_max_response_bytes(max_response_bytes));
    let handle = watchkv_actors::start(config).await.expect("start the store");
    let mut gw = Gateway::new(handle.clone());
    gw.max_request_bytes = max_request_bytes;
    let (port, server_handle) = client_port::serve_client_port(gw);
    Served { port, handle, server: server_handle, _dir: dir }
}

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE)
        .connect()
        .await
        .expect("connect")
}

async fn next(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a watch response within the deadline")
        .expect("watch stream error")
        .expect("watch stream ended")
}

#[actix_rt::test]
async fn one_port_serves_grpc_and_the_http_gateway() {
    let s = serve(2 << 20, 1 << 20).await;
    let mut kv = pb::kv_client::KvClient::new(channel(s.port).await);
    let put = kv.put(pb::PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() }).await;
    let rev = put.expect("gRPC put").into_inner().header.expect("header").revision;

    // The same port, HTTP/1.1: the gateway reads what gRPC wrote.
    let body = awc::Client::new()
        .post(format!("http://127.0.0.1:{}/v3/kv/range", s.port))
        .send_body(r#"{"key":"aw=="}"#)
        .await
        .expect("gateway request")
        .body()
        .await
        .expect("gateway body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["kvs"][0]["value"], "dg==", "{v}");
    assert_eq!(v["header"]["revision"], rev.to_string(), "{v}");

    // A method we do not serve answers Unimplemented at once.
    let mut maint = pb::maintenance_client::MaintenanceClient::new(channel(s.port).await);
    let downgrade = pb::DowngradeRequest { action: 0, version: "3.4".into() };
    let err = maint.downgrade(downgrade).await.expect_err("Downgrade is not served");
    assert_eq!(err.code(), Code::Unimplemented);
    // Adding a member is refused the same way, saying why (`actors/tests/membership.rs`).
    let mut cluster = pb::cluster_client::ClusterClient::new(channel(s.port).await);
    let err = cluster
        .member_add(pb::MemberAddRequest { peer_ur_ls: Vec::new(), is_learner: false })
        .await
        .expect_err("MemberAdd is refused");
    assert_eq!(err.code(), Code::Unimplemented);
    // So does a service we do not have: the client port's router answers it.
    let mut grpc = tonic::client::Grpc::new(channel(s.port).await);
    grpc.ready().await.expect("channel ready");
    let codec = tonic_prost::ProstCodec::<pb::RangeRequest, pb::RangeResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.NoSuchService/Range");
    let err =
        grpc.unary(tonic::Request::new(pb::RangeRequest::default()), path, codec).await.expect_err("no such service");
    assert_eq!(err.code(), Code::Unimplemented);
    s.server.stop(false).await;
    s.handle.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn errors_carry_etcds_grpc_codes_and_texts() {
    let s = serve(2 << 20, 4096).await;
    let mut kv = pb::kv_client::KvClient::new(channel(s.port).await);
    let put = |key: &str, value: Vec<u8>| pb::PutRequest { key: key.into(), value, ..Default::default() };
    for i in 0..3 {
        kv.put(put("a", vec![b'x'; i + 1])).await.expect("put");
    }
    kv.compact(pb::CompactionRequest { revision: 3, physical: false }).await.expect("compact");
    let cases: Vec<(pb::RangeRequest, Code, &str)> = vec![
        (
            pb::RangeRequest { key: b"a".to_vec(), revision: 2, ..Default::default() },
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            pb::RangeRequest { key: b"a".to_vec(), revision: 99, ..Default::default() },
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            pb::RangeRequest { key: b"a".to_vec(), sort_order: 9, ..Default::default() },
            Code::InvalidArgument,
            "etcdserver: invalid sort option",
        ),
        (pb::RangeRequest::default(), Code::InvalidArgument, "etcdserver: key is not provided"),
    ];
    for (req, code, text) in cases {
        let err = kv.range(req.clone()).await.expect_err("an error");
        assert_eq!((err.code(), err.message()), (code, text), "{req:?}");
    }
    // Above max-request-bytes (4 KiB here) but within gRPC's allowance: etcd's own error.
    let err = kv.put(put("big", vec![b'v'; 8000])).await.expect_err("too large");
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: request is too large"));
    // Beyond gRPC's allowance (max-request-bytes + 512 KiB): refused by the transport, with
    // grpc-go's code and text, as etcd's server gives them.
    let err = kv.put(put("huge", vec![b'v'; 600 * 1024])).await.expect_err("too large for gRPC");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().starts_with("grpc: received message larger than max ("), "{err:?}");
    let mut lease = pb::lease_client::LeaseClient::new(channel(s.port).await);
    let err = lease.lease_revoke(pb::LeaseRevokeRequest { id: 77 }).await.expect_err("unknown lease");
    assert_eq!((err.code(), err.message()), (Code::NotFound, "etcdserver: requested lease not found"));
    let granted = lease.lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 5 }).await.expect("grant");
    assert_eq!(granted.into_inner().id, 5);
    let err = lease.lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 5 }).await.expect_err("exists");
    assert_eq!((err.code(), err.message()), (Code::FailedPrecondition, "etcdserver: lease already exists"));
    s.server.stop(false).await;
    s.handle.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_large_catch_up_arrives_in_fragments_that_add_up() {
    let s = serve(4096, 1 << 20).await;
    let mut kv = pb::kv_client::KvClient::new(channel(s.port).await);
    // One txn: 20 events of ~500 bytes at one revision, more than one 4 KiB response holds.
    let ops = (0..20)
        .map(|i| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: format!("f/{i:02}").into_bytes(),
                value: vec![b'v'; 500],
                ..Default::default()
            })),
        })
        .collect();
    let txn = kv.txn(pb::TxnRequest { success: ops, ..Default::default() }).await.expect("txn").into_inner();
    let rev = txn.header.expect("header").revision;

    let (tx, rx) = mpsc::channel(4);
    let mut watch = pb::watch_client::WatchClient::new(channel(s.port).await);
    let create = |fragment| pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: b"f/".to_vec(),
            range_end: b"f0".to_vec(),
            start_revision: rev,
            fragment,
            ..Default::default()
        })),
    };
    tx.send(create(true)).await.expect("send create");
    let mut stream = watch.watch(ReceiverStream::new(rx)).await.expect("watch").into_inner();
    let created = next(&mut stream).await;
    assert!(created.created);
    let mut pieces = Vec::new();
    let mut events = 0;
    loop {
        let r = next(&mut stream).await;
        assert_eq!(r.watch_id, created.watch_id);
        events += r.events.len();
        pieces.push(r.fragment);
        if !r.fragment {
            break;
        }
    }
    assert!(pieces.len() > 1, "a response above 4 KiB is split: {pieces:?}");
    assert_eq!(events, 20, "the pieces add up to the whole revision");

    // Without `fragment`, the same revision comes whole, however large.
    tx.send(create(false)).await.expect("send create");
    let created = next(&mut stream).await;
    assert!(created.created);
    let whole = next(&mut stream).await;
    assert_eq!((whole.events.len(), whole.fragment), (20, false));
    drop(tx);
    s.server.stop(false).await;
    s.handle.shutdown().await.expect("shutdown");
}

/// An embedder's own tonic server with `GrpcApi::routes()` (README, "Embedding"): the same
/// services (Watch included), the same request limit, Unimplemented for what we do not serve.
#[actix_rt::test]
async fn routes_serve_an_embedders_tonic_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ActorsConfig::new(dir.path())
        .with_store(watchkv::StoreConfig::new(dir.path()).with_durability(Durability::Buffered));
    let handle = watchkv_actors::start(config).await.expect("start the store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let max_request_bytes = 1024;
    let gw = Gateway::new(handle.clone());
    let api = GrpcApi::new(handle.clone(), gw.header, max_request_bytes, vec![format!("http://127.0.0.1:{port}")]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(tonic::transport::Server::builder().add_routes(api.routes()).serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        ));

    let mut kv = pb::kv_client::KvClient::new(channel(port).await);
    let put = kv
        .put(pb::PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() })
        .await
        .expect("put")
        .into_inner();
    let revision = put.header.expect("header").revision;
    assert!(revision > 1, "a put moves the revision: {revision}");
    let range =
        kv.range(pb::RangeRequest { key: b"k".to_vec(), ..Default::default() }).await.expect("range").into_inner();
    assert_eq!(range.kvs.len(), 1);
    assert_eq!(range.kvs[0].value, b"v".to_vec());
    assert_eq!(range.kvs[0].mod_revision, revision);

    // Watch through the routes too: the put's event from its revision on.
    let (tx, rx) = mpsc::channel(4);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: b"k".to_vec(),
            start_revision: revision,
            ..Default::default()
        })),
    };
    tx.send(create).await.expect("send create");
    let mut watch = pb::watch_client::WatchClient::new(channel(port).await);
    let mut stream = watch.watch(ReceiverStream::new(rx)).await.expect("watch").into_inner();
    assert!(next(&mut stream).await.created);
    let event = next(&mut stream).await;
    let kvs: Vec<_> =
        event.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| (kv.key.clone(), kv.mod_revision)).collect();
    assert_eq!(kvs, vec![(b"k".to_vec(), revision)]);
    // The call ends when the client drops it (a graceful stop waits for open calls).
    drop((tx, stream, watch));

    let put =
        |key: &str, size: usize| pb::PutRequest { key: key.into(), value: vec![b'v'; size], ..Default::default() };
    let err = kv.put(put("big", max_request_bytes * 2)).await.expect_err("over max-request-bytes");
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: request is too large"));
    let err = kv.put(put("huge", 600 * 1024)).await.expect_err("over gRPC's allowance");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    let mut cluster = pb::cluster_client::ClusterClient::new(channel(port).await);
    let err = cluster
        .member_add(pb::MemberAddRequest { peer_ur_ls: Vec::new(), is_learner: false })
        .await
        .expect_err("MemberAdd is refused");
    assert_eq!(err.code(), Code::Unimplemented);

    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, server).await.expect("server stops").expect("join").expect("serve");
    handle.shutdown().await.expect("shutdown");
}

/// Shutting down as the binary does (stop accepting, then `Handle::shutdown`) lets a gRPC
/// connection finish (GOAWAY, then the calls in flight): a watch stream open on it ends with its
/// status (`Unavailable`, etcd's `server stopped`), where the worker used to drop the connection at once (the server did not count gRPC
/// connections, so it saw its workers idle) and every call on it failed with a transport error.
#[actix_rt::test]
async fn shutdown_ends_open_grpc_calls_with_their_status_not_a_cut_connection() {
    let s = serve(2 << 20, 1 << 20).await;
    let connection = channel(s.port).await;
    let (tx, rx) = mpsc::channel(4);
    let mut watch = pb::watch_client::WatchClient::new(connection.clone());
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })),
    };
    tx.send(create).await.expect("send create");
    let mut stream = watch.watch(ReceiverStream::new(rx)).await.expect("watch").into_inner();
    assert!(next(&mut stream).await.created);

    let stopping = s.server.stop(true);
    s.handle.shutdown().await.expect("shutdown");
    let end = tokio::time::timeout(DEADLINE, stream.message()).await.expect("the stream ends within the deadline");
    // `Unavailable`, which etcd's clients retry by reconnecting and resuming the watch; an OK
    // end reads to clientv3 as a fatal EOF that closes every watch channel.
    let end = end.map_err(|status| (status.code(), status.message().to_string()));
    assert_eq!(end, Err((Code::Unavailable, "etcdserver: server stopped".to_string())), "the watch stream's end");
    drop(tx);
    tokio::time::timeout(DEADLINE, stopping).await.expect("the server stops within the deadline");
}

/// A client that opens a gRPC connection with `PRI` and sends nothing more is closed after
/// `HANDSHAKE_TIMEOUT` (grpc-go closes it after its `ConnectionTimeout`), rather than holding a
/// descriptor and a connection slot forever; a client that sent its handshake and then idled
/// through the same time is served.
#[actix_rt::test]
async fn a_connection_that_stops_before_its_http2_handshake_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let s = serve(2 << 20, 1 << 20).await;
    let idle = channel(s.port).await;
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.expect("connect");
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.expect("the start of a preface");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    loop {
        let read = tokio::time::timeout(watchkv_actors::grpc::HANDSHAKE_TIMEOUT + DEADLINE, stalled.read(&mut buf))
            .await
            .expect("the stalled connection is closed within the deadline");
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(started.elapsed() >= watchkv_actors::grpc::HANDSHAKE_TIMEOUT / 2, "closed before its deadline");
    let mut kv = pb::kv_client::KvClient::new(idle);
    kv.range(pb::RangeRequest { key: b"k".to_vec(), ..Default::default() }).await.expect("the idle client is served");
}

/// A watch request the server cannot take (over the receive limit) ends the stream with the
/// error, as etcd's `Watch` returns its `recvLoop`'s error (grpc-go's text); it ended with OK,
/// which etcd's clients read as a fatal EOF.
#[actix_rt::test]
async fn a_watch_request_over_the_limit_ends_the_stream_with_grpc_gos_error() {
    let s = serve(2 << 20, 1 << 20).await;
    let (tx, rx) = mpsc::channel(4);
    let mut watch = pb::watch_client::WatchClient::new(channel(s.port).await);
    let create = |key: Vec<u8>| pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key,
            ..Default::default()
        })),
    };
    tx.send(create(b"k".to_vec())).await.expect("send create");
    let mut stream = watch.watch(ReceiverStream::new(rx)).await.expect("watch").into_inner();
    assert!(next(&mut stream).await.created);
    tx.send(create(vec![b'x'; 3 << 20])).await.expect("send an oversized create");
    let end = tokio::time::timeout(DEADLINE, stream.message()).await.expect("the stream ends within the deadline");
    let status = end.expect_err("the stream ends with an error");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("grpc: received message larger than max ("), "{status:?}");
    s.handle.shutdown().await.expect("shutdown");
}

/// etcd TestV3WatchClose and TestWatchCancelOnServer: 100 connections, each with a watch
/// stream whose watcher was created, all dropped at once: every stream and watcher is freed on
/// the server, which goes on serving a new watch.
#[actix_rt::test]
async fn f13_g10_dropped_connections_free_their_streams_and_watchers() {
    let s = serve(2 << 20, 1 << 20).await;
    let create = |key: String| pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.into_bytes(),
            ..Default::default()
        })),
    };
    let mut open = Vec::new();
    for i in 0..100 {
        let (tx, rx) = mpsc::channel(1);
        tx.send(create(format!("a{}", i % 10))).await.expect("send create");
        let mut watch = pb::watch_client::WatchClient::new(channel(s.port).await);
        let mut stream = watch.watch(ReceiverStream::new(rx)).await.expect("watch").into_inner();
        assert!(next(&mut stream).await.created);
        open.push((tx, stream, watch));
    }
    let st = s.handle.stats().await.expect("stats");
    assert_eq!((st.store.streams, st.store.synced), (100, 100), "{st:?}");
    drop(open);
    watchkv_actors::testing::wait_stats(&s.handle, "every stream and watcher freed", |st| {
        st.store.streams == 0 && st.store.synced + st.store.promoting + st.syncer.unsynced + st.victims.victims == 0
    })
    .await;

    let (tx, rx) = mpsc::channel(1);
    tx.send(create("a0".into())).await.expect("send create");
    let mut watch = pb::watch_client::WatchClient::new(channel(s.port).await);
    let mut stream = watch.watch(ReceiverStream::new(rx)).await.expect("watch").into_inner();
    assert!(next(&mut stream).await.created);
    let mut kv = pb::kv_client::KvClient::new(channel(s.port).await);
    let put = kv.put(pb::PutRequest { key: b"a0".to_vec(), value: b"v".to_vec(), ..Default::default() }).await;
    let rev = put.expect("put").into_inner().header.expect("header").revision;
    let event = next(&mut stream).await;
    assert_eq!(
        event.events.iter().map(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision)).collect::<Vec<_>>(),
        vec![rev]
    );
}
