//! The integrity self-check (`--experimental-corrupt-check-time`, `integrity_checker`) end to
//! end: a runtime with the check on, served on one client port as the binary serves it, takes
//! writes and a compaction; then a row of its history is changed in the store's fjall keyspace
//! under the running runtime, as a bad disk would change it, and the check raises `CORRUPT`:
//! listed by `Alarm` over gRPC and the gateway, `/health` false naming it, writes and compactions
//! refused with `etcdserver: corrupt cluster` while reads are served. Disarming it while the damage
//! is still there only lasts until the next check; the alarm outlives a restart.
//!
//! The damage goes through the store's own backend handle (what `tests/integrity.rs` does in
//! the core), not through the files from another process, because from outside it could not
//! be done for real: fjall locks its directory against a second opener; lsm-tree checksums
//! every block, so changed bytes in a table file are a read error, not a different row; and
//! the check's reference hash lives in the running process, so a change made while the server
//! is stopped becomes the new reference at the restart.

mod client_port;
mod exit;
mod ports;

use std::time::{Duration, Instant};

use actix_server::ServerHandle;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::Code;
use watchkv::{codec, Durability, PutRequest, Revision};
use watchkv_actors::gateway::Gateway;
use watchkv_actors::grpc::pb::etcdserverpb as pb;
use watchkv_actors::protocol::Defragment;
use watchkv_actors::{ActorsConfig, Handle};

const DEADLINE: Duration = Duration::from_secs(30);
/// How often the check runs here (etcd's flag takes minutes; the check itself is the same).
const CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Polling interval of the waits, not a synchronisation.
const POLL: Duration = Duration::from_millis(20);

/// A runtime over `dir` and its client port on `127.0.0.1:0`.
struct Served {
    port: u16,
    handle: Handle,
    server: ServerHandle,
    channel: Channel,
}

impl Served {
    async fn start(dir: &std::path::Path, check: Option<Duration>) -> Self {
        let config = ActorsConfig::new(dir)
            .with_store(watchkv::StoreConfig::new(dir).with_durability(Durability::Buffered))
            .with_integrity_check_interval(check);
        let handle = watchkv_actors::start(config).await.expect("start the store");
        let gw = Gateway::new(handle.clone());
        let (port, server_handle) = client_port::serve_client_port(gw);
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_timeout(DEADLINE)
            .timeout(DEADLINE)
            .connect()
            .await
            .expect("connect");
        Self { port, handle, server: server_handle, channel }
    }

    async fn stop(self) {
        self.server.stop(false).await;
        self.handle.shutdown().await.expect("shutdown");
    }

    fn kv(&self) -> pb::kv_client::KvClient<Channel> {
        pb::kv_client::KvClient::new(self.channel.clone())
    }

    /// The alarms `Alarm` GET lists over gRPC, as (member id, kind).
    async fn grpc_alarms(&self) -> Vec<(u64, pb::AlarmType)> {
        let req = pb::AlarmRequest { action: pb::alarm_request::AlarmAction::Get as i32, member_id: 0, alarm: 0 };
        let resp = pb::maintenance_client::MaintenanceClient::new(self.channel.clone())
            .alarm(req)
            .await
            .expect("Alarm GET")
            .into_inner();
        resp.alarms.iter().map(|a| (a.member_id, pb::AlarmType::try_from(a.alarm).expect("a known alarm"))).collect()
    }

    /// Waits until `Alarm` GET over gRPC lists `CORRUPT`, doing `meanwhile` before each look.
    async fn wait_for_corrupt(&self, mut meanwhile: impl FnMut()) -> Vec<(u64, pb::AlarmType)> {
        let start = Instant::now();
        loop {
            meanwhile();
            let alarms = self.grpc_alarms().await;
            if alarms.iter().any(|a| a.1 == pb::AlarmType::Corrupt) {
                return alarms;
            }
            assert!(start.elapsed() < DEADLINE, "CORRUPT not raised within {DEADLINE:?}; alarms {alarms:?}");
            actix_rt::time::sleep(POLL).await;
        }
    }

    /// POSTs `body` to a gateway route: the status and the body as JSON.
    async fn gateway(&self, path: &str, body: &str) -> (u16, Value) {
        let mut resp = awc::Client::builder()
            .timeout(DEADLINE)
            .finish()
            .post(format!("http://127.0.0.1:{}{path}", self.port))
            .send_body(body.to_string())
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let body = resp.body().await.unwrap_or_else(|e| panic!("POST {path} body: {e}"));
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
        (resp.status().as_u16(), json)
    }

    /// `GET /health`: the status and the body as JSON.
    async fn health(&self) -> (u16, Value) {
        let mut resp = awc::Client::builder()
            .timeout(DEADLINE)
            .finish()
            .get(format!("http://127.0.0.1:{}/health", self.port))
            .send()
            .await
            .expect("GET /health");
        let body = resp.body().await.expect("/health body");
        (resp.status().as_u16(), serde_json::from_slice(&body).expect("/health is JSON"))
    }
}

fn put_request(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec(), ..Default::default() }
}

