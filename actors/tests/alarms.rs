//! `Maintenance.Alarm` ACTIVATE and DEACTIVATE, over gRPC and over the gateway
//! (`/v3/maintenance/alarm`), step by step on etcd 3.4.23 and watchkv, every answer compared:
//! what ACTIVATE answers (again when already raised), what GET lists after (all, or one kind),
//! puts and lease grants refused under `NOSPACE` while reads and deletes pass, every write and
//! compaction refused under `CORRUPT` while reads pass, `/health` false while either is raised,
//! an alarm raised for another member id keeping writes refused after this member's is
//! cleared, and DEACTIVATE (again when already cleared) letting writes through.
//! (etcd: apply.go `applierV3backend.Alarm`, `applierV3Capped`; corrupt.go `applierV3Corrupt`.)

mod wire;

use serde_json::{json, Value};
use watchkv_actors::grpc::pb::etcdserverpb as pb;
use wire::grpc_server::GrpcServer as Server;
use wire::{b64, drop_identity, free_port, start_etcd, start_watchkv, try_post};

use pb::alarm_request::AlarmAction;
use pb::AlarmType;

/// A member id that names no member: etcd stores an alarm for any id it is given.
const OTHER_MEMBER: u64 = 42;

/// One step, run the same way on both servers.
#[derive(Debug, Clone)]
enum Step {
    /// `Maintenance.Alarm` over gRPC for a member (`self` or an id) and a kind.
    GrpcAlarm(AlarmAction, &'static str, AlarmType),
    GrpcPut(&'static str),
    GrpcRange(&'static str),
    /// A txn that only reads: if the key exists, get it, else get the whole keyspace.
    GrpcReadTxn(&'static str),
    /// A txn whose chosen branch only reads but whose other branch deletes.
    GrpcTxnThatMayDelete(&'static str),
    GrpcDelete(&'static str),
    GrpcLeaseGrant,
    GrpcCompact,
    /// A gateway POST; `"memberID":"self"` in the body stands for the server's own id.
    Gateway(&'static str, Value),
    Health,
}

fn status_text(s: &tonic::Status) -> String {
    format!("error {:?}: {}", s.code(), s.message())
}

fn header_revision(h: Option<&pb::ResponseHeader>) -> i64 {
    h.map_or(-1, |h| h.revision)
}

/// Runs `step` on `s`; the answer, normalised (member ids named, identity fields dropped,
/// alarm lists sorted: etcd lists them in Go map order).
fn run(s: &Server, rt: &tokio::runtime::Runtime, step: &Step) -> String {
    let kv = || pb::kv_client::KvClient::new(s.channel.clone());
    match step {
        Step::GrpcAlarm(action, member, alarm) => {
            let req = pb::AlarmRequest { action: *action as i32, member_id: s.member_id(member), alarm: *alarm as i32 };
            match rt.block_on(pb::maintenance_client::MaintenanceClient::new(s.channel.clone()).alarm(req)) {
                Ok(r) => {
                    let r = r.into_inner();
                    let mut alarms: Vec<String> = r
                        .alarms
                        .iter()
                        .map(|a| {
                            let kind = AlarmType::try_from(a.alarm).map_or("?", |k| k.as_str_name());
                            format!("{}:{kind}", s.member_name(a.member_id))
                        })
                        .collect();
                    alarms.sort();
                    format!("header {:?} alarms {alarms:?}", r.header.is_some())
                }
                Err(e) => status_text(&e),
            }
        }
        Step::GrpcPut(key) => {
            let req = pb::PutRequest { key: key.as_bytes().to_vec(), value: b"v".to_vec(), ..Default::default() };
            match rt.block_on(kv().put(req)) {
                Ok(r) => format!("put at {}", header_revision(r.get_ref().header.as_ref())),
                Err(e) => status_text(&e),
            }
        }
        Step::GrpcRange(key) => {
            let req = pb::RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() };
            match rt.block_on(kv().range(req)) {
                Ok(r) => {
                    let r = r.into_inner();
                    let values: Vec<String> =
                        r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.value).into()).collect();
                    format!("range at {}: {values:?}", header_revision(r.header.as_ref()))
                }
                Err(e) => status_text(&e),
            }
        }
        Step::GrpcReadTxn(key) | Step::GrpcTxnThatMayDelete(key) => {
            use pb::request_op::Request as Op;
            let get = |key: &[u8], range_end: &[u8]| pb::RequestOp {
                request: Some(Op::RequestRange(pb::RangeRequest {
                    key: key.to_vec(),
                    range_end: range_end.to_vec(),
                    ..Default::default()
                })),
            };
            let otherwise = match step {
                Step::GrpcReadTxn(_) => get(b"\0", b"\0"),
                _ => pb::RequestOp {
                    request: Some(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    })),
                },
            };
            let req = pb::TxnRequest {
                compare: vec![pb::Compare {
                    result: pb::compare::CompareResult::Greater as i32,
                    target: pb::compare::CompareTarget::Version as i32,
                    key: key.as_bytes().to_vec(),
                    target_union: Some(pb::compare::TargetUnion::Version(0)),
                    ..Default::default()
                }],
                success: vec![get(key.as_bytes(), b"")],
                failure: vec![otherwise],
            };
            match rt.block_on(kv().txn(req)) {
                Ok(r) => {
                    let r = r.into_inner();
                    let values: Vec<String> = r
                        .responses
                        .iter()
                        .filter_map(|op| match &op.response {
                            Some(pb::response_op::Response::ResponseRange(range)) => Some(range),
                            _ => None,
                        })
                        .flat_map(|range| range.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
                        .collect();
                    format!("txn at {} succeeded {}: {values:?}", header_revision(r.header.as_ref()), r.succeeded)
                }
                Err(e) => status_text(&e),
            }
        }
        Step::GrpcDelete(key) => {
            let req = pb::DeleteRangeRequest { key: key.as_bytes().to_vec(), ..Default::default() };
            match rt.block_on(kv().delete_range(req)) {
                Ok(r) => format!("deleted {} at {}", r.get_ref().deleted, header_revision(r.get_ref().header.as_ref())),
                Err(e) => status_text(&e),
            }
        }
        Step::GrpcLeaseGrant => {
            let req = pb::LeaseGrantRequest { ttl: 100, id: 0 };
            match rt.block_on(pb::lease_client::LeaseClient::new(s.channel.clone()).lease_grant(req)) {
                Ok(r) => format!("lease granted: ttl {}", r.get_ref().ttl),
                Err(e) => status_text(&e),
            }
        }
        Step::GrpcCompact => {
            let req = pb::CompactionRequest { revision: 1, physical: false };
            match rt.block_on(kv().compact(req)) {
                Ok(r) => format!("compacted at {}", header_revision(r.get_ref().header.as_ref())),
                Err(e) => status_text(&e),
            }
        }
        Step::Gateway(path, body) => {
            let body = body.to_string().replace("\"self\"", &format!("\"{}\"", s.member));
            let r = try_post(s.proc.port, path, body.as_bytes())
                .unwrap_or_else(|e| panic!("{}: POST {path}: {e}", s.proc.name));
            let mut v = r.json();
            drop_identity(&mut v);
            // etcd 3.4's older gateway error shape repeats the message as `error`; watchkv
            // writes current etcd's (docs/etcd-semantics.md §12, `error-body-shape`).
            if let Some(m) = v.as_object_mut() {
                if m.get("error").is_some_and(|e| Some(e) == m.get("message")) {
                    m.remove("error");
                }
            }
            if let Some(alarms) = v.get_mut("alarms").and_then(Value::as_array_mut) {
                for a in alarms.iter_mut() {
                    if let Some(id) = a["memberID"].as_str().and_then(|id| id.parse().ok()) {
                        a["memberID"] = Value::String(s.member_name(id));
                    }
                }
                alarms.sort_by_key(Value::to_string);
            }
            format!("HTTP {} {v}", r.status)
        }
        Step::Health => {
            let (code, body) = wire::http_get(s.proc.port, "/health");
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/health is not JSON ({e}): {body}"));
            // watchkv adds etcd 3.5's `reason`; etcd 3.4 answers `health` alone.
            format!("HTTP {code} health {}", v["health"])
        }
    }
}

/// Runs every step on both and collects the differences; `expect` pins etcd's answer of the
/// steps whose point is a refusal or a listed alarm, so that the scenario tests what it says.
struct Both {
    rt: tokio::runtime::Runtime,
    etcd: Server,
    watchkv: Server,
    failures: Vec<String>,
    steps: usize,
}

impl Both {
    fn step(&mut self, step: Step) -> String {
        let e = run(&self.etcd, &self.rt, &step);
        let w = run(&self.watchkv, &self.rt, &step);
        self.steps += 1;
        if e != w {
            self.failures.push(format!("{step:?}:\n  etcd 3.4: {e}\n  watchkv:  {w}"));
        }
        e
    }

    /// [`Self::step`], with etcd's answer checked to contain `expected`.
    fn expect(&mut self, step: Step, expected: &str) {
        let e = self.step(step.clone());
        assert!(e.contains(expected), "{step:?}: etcd 3.4 answered {e}, expected {expected:?}");
    }
}

fn gw_alarm(action: &str, member: &str, alarm: &str) -> Step {
    Step::Gateway("/v3/maintenance/alarm", json!({"action": action, "memberID": member, "alarm": alarm}))
}

fn gw_put(key: &str) -> Step {
    Step::Gateway("/v3/kv/put", json!({"key": b64(key), "value": b64("v")}))
}

#[test]
fn alarm_activate_and_deactivate_over_grpc_and_the_gateway_match_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let etcd = Server::connect(start_etcd(&dir.path().join("etcd")), &rt);
    let watchkv =
        Server::connect(start_watchkv(&dir.path().join("watchkv"), free_port(), &["--durability", "buffered"]), &rt);
    let mut b = Both { rt, etcd, watchkv, failures: Vec::new(), steps: 0 };
    let space_exceeded = "etcdserver: mvcc: database space exceeded";
    let corrupt = "etcdserver: corrupt cluster";
    use AlarmAction::{Activate, Deactivate, Get};

    b.expect(Step::GrpcPut("k"), "put at 2");
    b.expect(Step::GrpcAlarm(Get, "self", AlarmType::None), "alarms []");

    // NOSPACE raised by hand over gRPC: answered with the alarm, again when already raised.
    b.expect(Step::GrpcAlarm(Activate, "self", AlarmType::Nospace), r#"alarms ["self:NOSPACE"]"#);
    b.expect(Step::GrpcAlarm(Activate, "self", AlarmType::Nospace), r#"alarms ["self:NOSPACE"]"#);
    b.expect(Step::GrpcAlarm(Get, "self", AlarmType::None), r#"alarms ["self:NOSPACE"]"#);
    b.expect(Step::GrpcAlarm(Get, "self", AlarmType::Nospace), r#"alarms ["self:NOSPACE"]"#);
    b.expect(Step::GrpcAlarm(Get, "self", AlarmType::Corrupt), "alarms []");
    b.expect(Step::Gateway("/v3/maintenance/alarm", json!({"action": "GET"})), r#""alarm":"NOSPACE""#);
    b.expect(Step::Health, "HTTP 503");
    // Writes that take space are refused; reads and deletes pass.
    b.expect(Step::GrpcPut("k"), &format!("ResourceExhausted: {space_exceeded}"));
    b.expect(gw_put("k"), &format!("HTTP 429 {{\"code\":8,\"message\":\"{space_exceeded}\"}}"));
    b.expect(Step::GrpcLeaseGrant, space_exceeded);
    b.expect(Step::GrpcRange("k"), r#"range at 2: ["v"]"#);
    b.expect(Step::GrpcReadTxn("k"), r#"txn at 2 succeeded true: ["v"]"#);
    b.expect(Step::GrpcTxnThatMayDelete("k"), r#"txn at 2 succeeded true: ["v"]"#);
    b.expect(Step::GrpcDelete("absent"), "deleted 0 at 2");
    // Cleared: answered with the alarm once, then with none; writes pass.
    b.expect(Step::GrpcAlarm(Deactivate, "self", AlarmType::Nospace), r#"alarms ["self:NOSPACE"]"#);
    b.expect(Step::GrpcAlarm(Deactivate, "self", AlarmType::Nospace), "alarms []");
    b.expect(Step::GrpcAlarm(Get, "self", AlarmType::None), "alarms []");
    b.expect(Step::Health, "HTTP 200");
    b.expect(Step::GrpcPut("k"), "put at 3");

    // The same over the gateway, with a second alarm for a member id that names no member:
    // writes stay refused until both are cleared.
    b.expect(gw_alarm("ACTIVATE", "self", "NOSPACE"), r#"HTTP 200 {"alarms":[{"alarm":"NOSPACE","memberID":"self"}]}"#);
    b.expect(gw_alarm("ACTIVATE", &OTHER_MEMBER.to_string(), "NOSPACE"), r#""memberID":"42""#);
    b.expect(Step::GrpcAlarm(Get, "self", AlarmType::None), r#"alarms ["42:NOSPACE", "self:NOSPACE"]"#);
    b.expect(gw_put("k"), "HTTP 429");
    b.expect(gw_alarm("DEACTIVATE", "self", "NOSPACE"), r#""memberID":"self""#);
    b.expect(gw_put("k"), "HTTP 429");
    b.expect(Step::Health, "HTTP 503");
    b.expect(gw_alarm("DEACTIVATE", &OTHER_MEMBER.to_string(), "NOSPACE"), r#""memberID":"42""#);
    b.expect(gw_alarm("DEACTIVATE", &OTHER_MEMBER.to_string(), "NOSPACE"), "HTTP 200 {}");
    b.expect(Step::Gateway("/v3/maintenance/alarm", json!({"action": "GET"})), "HTTP 200 {}");
    b.expect(gw_put("k"), "HTTP 200");

    // CORRUPT raised by hand: every write and compaction refused, reads served.
    b.expect(gw_alarm("ACTIVATE", "self", "CORRUPT"), r#"HTTP 200 {"alarms":[{"alarm":"CORRUPT","memberID":"self"}]}"#);
    b.expect(Step::GrpcPut("k"), &format!("DataLoss: {corrupt}"));
    b.expect(gw_put("k"), &format!("HTTP 500 {{\"code\":15,\"message\":\"{corrupt}\"}}"));
    b.expect(Step::GrpcDelete("k"), corrupt);
    b.expect(Step::GrpcCompact, corrupt);
    b.expect(Step::GrpcLeaseGrant, corrupt);
    b.expect(Step::GrpcRange("k"), r#"range at 4: ["v"]"#);
    // A txn that only reads is a read (etcd `v3_server.go` `Txn`), served; one that could
    // delete is a write, refused, whichever branch its compares choose.
    b.expect(Step::GrpcReadTxn("k"), r#"txn at 4 succeeded true: ["v"]"#);
    b.expect(Step::GrpcReadTxn("absent"), r#"txn at 4 succeeded false: ["v"]"#);
    b.expect(Step::GrpcTxnThatMayDelete("k"), corrupt);
    b.expect(Step::Health, "HTTP 503");
    b.expect(Step::GrpcAlarm(Deactivate, "self", AlarmType::Corrupt), r#"alarms ["self:CORRUPT"]"#);
    b.expect(Step::GrpcPut("k"), "put at 5");
    b.expect(Step::Health, "HTTP 200");

    eprintln!("alarms: {} steps compared", b.steps);
    assert!(
        b.failures.is_empty(),
        "{} of {} steps differ:\n\n{}\n\nwatchkv log tail:\n{}",
        b.failures.len(),
        b.steps,
        b.failures.join("\n\n"),
        b.watchkv.proc.log_tail(3000)
    );
}
