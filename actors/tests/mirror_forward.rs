//! Mirror mode's forwarding against a real etcd 3.4.23 over gRPC (`watchkv --upstream URL`):
//! puts, deletes, txns, compactions and lease calls (the keep-alive stream included) made on the
//! mirror go to etcd and are answered with etcd's revisions once the mirror has applied them, so
//! a serializable read on the mirror right after sees them and a watch opened next delivers
//! them; a compaction through the mirror compacts etcd but not the mirror's history; a
//! linearizable read on the mirror sees a write made on etcd directly just before; etcd's errors
//! come back with etcd's code and text. Lock and Election through the mirror (`etcd-client` and
//! the gateway) run on etcd's own services, and their keys are on the mirror when they answer;
//! a lock granted upstream whose caller left before the mirror held it is given back.

mod wire;

use etcd_client::{Client, ConnectOptions, GetOptions, LockOptions, ProclaimOptions, ResignOptions, WatchOptions};
use futures::StreamExt as _;
use serde_json::{json, Value};
use tonic::transport::Channel;
use watchkv_actors::api::pb::etcdserverpb::kv_client::KvClient;
use watchkv_actors::api::pb::etcdserverpb::lease_client::LeaseClient;
use watchkv_actors::api::pb::etcdserverpb::watch_client::WatchClient;
use watchkv_actors::api::pb::etcdserverpb::{
    compare, request_op, response_op, watch_request, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use wire::{b64, bytes_field, int, post, start_etcd, start_watchkv, DEADLINE};

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("url").connect().await.expect("connect")
}

fn range(key: &str, revision: i64, serializable: bool) -> RangeRequest {
    RangeRequest { key: key.into(), revision, serializable, ..RangeRequest::default() }
}

/// The value and mod revision of `key` read locally on the mirror (serializable: no waiting).
async fn local(kv: &mut KvClient<Channel>, key: &str) -> Option<(Vec<u8>, i64, i64)> {
    let resp = kv.range(range(key, 0, true)).await.expect("serializable range").into_inner();
    resp.kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision, kv.lease))
}

/// Runs `grpc` (against etcd's and the mirror's ports, within a deadline) and then `gateway`
/// against a fresh etcd 3.4.23 and a mirror of it.
fn with_etcd_and_mirror<F: std::future::Future<Output = ()>>(grpc: impl FnOnce(u16, u16) -> F, gateway: fn(u16, u16)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let url = format!("http://127.0.0.1:{}", etcd.port);
    let mirror = start_watchkv(&dir.path().join("mirror"), wire::free_port(), &["--upstream", &url]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(DEADLINE * 4, grpc(etcd.port, mirror.port)).await.expect("the scenario in time");
    });
    gateway(etcd.port, mirror.port);
    drop(mirror);
    drop(etcd);
}

#[test]
fn writes_and_leases_through_a_mirror_go_to_etcd_and_read_back_at_once() {
    with_etcd_and_mirror(scenario, gateway_scenario);
}