#[actix_rt::test]
async fn a_row_changed_under_a_running_server_raises_corrupt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Served::start(dir.path(), Some(CHECK_INTERVAL)).await;
    let member = s.handle.config().store().member_id();

    // History: 20 puts over 7 keys (revisions 2..=21), compacted at 16, then left alone so
    // that the check's reference (taken at the current revision) covers (16, 21].
    for i in 0..20 {
        s.handle.put(PutRequest::new(format!("k{}", i % 7), format!("v{i}"))).await.expect("put");
    }
    assert_eq!(s.handle.current_revision(), 21);
    s.handle.compact(16, true).await.expect("compact");
    assert_eq!(s.grpc_alarms().await, Vec::new(), "a healthy store raises nothing");

    // Damage: the row of revision 19 (k3 = "v17") gets another value, its key, revisions and
    // link to the previous row unchanged: one changed byte, as a bad disk would leave it.
    let backend = s.handle.store_addr().send(Defragment).await.expect("store running").expect("backend");
    let damaged = Revision::new(19, 0).to_key(false);
    let original = backend.get_row(damaged).expect("read the row").expect("revision 19 has a row");
    assert_eq!((original.kv.key.as_slice(), original.kv.value.as_slice()), (&b"k3"[..], &b"v17"[..]));
    // The check may not have taken its reference yet when the row first changes, and would then
    // take the changed history as its reference: each round changes the row again (its first
    // byte to the next letter) until a check that has a reference sees a difference.
    let mut round = 0u8;
    let alarms = s
        .wait_for_corrupt(|| {
            round = round.wrapping_add(1);
            let mut row = original.clone();
            row.kv.value[0] = b'A' + round % 26;
            let mut batch = backend.batch();
            batch.put_row(damaged, codec::encode_row(&row.kv, row.prev));
            batch.commit().expect("write the changed row");
        })
        .await;
    eprintln!("CORRUPT raised after {round} change(s) of the row");
    assert_eq!(alarms, vec![(member, pb::AlarmType::Corrupt)], "this member's CORRUPT, nothing else");

    // What a client sees.
    let (code, body) = s.gateway("/v3/maintenance/alarm", r#"{"action":"GET"}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["alarms"][0]["alarm"], "CORRUPT", "{body}");
    assert_eq!(body["alarms"][0]["memberID"], member.to_string(), "{body}");
    let (code, body) = s.health().await;
    assert_eq!((code, &body["health"], &body["reason"]), (503, &Value::from("false"), &Value::from("ALARM CORRUPT")));
    let err = s.kv().put(put_request("k", "after")).await.expect_err("a write is refused");
    assert_eq!((err.code(), err.message()), (Code::DataLoss, "etcdserver: corrupt cluster"));
    let err = s.kv().compact(pb::CompactionRequest { revision: 18, physical: false }).await.expect_err("refused");
    assert_eq!((err.code(), err.message()), (Code::DataLoss, "etcdserver: corrupt cluster"));
    let (code, body) = s.gateway("/v3/kv/put", r#"{"key":"aw==","value":"dg=="}"#).await;
    assert_eq!(
        (code, &body["code"], &body["message"]),
        (500, &Value::from(15), &Value::from("etcdserver: corrupt cluster"))
    );
    let read = s.kv().range(pb::RangeRequest { key: b"k0".to_vec(), ..Default::default() }).await;
    let read = read.expect("reads are served").into_inner();
    assert_eq!(read.kvs[0].value, b"v14", "k0's latest value");
    assert_eq!(s.handle.current_revision(), 21, "nothing was written");

    // Disarmed while the damage is still there: the next check raises it again.
    let req = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Deactivate as i32,
        member_id: member,
        alarm: pb::AlarmType::Corrupt as i32,
    };
    let resp = pb::maintenance_client::MaintenanceClient::new(s.channel.clone()).alarm(req).await.expect("disarm");
    assert_eq!(resp.into_inner().alarms.len(), 1, "the disarm names the alarm it cleared");
    let alarms = s.wait_for_corrupt(|| {}).await;
    assert_eq!(alarms, vec![(member, pb::AlarmType::Corrupt)]);

    // The alarm is persisted: after a restart (without the check, so it cannot be raised
    // anew), it is listed and writes stay refused. The backend handle holds fjall's lock.
    drop(backend);
    s.stop().await;
    let s = Served::start(dir.path(), None).await;
    assert_eq!(s.grpc_alarms().await, vec![(member, pb::AlarmType::Corrupt)], "CORRUPT survives a restart");
    let err = s.kv().put(put_request("k", "after restart")).await.expect_err("still refused");
    assert_eq!((err.code(), err.message()), (Code::DataLoss, "etcdserver: corrupt cluster"));
    let (code, _) = s.health().await;
    assert_eq!(code, 503);
    s.stop().await;
}

/// The binary reads etcd's flag as a Go duration and refuses one that does not parse.
#[test]
fn a_bad_corrupt_check_time_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = ports::free_port();
    let out = exit::run_to_exit(
        std::process::Command::new(env!("CARGO_BIN_EXE_watchkv"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--experimental-corrupt-check-time", "5 minutes"]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "a bad duration must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--experimental-corrupt-check-time \"5 minutes\""), "{stderr}");
}
