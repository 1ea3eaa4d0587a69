//! Auth through the `etcd-client` crate and etcd 3.5's `AuthStatus` (which etcdctl 3.4 lacks):
//! the auth revision counts every change as etcd's does, a user's token works only within its
//! permissions, and the auth store survives a SIGKILL restart and a snapshot restore.

mod wire;

use std::process::Command;

use etcd_client::{Client, ConnectOptions, Permission};
use tonic::transport::Channel;
use watchkv::{KvStore, StoreConfig};
use watchkv_actors::api::pb::etcdserverpb as pb;
use wire::users::add_root_and_alice;
use wire::{free_port, start_watchkv, Proc, DEADLINE};

async fn connect(port: u16, user: Option<(&str, &str)>) -> Client {
    let mut opts = ConnectOptions::new().with_connect_timeout(DEADLINE).with_timeout(DEADLINE);
    if let Some((name, password)) = user {
        opts = opts.with_user(name, password);
    }
    Client::connect([format!("127.0.0.1:{port}")], Some(opts)).await.expect("connect etcd-client")
}

async fn auth_client(port: u16) -> pb::auth_client::AuthClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE)
        .connect()
        .await
        .expect("connect");
    pb::auth_client::AuthClient::new(channel)
}

/// `AuthStatus` with `token` (none: anonymous): `(enabled, auth revision)` or the error.
async fn status(port: u16, token: Option<&str>) -> Result<(bool, u64), tonic::Status> {
    let mut request = tonic::Request::new(pb::AuthStatusRequest {});
    if let Some(token) = token {
        request.metadata_mut().insert("token", token.parse().expect("ascii token"));
    }
    let resp = auth_client(port).await.auth_status(request).await?.into_inner();
    Ok((resp.enabled, resp.auth_revision))
}

async fn token(port: u16, name: &str, password: &str) -> String {
    let req = pb::AuthenticateRequest { name: name.into(), password: password.into() };
    auth_client(port).await.authenticate(req).await.expect("authenticate").into_inner().token
}