async fn scenario(etcd_port: u16, mirror_port: u16) {
    let (etcd_channel, mirror_channel) = (channel(etcd_port).await, channel(mirror_port).await);
    let mut etcd = KvClient::new(etcd_channel.clone());
    let mut kv = KvClient::new(mirror_channel.clone());
    let mut lease = LeaseClient::new(mirror_channel.clone());
    let mirror_identity =
        kv.range(range("x", 0, true)).await.expect("local range").into_inner().header.expect("header");

    // A put through the mirror: etcd's revision, the mirror's identity, readable locally at once.
    let put = kv
        .put(PutRequest { key: "a".into(), value: "1".into(), ..PutRequest::default() })
        .await
        .expect("put through the mirror")
        .into_inner();
    let header = put.header.expect("header");
    let on_etcd = etcd.range(range("a", 0, false)).await.expect("etcd range").into_inner();
    assert_eq!(on_etcd.kvs[0].mod_revision, header.revision, "the put's revision is etcd's");
    assert_eq!(header.member_id, mirror_identity.member_id, "the mirror's identity");
    assert_eq!(local(&mut kv, "a").await, Some((b"1".to_vec(), header.revision, 0)), "read-your-writes");

    // A watch opened next on the mirror, from that revision, delivers it.
    let mut watch = WatchClient::new(mirror_channel.clone());
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key: "a".into(),
            start_revision: header.revision,
            ..WatchCreateRequest::default()
        })),
    };
    let requests = futures::stream::iter([create]).chain(futures::stream::pending());
    let mut responses = watch.watch(requests).await.expect("watch").into_inner();
    let event = loop {
        let resp = responses.message().await.expect("watch response").expect("stream open");
        if let Some(e) = resp.events.first() {
            break e.clone();
        }
    };
    let kv_event = event.kv.expect("kv");
    assert_eq!((kv_event.key, kv_event.value, kv_event.mod_revision), (b"a".to_vec(), b"1".to_vec(), header.revision));

    // A delete with prev_kv.
    let deleted = kv
        .delete_range(DeleteRangeRequest { key: "a".into(), prev_kv: true, ..DeleteRangeRequest::default() })
        .await
        .expect("delete through the mirror")
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.prev_kvs[0].value, b"1");
    assert!(deleted.header.expect("header").revision > header.revision);
    assert_eq!(local(&mut kv, "a").await, None, "the delete is applied before it is answered");

    // A txn that writes: compare on etcd's revisions, both branches' puts.
    let txn = TxnRequest {
        compare: vec![Compare {
            key: "a".into(),
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Version as i32,
            target_union: Some(compare::TargetUnion::Version(0)),
            ..Compare::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: "t".into(),
                value: "won".into(),
                ..PutRequest::default()
            })),
        }],
        failure: vec![],
    };
    let txn = kv.txn(txn).await.expect("txn through the mirror").into_inner();
    assert!(txn.succeeded);
    let txn_revision = txn.header.expect("header").revision;
    assert!(matches!(txn.responses[0].response, Some(response_op::Response::ResponsePut(_))));
    assert_eq!(local(&mut kv, "t").await, Some((b"won".to_vec(), txn_revision, 0)));

    // A lease granted through the mirror, a key put with it, kept alive through the mirror.
    let granted =
        lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.expect("grant through the mirror").into_inner();
    assert!(granted.id != 0 && granted.ttl == 60, "{granted:?}");
    let leased = kv
        .put(PutRequest { key: "l".into(), value: "v".into(), lease: granted.id, ..PutRequest::default() })
        .await
        .expect("leased put")
        .into_inner();
    let leased_revision = leased.header.expect("header").revision;
    assert_eq!(local(&mut kv, "l").await, Some((b"v".to_vec(), leased_revision, granted.id)));
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tx.unbounded_send(LeaseKeepAliveRequest { id: granted.id }).expect("send");
    let mut alive = lease.lease_keep_alive(rx).await.expect("keep-alive stream").into_inner();
    let renewed = alive.message().await.expect("keep-alive answer").expect("stream open");
    assert_eq!((renewed.id, renewed.ttl), (granted.id, 60));
    drop(tx);
    let ttl = lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id: granted.id, keys: true })
        .await
        .expect("time to live")
        .into_inner();
    assert_eq!((ttl.granted_ttl, ttl.keys), (60, vec![b"l".to_vec()]));
    let leases = lease.lease_leases(LeaseLeasesRequest {}).await.expect("leases").into_inner();
    assert!(leases.leases.iter().any(|l| l.id == granted.id));
    lease.lease_revoke(LeaseRevokeRequest { id: granted.id }).await.expect("revoke through the mirror");
    assert_eq!(local(&mut kv, "l").await, None, "the revoke's deletion is applied before it is answered");

    // An upstream error comes back with etcd's code and text.
    let missing = LeaseRevokeRequest { id: granted.id };
    let from_mirror = lease.lease_revoke(missing).await.expect_err("no such lease");
    let from_etcd = LeaseClient::new(etcd_channel.clone()).lease_revoke(missing).await.expect_err("no such lease");
    assert_eq!((from_mirror.code(), from_mirror.message()), (from_etcd.code(), from_etcd.message()));
    assert_eq!(from_mirror.message(), "etcdserver: requested lease not found");

    // A write made on etcd directly is seen by a linearizable read on the mirror issued next.
    for i in 0..20 {
        let direct = etcd
            .put(PutRequest { key: "direct".into(), value: format!("{i}").into(), ..PutRequest::default() })
            .await
            .expect("put on etcd")
            .into_inner();
        let read = kv.range(range("direct", 0, false)).await.expect("linearizable range").into_inner();
        let direct_revision = direct.header.expect("header").revision;
        assert!(read.header.expect("header").revision >= direct_revision);
        assert_eq!(
            (read.kvs[0].value.clone(), read.kvs[0].mod_revision),
            (format!("{i}").into_bytes(), direct_revision)
        );
    }

    // A revision above upstream's current one: etcd's future-revision error.
    let current = etcd.range(range("x", 0, false)).await.expect("etcd range").into_inner().header.expect("h").revision;
    let future = kv.range(range("x", current + 100, false)).await.expect_err("future revision");
    let etcd_future = etcd.range(range("x", current + 100, false)).await.expect_err("future revision");
    assert_eq!((future.code(), future.message()), (etcd_future.code(), etcd_future.message()));

    // A compaction through the mirror compacts etcd, not the mirror's history.
    kv.compact(CompactionRequest { revision: txn_revision, physical: true }).await.expect("compact through the mirror");
    let old = etcd.range(range("t", txn_revision - 1, false)).await.expect_err("compacted on etcd");
    assert_eq!(old.message(), "etcdserver: mvcc: required revision has been compacted");
    let kept = kv.range(range("t", txn_revision - 1, true)).await.expect("the mirror keeps its history").into_inner();
    assert!(kept.kvs.is_empty(), "t did not exist before the txn");
    let at_put = kv.range(range("a", header.revision, true)).await.expect("history").into_inner();
    assert_eq!(at_put.kvs[0].value, b"1", "the mirror still holds the deleted key at its put's revision");
    drop(alive);
}

fn ok(port: u16, path: &str, body: &Value) -> Value {
    let reply = post(port, path, body);
    assert_eq!(reply.status, 200, "{path} on port {port}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

/// The same through the mirror's HTTP/JSON gateway.
fn gateway_scenario(etcd: u16, mirror: u16) {
    let serializable = |key: &str| {
        let resp = ok(mirror, "/v3/kv/range", &json!({"key": b64(key), "serializable": true}));
        resp["kvs"].as_array().and_then(|kvs| kvs.first()).map(|kv| (bytes_field(kv, "value"), int(kv, "mod_revision")))
    };
    let put = ok(mirror, "/v3/kv/put", &json!({"key": b64("g"), "value": b64("1")}));
    let put_revision = int(&put["header"], "revision");
    let on_etcd = ok(etcd, "/v3/kv/range", &json!({"key": b64("g")}));
    assert_eq!(int(&on_etcd["kvs"][0], "mod_revision"), put_revision, "etcd's revision");
    assert_eq!(serializable("g"), Some((b"1".to_vec(), put_revision)), "read-your-writes");

    let txn = json!({"success": [{"request_put": {"key": b64("g"), "value": b64("2"), "prev_kv": true}}]});
    let txn = ok(mirror, "/v3/kv/txn", &txn);
    let txn_revision = int(&txn["header"], "revision");
    assert_eq!(bytes_field(&txn["responses"][0]["response_put"]["prev_kv"], "value"), b"1");
    assert_eq!(serializable("g"), Some((b"2".to_vec(), txn_revision)));

    let deleted = ok(mirror, "/v3/kv/deleterange", &json!({"key": b64("g"), "prev_kv": true}));
    assert_eq!(int(&deleted, "deleted"), 1);
    assert_eq!(serializable("g"), None);

    let granted = ok(mirror, "/v3/lease/grant", &json!({"TTL": "60"}));
    let id = int(&granted, "ID");
    let on_etcd = ok(etcd, "/v3/lease/timetolive", &json!({"ID": id.to_string()}));
    assert_eq!(int(&on_etcd, "grantedTTL"), 60, "the lease lives on etcd: {on_etcd}");
    let alive = post(mirror, "/v3/lease/keepalive", &json!({"ID": id.to_string()}));
    let alive = alive.json_lines();
    assert_eq!((int(&alive[0]["result"], "ID"), int(&alive[0]["result"], "TTL")), (id, 60), "{alive:?}");
    let leases = ok(mirror, "/v3/lease/leases", &json!({}));
    assert!(leases["leases"].as_array().into_iter().flatten().any(|l| int(l, "ID") == id), "{leases}");
    ok(mirror, "/v3/lease/revoke", &json!({"ID": id.to_string()}));
    let missing = post(mirror, "/v3/lease/revoke", &json!({"ID": id.to_string()}));
    let from_etcd = post(etcd, "/v3/lease/revoke", &json!({"ID": id.to_string()}));
    assert_eq!((missing.status, missing.json()["code"].clone()), (from_etcd.status, from_etcd.json()["code"].clone()));
    assert_eq!(missing.json()["message"], json!("etcdserver: requested lease not found"));

    // Compaction through the gateway compacts etcd only.
    ok(mirror, "/v3/kv/compaction", &json!({"revision": txn_revision.to_string()}));
    let old = post(etcd, "/v3/kv/range", &json!({"key": b64("g"), "revision": put_revision.to_string()}));
    assert_eq!(old.status, 400, "compacted on etcd");
    let kept = ok(mirror, "/v3/kv/range", &json!({"key": b64("g"), "revision": put_revision.to_string()}));
    assert_eq!(bytes_field(&kept["kvs"][0], "value"), b"1", "the mirror keeps its history");

    // A linearizable read through the gateway sees a write made on etcd just before.
    for i in 0..10 {
        let value = format!("{i}");
        let direct =
            int(&ok(etcd, "/v3/kv/put", &json!({"key": b64("d"), "value": b64(&value)}))["header"], "revision");
        let read = ok(mirror, "/v3/kv/range", &json!({"key": b64("d")}));
        assert_eq!(
            (bytes_field(&read["kvs"][0], "value"), int(&read["kvs"][0], "mod_revision")),
            (value.into_bytes(), direct)
        );
    }
}

#[test]
fn lock_and_election_through_a_mirror_run_on_etcd_and_read_back_at_once() {
    with_etcd_and_mirror(coordination_scenario, gateway_lock_scenario);
}

async fn connect(port: u16) -> Client {
    let opts = ConnectOptions::new().with_connect_timeout(DEADLINE).with_timeout(DEADLINE);
    Client::connect([format!("127.0.0.1:{port}")], Some(opts)).await.expect("connect etcd-client")
}

/// `code: message` of a failed call.
fn status(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn serializable() -> Option<GetOptions> {
    Some(GetOptions::new().with_serializable())
}

/// The key of the next put on `watch`.
async fn next_put(watch: &mut etcd_client::WatchStream) -> Vec<u8> {
    loop {
        let resp = watch.message().await.expect("watch response").expect("watch open");
        if let Some(kv) = resp.events().iter().find_map(|e| e.kv()) {
            return kv.key().to_vec();
        }
    }
}

/// The next proclamation on `observe`: its value and mod revision.
async fn next_proclamation(observe: &mut etcd_client::ObserveStream) -> (String, i64) {
    let resp = observe.message().await.expect("observe response").expect("observe open");
    let kv = resp.kv().expect("kv");
    (kv.value_str().expect("utf-8").to_owned(), kv.mod_revision())
}

async fn coordination_scenario(etcd_port: u16, mirror_port: u16) {
    let (mut c, mut etcd) = (connect(mirror_port).await, connect(etcd_port).await);
    let mirror_id = c.get("x", serializable()).await.expect("local get").header().expect("header").member_id();
    let a = c.lease_grant(60, None).await.expect("grant A through the mirror").id();
    let b = c.lease_grant(60, None).await.expect("grant B through the mirror").id();

    // A locks through the mirror: the key is etcd's, at the answer's revision, and the mirror
    // holds it when the answer comes.
    let locked_a = c.lock("L", Some(LockOptions::new().with_lease(a))).await.expect("lock A");
    let revision = locked_a.header().expect("header").revision();
    assert_eq!(locked_a.header().expect("header").member_id(), mirror_id, "the mirror's identity");
    let on_etcd = etcd.get(locked_a.key(), None).await.expect("get on etcd");
    assert_eq!((on_etcd.kvs()[0].create_revision(), on_etcd.kvs()[0].lease()), (revision, a), "etcd holds the key");
    let on_mirror = c.get(locked_a.key(), serializable()).await.expect("serializable get");
    assert_eq!(on_mirror.kvs().iter().map(|kv| kv.mod_revision()).collect::<Vec<_>>(), [revision], "read-your-writes");

    // B, locking through the mirror, waits (its key appears on etcd) until A unlocks.
    let watch = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut keys = etcd.watch("L/", Some(watch)).await.expect("watch on etcd");
    let mut cb = c.clone();
    let b_task = tokio::spawn(async move { cb.lock("L", Some(LockOptions::new().with_lease(b))).await });
    let b_key = next_put(&mut keys).await;
    assert!(!b_task.is_finished(), "B must wait while A holds the lock");
    let unlocked = c.unlock(locked_a.key()).await.expect("unlock A through the mirror");
    assert!(c.get(locked_a.key(), serializable()).await.expect("get").kvs().is_empty(), "the unlock is applied");
    let locked_b =
        tokio::time::timeout(DEADLINE, b_task).await.expect("B locks in time").expect("task").expect("lock B");
    assert_eq!(locked_b.key(), b_key);
    // etcd answers with the revision at which no earlier key was left: the unlock's, or later.
    assert!(locked_b.header().expect("header").revision() >= unlocked.header().expect("header").revision());
    assert_eq!(c.get(locked_b.key(), serializable()).await.expect("get").kvs().len(), 1, "B's key is on the mirror");
    c.unlock(locked_b.key()).await.expect("unlock B");

    // A campaigns through the mirror; the leader through the mirror and on etcd agree.
    let won = c.campaign("E", "v1", a).await.expect("campaign through the mirror");
    let leader = won.leader().expect("leader key").clone();
    let view = |r: &etcd_client::LeaderResponse| {
        let kv = r.kv().expect("kv");
        (kv.key().to_vec(), kv.value().to_vec(), kv.create_revision(), kv.mod_revision(), kv.lease())
    };
    let through_mirror = view(&c.leader("E").await.expect("leader through the mirror"));
    assert_eq!(through_mirror, view(&etcd.leader("E").await.expect("leader on etcd")));
    assert_eq!(through_mirror, (leader.key().to_vec(), b"v1".to_vec(), leader.rev(), leader.rev(), a));

    // Observe through the mirror: the leader's value, then a proclamation through the mirror,
    // then one made on etcd directly.
    let mut observe = c.observe("E").await.expect("observe through the mirror");
    let first = tokio::time::timeout(DEADLINE, next_proclamation(&mut observe)).await.expect("in time");
    assert_eq!(first, ("v1".to_owned(), leader.rev()));
    let proclaim = || Some(ProclaimOptions::new().with_leader(leader.clone()));
    let proclaimed = c.proclaim("v2", proclaim()).await.expect("proclaim through the mirror");
    let proclaimed = proclaimed.header().expect("header").revision();
    let on_mirror = c.get(leader.key(), serializable()).await.expect("serializable get");
    assert_eq!(on_mirror.kvs()[0].value(), b"v2", "read-your-writes");
    let seen = tokio::time::timeout(DEADLINE, next_proclamation(&mut observe)).await.expect("in time");
    assert_eq!(seen, ("v2".to_owned(), proclaimed));
    let direct = etcd.proclaim("v3", proclaim()).await.expect("proclaim on etcd").header().expect("header").revision();
    let seen = tokio::time::timeout(DEADLINE, next_proclamation(&mut observe)).await.expect("in time");
    assert_eq!(seen, ("v3".to_owned(), direct));

    // Resign through the mirror: no leader, on the mirror as on etcd; etcd's errors keep their
    // code and text.
    c.resign(Some(ResignOptions::new().with_leader(leader.clone()))).await.expect("resign through the mirror");
    assert!(c.get(leader.key(), serializable()).await.expect("get").kvs().is_empty(), "the resign is applied");
    let no_leader = status(&c.leader("E").await.expect_err("no leader through the mirror"));
    assert_eq!(no_leader, status(&etcd.leader("E").await.expect_err("no leader on etcd")));
    assert_eq!(no_leader, "Unknown: election: no leader");
    let not_leader = status(&c.proclaim("v4", proclaim()).await.expect_err("not leader through the mirror"));
    assert_eq!(not_leader, status(&etcd.proclaim("v4", proclaim()).await.expect_err("not leader on etcd")));
    assert_eq!(not_leader, "Unknown: election: not leader");
}

/// A lock and an unlock through the mirror's gateway.
fn gateway_lock_scenario(etcd: u16, mirror: u16) {
    let id = int(&ok(mirror, "/v3/lease/grant", &json!({"TTL": "60"})), "ID");
    let locked = ok(mirror, "/v3/lock/lock", &json!({"name": b64("G"), "lease": id.to_string()}));
    let (key, revision) = (bytes_field(&locked, "key"), int(&locked["header"], "revision"));
    let on_etcd = ok(etcd, "/v3/kv/range", &json!({"key": b64(&key)}));
    assert_eq!(int(&on_etcd["kvs"][0], "create_revision"), revision, "etcd holds the key: {on_etcd}");
    let on_mirror = ok(mirror, "/v3/kv/range", &json!({"key": b64(&key), "serializable": true}));
    assert_eq!(int(&on_mirror["kvs"][0], "mod_revision"), revision, "read-your-writes: {on_mirror}");
    ok(mirror, "/v3/lock/unlock", &json!({"key": b64(&key)}));
    let none = |v: &Value| v["kvs"].as_array().is_none_or(Vec::is_empty);
    assert!(none(&ok(mirror, "/v3/kv/range", &json!({"key": b64(&key), "serializable": true}))), "unlocked");
    assert!(none(&ok(etcd, "/v3/kv/range", &json!({"key": b64(&key)}))), "unlocked on etcd");
}

/// A mirror with auth on: its leases and their keys live upstream, so the checks that need a
/// lease's keys (revoking it, attaching a key to it) ask upstream for them.
#[test]
fn with_auth_on_a_mirror_lease_checks_see_upstreams_keys() {
    with_etcd_and_mirror(lease_checks_with_auth, |_, _| {});
}

async fn lease_checks_with_auth(_etcd_port: u16, mirror_port: u16) {
    use etcd_client::PutOptions;

    let mut admin = connect(mirror_port).await;
    wire::users::add_root_and_alice(&mut admin).await;
    admin.auth_enable().await.expect("enable");

    let as_user = |name: &'static str, password: &'static str| async move {
        let opts =
            ConnectOptions::new().with_connect_timeout(DEADLINE).with_timeout(DEADLINE).with_user(name, password);
        Client::connect([format!("127.0.0.1:{mirror_port}")], Some(opts)).await.expect("connect as a user")
    };
    let mut alice = as_user("alice", "apw").await;
    let mut root = as_user("root", "rootpw").await;
    let denied = |e: etcd_client::Error| status(&e).contains("etcdserver: permission denied");

    // A lease that holds a key alice may not write: she may neither revoke it nor attach to it.
    let guarded = root.lease_grant(60, None).await.expect("grant").id();
    root.put("sec/y", "1", Some(PutOptions::new().with_lease(guarded))).await.expect("root's key");
    let refused = alice.lease_revoke(guarded).await.expect_err("the lease holds sec/y");
    assert!(denied(refused));
    let refused = alice.put("app/z", "1", Some(PutOptions::new().with_lease(guarded))).await.expect_err("attach");
    assert!(denied(refused));
    assert_eq!(root.get("sec/y", None).await.expect("get").count(), 1, "the revoke did not happen");

    // Her own lease she may.
    let own = alice.lease_grant(60, None).await.expect("grant through the mirror").id();
    alice.put("app/x", "1", Some(PutOptions::new().with_lease(own))).await.expect("her own key");
    alice.lease_revoke(own).await.expect("her lease holds only her key");
    let gone = alice.get("app/x", None).await.expect("get");
    assert_eq!(gone.count(), 0, "the revoke deleted the key, and the mirror answered after applying it");
}

/// A Lock that upstream granted, whose caller went away while the mirror waited to hold the
/// grant's revision, is given back upstream rather than left held by nobody: here the local store
/// never follows upstream, so that wait cannot end, and the lock's key is deleted on etcd soon
/// after the call is dropped (its session lease would keep it 60 s).
#[test]
fn a_lock_granted_upstream_whose_caller_left_is_given_back() {
    use watchkv_actors::api::pb::v3lockpb::LockRequest;
    use watchkv_actors::forward::Upstream;
    use watchkv_actors::mirror::MirrorOptions;
    use watchkv_actors::upstream::{UpstreamEtcd, UpstreamTls};

    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let local = dir.path().join("local");
    actix_rt::System::new().block_on(async move {
        let mut kv = KvClient::new(channel(etcd.port).await);
        for i in 0..5 {
            let put = PutRequest { key: format!("k{i}").into(), value: b"v".to_vec(), ..PutRequest::default() };
            kv.put(put).await.expect("put on etcd");
        }
        let handle = watchkv_actors::start(watchkv_actors::ActorsConfig::new(&local)).await.expect("local store");
        let endpoints = [format!("http://127.0.0.1:{}", etcd.port)];
        let upstream = UpstreamEtcd::new(&endpoints, &UpstreamTls::default(), None).expect("upstream");
        let header = watchkv_actors::api::Header { cluster_id: 1, member_id: 1, raft_term: 1 };
        let forward = Upstream::new(handle.clone(), header, &MirrorOptions { upstream, prefix: Vec::new() });
        let held = |kv: KvClient<Channel>| async move {
            let mut kv = kv;
            let req = RangeRequest {
                key: b"held/".to_vec(),
                range_end: b"held0".to_vec(),
                count_only: true,
                ..RangeRequest::default()
            };
            kv.range(req).await.expect("range on etcd").into_inner().count
        };

        let mut lock = Box::pin(forward.lock(LockRequest { name: b"held".to_vec(), lease: 0 }));
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            // Polls the call a while, then looks for its key on etcd.
            if let Ok(answer) = tokio::time::timeout(std::time::Duration::from_millis(50), &mut lock).await {
                panic!("the local store cannot hold upstream's revision, yet Lock answered: {answer:?}");
            }
            if held(kv.clone()).await == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "etcd never granted the lock");
        }
        drop(lock);
        loop {
            if held(kv.clone()).await == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the granted lock is still held on etcd");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
}

/// A Lock or Campaign whose lease already holds its key upstream re-enters there (etcd's
/// recipes reuse the key): if its caller goes away while the mirror waits to hold the answer's
/// revision, the mirror gives nothing back, since the caller held that lock (or candidacy)
/// before the call. Giving it back would let the next waiter in while the first holder still
/// held. As above, the local store never follows upstream, so the wait cannot end.
#[test]
fn a_repeated_lock_or_campaign_whose_caller_left_keeps_what_it_held() {
    use watchkv_actors::api::pb::etcdserverpb::LeaseGrantRequest;
    use watchkv_actors::api::pb::v3electionpb::CampaignRequest;
    use watchkv_actors::api::pb::v3lockpb::LockRequest;
    use watchkv_actors::forward::Upstream;
    use watchkv_actors::mirror::MirrorOptions;
    use watchkv_actors::upstream::{UpstreamEtcd, UpstreamTls};

    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let local = dir.path().join("local");
    let etcd_port = etcd.port;
    actix_rt::System::new().block_on(async move {
        let kv = KvClient::new(channel(etcd_port).await);
        let count = |prefix: &'static str| {
            let mut kv = kv.clone();
            async move {
                let mut end = prefix.as_bytes().to_vec();
                *end.last_mut().expect("non-empty") += 1;
                let req =
                    RangeRequest { key: prefix.into(), range_end: end, count_only: true, ..RangeRequest::default() };
                kv.range(req).await.expect("range on etcd").into_inner().count
            }
        };
        // How many calls of `method` etcd has finished (grpc-prometheus' counter on its /metrics).
        let handled = |method: &'static str| async move {
            let (_, body) =
                tokio::task::spawn_blocking(move || wire::http_get(etcd_port, "/metrics")).await.expect("metrics");
            body.lines()
                .filter(|l| {
                    l.starts_with("grpc_server_handled_total{") && l.contains(&format!("grpc_method=\"{method}\""))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        let mut leases = LeaseClient::new(channel(etcd_port).await);
        let lease = leases.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.expect("grant").into_inner().id;
        // The caller holds the lock and is a candidate, through etcd itself.
        let mut lock_client = watchkv_actors::api::pb::v3lockpb::lock_client::LockClient::new(channel(etcd_port).await);
        lock_client.lock(LockRequest { name: b"held".to_vec(), lease }).await.expect("lock on etcd");
        let mut election_client =
            watchkv_actors::api::pb::v3electionpb::election_client::ElectionClient::new(channel(etcd_port).await);
        let campaign = CampaignRequest { name: b"elect".to_vec(), lease, value: b"me".to_vec() };
        election_client.campaign(campaign.clone()).await.expect("campaign on etcd");
        assert_eq!((count("held/").await, count("elect/").await), (1, 1));

        let handle = watchkv_actors::start(watchkv_actors::ActorsConfig::new(&local)).await.expect("local store");
        let endpoints = [format!("http://127.0.0.1:{etcd_port}")];
        let upstream = UpstreamEtcd::new(&endpoints, &UpstreamTls::default(), None).expect("upstream");
        let header = watchkv_actors::api::Header { cluster_id: 1, member_id: 1, raft_term: 1 };
        let forward = Upstream::new(handle.clone(), header, &MirrorOptions { upstream, prefix: Vec::new() });

        // The same calls again through the mirror: etcd answers at once (re-entry); the caller
        // leaves while the mirror waits for that revision.
        let deadline = std::time::Instant::now() + DEADLINE;
        let mut again_lock = Box::pin(forward.lock(LockRequest { name: b"held".to_vec(), lease }));
        let mut again_campaign = Box::pin(forward.campaign(campaign));
        while handled("Lock").await < 2.0 || handled("Campaign").await < 2.0 {
            let polled = tokio::time::timeout(std::time::Duration::from_millis(20), async {
                tokio::select! {
                    answer = &mut again_lock => panic!("the local store cannot hold etcd's revision: {answer:?}"),
                    answer = &mut again_campaign => panic!("the local store cannot hold etcd's revision: {answer:?}"),
                }
            });
            let _ = polled.await;
            assert!(std::time::Instant::now() < deadline, "etcd never answered the repeated calls");
        }
        // etcd has answered both; let the mirror take the answers in, then the caller leaves.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
            tokio::join!(&mut again_lock, &mut again_campaign)
        })
        .await;
        drop((again_lock, again_campaign));

        // A fence: a new lock whose caller leaves is given back (its undo runs after theirs).
        let mut fence = Box::pin(forward.lock(LockRequest { name: b"fence".to_vec(), lease: 0 }));
        while count("fence/").await == 0 {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(20), &mut fence).await;
            assert!(std::time::Instant::now() < deadline, "etcd never granted the fence lock");
        }
        drop(fence);
        while count("fence/").await == 1 {
            assert!(std::time::Instant::now() < deadline, "the fence lock was not given back");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(count("held/").await, 1, "the lock its caller held is still held on etcd");
        assert_eq!(count("elect/").await, 1, "the candidacy its caller had is still there");
    });
}