/// A server (buffered, cheap bcrypt) with `root` and `alice` ([`add_root_and_alice`]), auth
/// still off: its directory, process, port and an anonymous client.
async fn serve_with_root_and_alice() -> (tempfile::TempDir, Proc, u16, Client) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    // A token TTL of 0 is etcd's default (300 s), as etcd takes it.
    let args = ["--durability", "buffered", "--bcrypt-cost", "4", "--auth-token-ttl", "0"];
    let server = tokio::task::spawn_blocking(move || start_watchkv(&data, port, &args)).await.expect("start");
    let mut admin = connect(port, None).await;
    add_root_and_alice(&mut admin).await;
    (dir, server, port, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_status_tokens_and_the_auth_store_across_restart_and_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let args = ["--durability", "buffered", "--bcrypt-cost", "4"];
    let data2 = data.clone();
    let mut server = tokio::task::spawn_blocking(move || start_watchkv(&data2, port, &args)).await.expect("start");

    let mut admin = connect(port, None).await;
    assert_eq!(status(port, None).await.map_err(|e| e.message().to_string()), Ok((false, 1)), "a fresh store");
    add_root_and_alice(&mut admin).await;
    admin.auth_enable().await.expect("enable");

    // Six changes after the first revision; enabling does not count, as in etcd.
    let root = token(port, "root", "rootpw").await;
    assert_eq!(status(port, Some(&root)).await.map_err(|e| e.message().to_string()), Ok((true, 7)));
    let anonymous = status(port, None).await.expect_err("AuthStatus needs the root role");
    assert_eq!(
        (anonymous.code(), anonymous.message()),
        (tonic::Code::InvalidArgument, "etcdserver: user name is empty")
    );
    let alice_token = token(port, "alice", "apw").await;
    let denied = status(port, Some(&alice_token)).await.expect_err("alice is not root");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let bad = status(port, Some("not-a-token")).await.expect_err("an unknown token");
    assert_eq!((bad.code(), bad.message()), (tonic::Code::Unauthenticated, "etcdserver: invalid auth token"));

    let mut alice = connect(port, Some(("alice", "apw"))).await;
    alice.put("app/x", "1", None).await.expect("within her permissions");
    let refused = alice.put("other", "1", None).await.expect_err("outside them");
    assert!(refused.to_string().contains("etcdserver: permission denied"), "{refused}");

    // A SIGKILL restart keeps the auth store (tokens are in memory: they end).
    server.kill9();
    let data2 = data.clone();
    let _server = tokio::task::spawn_blocking(move || start_watchkv(&data2, port, &args)).await.expect("restart");
    let stale = status(port, Some(&root)).await.expect_err("tokens end with the process");
    assert_eq!(stale.code(), tonic::Code::Unauthenticated);
    let root = token(port, "root", "rootpw").await;
    assert_eq!(status(port, Some(&root)).await.map_err(|e| e.message().to_string()), Ok((true, 7)));
    let mut alice = connect(port, Some(("alice", "apw"))).await;
    alice.put("app/y", "2", None).await.expect("alice after the restart");

    // A snapshot (root only) carries the auth store.
    let mut root_client = connect(port, Some(("root", "rootpw"))).await;
    let refused = alice.snapshot().await;
    let refused = match refused {
        Ok(mut stream) => stream.message().await.expect_err("alice may not take a snapshot"),
        Err(e) => e,
    };
    assert!(refused.to_string().contains("permission denied"), "{refused}");
    let mut stream = root_client.snapshot().await.expect("snapshot");
    let mut bytes = Vec::new();
    while let Some(m) = tokio::time::timeout(DEADLINE, stream.message()).await.expect("in time").expect("stream") {
        bytes.extend_from_slice(m.blob());
    }
    let file = dir.path().join("snap.db");
    std::fs::write(&file, &bytes).expect("write the snapshot");
    let restored = dir.path().join("restored");
    let out = Command::new(env!("CARGO_BIN_EXE_watchkv"))
        .args(["snapshot", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .expect("restore");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = KvStore::open(StoreConfig::new(&restored)).expect("open the restored store");
    let auth = store.auth();
    assert!(auth.is_enabled());
    assert_eq!(auth.revision(), 7);
    assert_eq!(auth.user("alice").map(|u| u.roles.clone()), Some(vec!["app".to_string()]));
}

/// `Proclaim` and `Resign` write the leader key the client sends, which need not lie under the
/// election's name: as in etcd (whose recipe runs them as a txn on that key), the caller needs
/// read and write permission on the key itself, not on the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proclaim_and_resign_need_permission_on_the_key_they_write() {
    use etcd_client::{LeaderKey, ProclaimOptions, ResignOptions};

    let (_dir, _server, port, mut admin) = serve_with_root_and_alice().await;
    let secret_rev = admin.put("secret", "s", None).await.expect("put").header().expect("header").revision();
    admin.auth_enable().await.expect("enable");

    let mut alice = connect(port, Some(("alice", "apw"))).await;
    let forged = LeaderKey::new().with_name("app").with_key("secret").with_rev(secret_rev);
    let refused = alice
        .proclaim("taken", Some(ProclaimOptions::new().with_leader(forged.clone())))
        .await
        .expect_err("alice may not write `secret`");
    assert!(refused.to_string().contains("etcdserver: permission denied"), "{refused}");
    let refused =
        alice.resign(Some(ResignOptions::new().with_leader(forged))).await.expect_err("alice may not delete `secret`");
    assert!(refused.to_string().contains("etcdserver: permission denied"), "{refused}");
    let mut root = connect(port, Some(("root", "rootpw"))).await;
    let secret = root.get("secret", None).await.expect("get");
    let kv = secret.kvs().first().expect("`secret` is still there");
    assert_eq!((kv.value(), kv.mod_revision(), kv.lease()), (&b"s"[..], secret_rev, 0));

    // Her own leadership under `app/` she may proclaim and resign.
    let lease = alice.lease_grant(60, None).await.expect("lease").id();
    let won = alice.campaign("app", "v1", lease).await.expect("campaign");
    let leader = won.leader().expect("leader key").clone();
    alice.proclaim("v2", Some(ProclaimOptions::new().with_leader(leader.clone()))).await.expect("proclaim");
    let current = alice.get(leader.key(), None).await.expect("get");
    assert_eq!(current.kvs().first().map(|kv| kv.value()), Some(&b"v2"[..]));
    alice.resign(Some(ResignOptions::new().with_leader(leader.clone()))).await.expect("resign");
    assert_eq!(alice.get(leader.key(), None).await.expect("get").count(), 0);
}

/// What later etcd releases check and 3.4.23 did not, all on: a put inside a txn needs what a
/// plain put needs (read permission for `prev_kv`, write permission on its lease's keys);
/// `LeaseTimeToLive` with keys needs read permission on them; raising or clearing an alarm
/// needs the root role; a token given to any call must be valid. And as etcd: a request with an
/// empty key is refused for the key before permissions are checked, and a refused Lock or
/// Election call comes back as etcd's recipe reports it, `Unknown` with etcd's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_puts_lease_keys_alarms_tokens_and_coordination_refusals() {
    use etcd_client::{
        AlarmAction, AlarmOptions, AlarmType, LeaseTimeToLiveOptions, LockOptions, PutOptions, Txn, TxnOp,
    };
    use tonic::Code;

    let (_dir, _server, port, mut admin) = serve_with_root_and_alice().await;
    admin.role_grant_permission("app", Permission::write("w/k")).await.expect("write-only w/k");
    let lease = admin.lease_grant(60, None).await.expect("lease").id();
    admin.put("sec/x", "s", Some(PutOptions::new().with_lease(lease))).await.expect("a key alice may not touch");
    admin.auth_enable().await.expect("enable");
    let mut alice = connect(port, Some(("alice", "apw"))).await;
    let code_and_text = |e: etcd_client::Error| match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("a gRPC status, not {other}"),
    };
    let denied = (Code::PermissionDenied, "etcdserver: permission denied".to_string());

    // A txn's put: prev_kv needs read permission, a lease needs write permission on its keys.
    alice.put("w/k", "1", None).await.expect("she may write w/k");
    let put_prev = Txn::new().and_then([TxnOp::put("w/k", "2", Some(PutOptions::new().with_prev_key()))]);
    assert_eq!(alice.txn(put_prev).await.map_err(code_and_text).err(), Some(denied.clone()), "prev_kv of w/k");
    let put_leased = Txn::new().and_then([TxnOp::put("app/y", "1", Some(PutOptions::new().with_lease(lease)))]);
    assert_eq!(alice.txn(put_leased).await.map_err(code_and_text).err(), Some(denied.clone()), "lease holds sec/x");
    alice.txn(Txn::new().and_then([TxnOp::put("w/k", "3", None)])).await.expect("a plain txn put");

    // The keys of a lease, only to who may read them.
    let with_keys = Some(LeaseTimeToLiveOptions::new().with_keys());
    assert_eq!(alice.lease_time_to_live(lease, with_keys).await.map_err(code_and_text).err(), Some(denied.clone()));
    alice.lease_time_to_live(lease, None).await.expect("without keys");

    // Alarms: raising or clearing one is root's.
    let raise = alice.alarm(AlarmAction::Activate, AlarmType::Nospace, Some(AlarmOptions::new())).await;
    assert_eq!(raise.map_err(code_and_text).err(), Some(denied.clone()));
    alice.alarm(AlarmAction::Get, AlarmType::None, None).await.expect("listing");
    let mut root = connect(port, Some(("root", "rootpw"))).await;
    root.alarm(AlarmAction::Activate, AlarmType::Nospace, Some(AlarmOptions::new())).await.expect("root raises");
    root.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(AlarmOptions::new())).await.expect("and clears");

    // An empty key is refused for the key, as etcd validates before it checks permissions.
    let empty = alice.get("", None).await.map_err(code_and_text).err();
    assert_eq!(empty, Some((Code::InvalidArgument, "etcdserver: key is not provided".to_string())));

    // A bad token is refused even where no permission is needed.
    let channel =
        Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("url").connect().await.expect("connect");
    let mut lease_client = pb::lease_client::LeaseClient::new(channel);
    // Since the fix for CVE-2026-33413 (etcd 3.4.42, 3.5.28, 3.6.9) the calls that need no
    // permission still need a user: without one, each is `user name is empty`.
    let empty = (Code::InvalidArgument, "etcdserver: user name is empty".to_string());
    let anonymous = |r: Result<(), tonic::Status>| r.map_err(|s| (s.code(), s.message().to_string())).err();
    for id in [lease, 12_345] {
        for keys in [true, false] {
            let ask = pb::LeaseTimeToLiveRequest { id, keys };
            assert_eq!(anonymous(lease_client.lease_time_to_live(ask).await.map(drop)), Some(empty.clone()));
        }
    }
    let grant = pb::LeaseGrantRequest { ttl: 60, id: 0 };
    assert_eq!(anonymous(lease_client.lease_grant(grant).await.map(drop)), Some(empty.clone()));
    let leases = lease_client.lease_leases(pb::LeaseLeasesRequest {}).await.map(drop);
    assert_eq!(anonymous(leases), Some(empty.clone()));
    let revoke = lease_client.lease_revoke(pb::LeaseRevokeRequest { id: 12_345 }).await.map(drop);
    assert_eq!(anonymous(revoke), Some(empty.clone()));
    let mut maintenance = pb::maintenance_client::MaintenanceClient::new(channel_to(port).await);
    assert_eq!(anonymous(maintenance.status(pb::StatusRequest {}).await.map(drop)), Some(empty.clone()));
    let list_alarms = pb::AlarmRequest { action: 0, member_id: 0, alarm: 0 };
    assert_eq!(anonymous(maintenance.alarm(list_alarms).await.map(drop)), Some(empty.clone()));
    let mut cluster = pb::cluster_client::ClusterClient::new(channel_to(port).await);
    let members = cluster.member_list(pb::MemberListRequest::default()).await.map(drop);
    assert_eq!(anonymous(members), Some(empty.clone()));
    let mut kv = pb::kv_client::KvClient::new(channel_to(port).await);
    let compact = kv.compact(pb::CompactionRequest { revision: 1, physical: false }).await.map(drop);
    assert_eq!(anonymous(compact), Some(empty.clone()));
    // With a user: these answer; compaction needs the root role; listing leases needs read
    // permission on their keys and a keep-alive write permission, unless root.
    alice.status().await.expect("alice's Status");
    alice.member_list().await.expect("alice's MemberList");
    alice.alarm(AlarmAction::Get, AlarmType::None, None).await.expect("alice lists alarms");
    let refused = alice.compact(1, None).await.map_err(code_and_text).err();
    assert_eq!(refused, Some(denied.clone()), "compaction needs the root role");
    assert_eq!(alice.leases().await.map_err(code_and_text).err(), Some(denied.clone()), "the lease holds sec/x");
    let kept = match alice.lease_keep_alive(lease).await {
        Ok((mut keeper, mut answers)) => match keeper.keep_alive().await {
            Ok(()) => tokio::time::timeout(DEADLINE, answers.message()).await.expect("an answer in time").map(|_| ()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    assert_eq!(kept.map_err(code_and_text).err(), Some(denied.clone()), "renewing a lease that holds sec/x");
    let mut root_client = connect(port, Some(("root", "rootpw"))).await;
    root_client.leases().await.expect("root lists every lease");
    let (mut keeper, mut renewed) = root_client.lease_keep_alive(lease).await.expect("root renews");
    keeper.keep_alive().await.expect("send a renewal");
    let answer = tokio::time::timeout(DEADLINE, renewed.message()).await.expect("in time").expect("a renewal");
    assert!(answer.as_ref().is_some_and(|r| r.ttl() > 0), "{answer:?}");
    for token in ["bogus", ""] {
        let mut grant = tonic::Request::new(pb::LeaseGrantRequest { ttl: 60, id: 0 });
        grant.metadata_mut().insert("token", token.parse().expect("ascii"));
        let refused = lease_client.lease_grant(grant).await.expect_err("an invalid token");
        assert_eq!((refused.code(), refused.message()), (Code::Unauthenticated, "etcdserver: invalid auth token"));
    }

    // Lock and Election refusals: etcd's text, code Unknown.
    let refused = alice.lock("zz", None).await.map_err(code_and_text).err();
    assert_eq!(refused, Some((Code::Unknown, "etcdserver: permission denied".to_string())));
    let refused = alice.leader("zz").await.map_err(code_and_text).err();
    assert_eq!(refused, Some((Code::Unknown, "etcdserver: permission denied".to_string())));
    // A lock or campaign attaches its key to the caller's lease, so it needs write permission on
    // the lease's keys, as a txn's put does: alice may write app/ but not sec/x, which `lease`
    // holds. Without the check she could tie a key to admin's lease, whose keep-alive and revoke
    // would then need permission on her key.
    let leased = LockOptions::new().with_lease(lease);
    let refused = alice.lock("app/l", Some(leased)).await.map_err(code_and_text).err();
    assert_eq!(refused, Some((Code::Unknown, "etcdserver: permission denied".to_string())), "lock on admin's lease");
    let refused = alice.campaign("app/e", "v", lease).await.map_err(code_and_text).err();
    assert_eq!(
        refused,
        Some((Code::Unknown, "etcdserver: permission denied".to_string())),
        "campaign on admin's lease"
    );
    let own = alice.lease_grant(60, None).await.expect("alice's lease").id();
    alice.lock("app/l", Some(LockOptions::new().with_lease(own))).await.expect("a lock on her own lease");
    alice.campaign("app/e", "v", own).await.expect("a campaign on her own lease");

    // The gateway takes a token from `Grpc-Metadata-Token` too, before `Authorization` (or
    // `Grpc-Metadata-Authorization`), as etcd's gateway hands them on and etcd reads `token`
    // first.
    let alice_token = token(port, "alice", "apw").await;
    let range = |headers: Vec<(&'static str, String)>| async move {
        tokio::task::spawn_blocking(move || gateway_range(port, "w/k", &headers)).await.expect("request")
    };
    assert_eq!(range(vec![("Grpc-Metadata-Token", "bogus".into())]).await.0, 401);
    assert_eq!(range(vec![("Grpc-Metadata-Token", alice_token.clone())]).await.0, 403, "alice may not read w/k");
    let both = vec![("Grpc-Metadata-Token", "bogus".into()), ("Authorization", alice_token.clone())];
    assert_eq!(range(both).await.0, 401, "the metadata token is the one read");
    root.role_grant_permission("app", Permission::read("w/k")).await.expect("read w/k");
    assert_eq!(range(vec![("Grpc-Metadata-Token", alice_token.clone())]).await.0, 200);
    assert_eq!(range(vec![("Grpc-Metadata-Authorization", alice_token.clone())]).await.0, 200);
    assert_eq!(range(vec![("Grpc-Metadata-Authorization", "bogus".into())]).await.0, 401);

    // A watch of every key from "" is checked as from "\0", the smallest key, as etcd checks
    // it: a grant from "\0" (etcdctl's `--prefix ""`) covers it.
    let mut watch_client = pb::watch_client::WatchClient::new(channel_to(port).await);
    let everything = |key: &[u8]| pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.to_vec(),
            range_end: b"\0".to_vec(),
            ..Default::default()
        })),
    };
    // A negative start revision is refused before the permission check, as etcd's `recvLoop`
    // refuses it: with its text, not `permission denied`.
    {
        use futures::StreamExt as _;
        let negative = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: b"sec/x".to_vec(),
                start_revision: -1,
                ..Default::default()
            })),
        };
        let mut create = tonic::Request::new(futures::stream::iter([negative]).chain(futures::stream::pending()));
        create.metadata_mut().insert("token", alice_token.parse().expect("ascii"));
        let mut responses = watch_client.watch(create).await.expect("watch").into_inner();
        let refused = tokio::time::timeout(DEADLINE, responses.message()).await.expect("in time");
        let refused = refused.expect("a response").expect("created");
        assert!(refused.created && refused.canceled, "{refused:?}");
        assert_eq!(refused.cancel_reason, "etcdserver: mvcc: required revision has been compacted", "{refused:?}");
    }
    for (granted, key) in [(false, &b""[..]), (true, b""), (true, b"\0")] {
        if granted {
            root.role_grant_permission("app", Permission::read("\0").with_from_key()).await.expect("from \\0");
        }
        use futures::StreamExt as _;
        let requests = futures::stream::iter([everything(key)]).chain(futures::stream::pending());
        let mut create = tonic::Request::new(requests);
        create.metadata_mut().insert("token", alice_token.parse().expect("ascii"));
        let mut responses = watch_client.watch(create).await.expect("watch").into_inner();
        let created = tokio::time::timeout(DEADLINE, responses.message()).await.expect("in time");
        let created = created.expect("a response").expect("created");
        assert!(created.created, "{created:?}");
        assert_eq!(created.canceled, !granted, "key {key:?}, granted {granted}: {created:?}");
    }

    // etcd TestWatchWithLowPermissionUser: read on exactly one key does not cover a watch from
    // it to the end of the keyspace, which is refused with its reason; nothing under the wider
    // range reaches the stream, whose permitted watch of the key itself sees only that key.
    let from_nul = etcd_client::RoleRevokePermissionOptions::new().with_from_key();
    root.role_revoke_permission("app", "\0", Some(from_nul)).await.expect("revoke the read from \\0");
    root.role_grant_permission("app", Permission::read("h4")).await.expect("read h4");
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut create = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
        create.metadata_mut().insert("token", alice_token.parse().expect("ascii"));
        let watch = |key: &str, range_end: &[u8]| pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: key.into(),
                range_end: range_end.to_vec(),
                ..Default::default()
            })),
        };
        tx.send(watch("h4", b"\0")).expect("send");
        let mut responses = watch_client.watch(create).await.expect("watch").into_inner();
        let mut next =
            async || tokio::time::timeout(DEADLINE, responses.message()).await.expect("in time").expect("a response");
        let refused = next().await.expect("a response");
        assert!(refused.created && refused.canceled, "{refused:?}");
        // etcd's text: `rpctypes.ErrGRPCPermissionDenied.Error()`, a gRPC status printed whole
        // (clientv3 turns it back into `etcdserver: permission denied`).
        let reason = "rpc error: code = PermissionDenied desc = etcdserver: permission denied";
        assert_eq!(refused.cancel_reason, reason, "{refused:?}");
        tx.send(watch("h4", b"")).expect("send");
        let created = next().await.expect("a response");
        assert!(created.created && !created.canceled, "{created:?}");
        root.put("h41", "outside", None).await.expect("put h41");
        let inside = root.put("h4", "inside", None).await.expect("put h4");
        let event = next().await.expect("a response");
        let revisions: Vec<(Vec<u8>, i64)> =
            event.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| (kv.key.clone(), kv.mod_revision)).collect();
        let inside_rev = inside.header().expect("header").revision();
        assert_eq!(revisions, vec![(b"h4".to_vec(), inside_rev)], "{event:?}");
        assert_eq!(event.watch_id, created.watch_id, "{event:?}");
    }
}

/// A new channel to the server's gRPC port.
async fn channel_to(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("url").connect().await.expect("connect")
}

/// `POST /v3/kv/range` of `key` with `headers`: the status and body.
fn gateway_range(port: u16, key: &str, headers: &[(&str, String)]) -> (u16, String) {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let body = format!(r#"{{"key":"{}"}}"#, base64::engine::general_purpose::STANDARD.encode(key));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut head = format!(
        "POST /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    stream.write_all(head.as_bytes()).expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}
