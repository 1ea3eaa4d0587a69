//! Membership changes and leader moves on a one-member server, over gRPC and the gateway, step
//! by step on etcd 3.4.23 and watchkv, every answer compared where etcd's is one a single
//! member can give without changing: `MoveLeader` to itself (done) and to no member (`bad
//! leader transferee`); `MemberRemove`, `MemberUpdate` and `MemberPromote` of an id that names
//! no member (`member not found`); a promote of the member itself (no learner) and its own
//! removal (strict reconfiguration: not enough started members, the one answer whose code
//! differs: etcd 3.4 sends it as `Unknown`). The changes etcd would make
//! (an added member, its own peer URLs updated) watchkv refuses as `Unimplemented`, saying what
//! to do instead. (etcd: api/v3rpc/member.go, maintenance.go `MoveLeader`,
//! etcdserver/server.go `mayRemoveMember`; watchkv: `actors/src/api/membership.rs`.)

mod wire;

use serde_json::Value;
use watchkv_actors::grpc::pb::etcdserverpb as pb;
use wire::grpc_server::GrpcServer as Server;
use wire::{free_port, post, start_etcd, start_watchkv};

/// An id that names no member of either server.
const NO_MEMBER: u64 = 1234;

/// The id `name` stands for on `s`: its own for `self`, else [`NO_MEMBER`].
fn id(s: &Server, name: &str) -> u64 {
    if name == "self" {
        s.member
    } else {
        NO_MEMBER
    }
}

/// One step, run the same way on both servers; `self` names the server's own member.
#[derive(Debug, Clone, Copy)]
enum Step {
    MoveLeader(&'static str),
    Remove(&'static str),
    Update(&'static str),
    Promote(&'static str),
    Add,
    /// A gateway POST; `"self"` in the body stands for the server's own id.
    Gateway(&'static str, &'static str),
}

/// What a gRPC call answered: `ok`, or its code and text.
fn answer<T>(r: Result<tonic::Response<T>, tonic::Status>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

fn run(s: &Server, rt: &tokio::runtime::Runtime, step: Step) -> String {
    let cluster = || pb::cluster_client::ClusterClient::new(s.channel.clone());
    let urls = vec!["http://127.0.0.1:1".to_string()];
    match step {
        Step::MoveLeader(who) => {
            let req = pb::MoveLeaderRequest { target_id: id(s, who) };
            answer(rt.block_on(pb::maintenance_client::MaintenanceClient::new(s.channel.clone()).move_leader(req)))
        }
        Step::Remove(who) => answer(rt.block_on(cluster().member_remove(pb::MemberRemoveRequest { id: id(s, who) }))),
        Step::Update(who) => {
            answer(rt.block_on(cluster().member_update(pb::MemberUpdateRequest { id: id(s, who), peer_ur_ls: urls })))
        }
        Step::Promote(who) => {
            answer(rt.block_on(cluster().member_promote(pb::MemberPromoteRequest { id: id(s, who) })))
        }
        Step::Add => {
            answer(rt.block_on(cluster().member_add(pb::MemberAddRequest { peer_ur_ls: urls, is_learner: true })))
        }
        Step::Gateway(path, body) => {
            let body: Value =
                serde_json::from_str(&body.replace("\"self\"", &format!("\"{}\"", s.member))).expect("a JSON body");
            let r = post(s.proc.port, path, &body);
            let mut v = r.json();
            // etcd 3.4's older gateway error shape repeats the message as `error`; watchkv
            // writes current etcd's (docs/etcd-semantics.md §12, `error-body-shape`).
            if let Some(m) = v.as_object_mut() {
                if m.get("error").is_some_and(|e| Some(e) == m.get("message")) {
                    m.remove("error");
                }
            }
            // etcd 3.4's gateway answers code 9 (FailedPrecondition) with 412, grpc-gateway v2
            // (current etcd, watchkv) with 400 (docs/etcd-semantics.md §12,
            // `failed-precondition-http-status`).
            let status = if r.status == 412 && v["code"] == 9 { 400 } else { r.status };
            format!("HTTP {status} {v}")
        }
    }
}

#[test]
fn membership_changes_and_leader_moves_answer_as_etcd_does_for_one_member() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let etcd = Server::connect(start_etcd(&dir.path().join("etcd")), &rt);
    let watchkv = Server::connect(start_watchkv(&dir.path().join("watchkv"), free_port(), &[]), &rt);
    let not_found = "NotFound: etcdserver: member not found";
    let compared = [
        (Step::MoveLeader("self"), "ok"),
        (Step::MoveLeader("none"), "FailedPrecondition: etcdserver: bad leader transferee"),
        (Step::Remove("none"), not_found),
        (Step::Update("none"), not_found),
        (Step::Promote("none"), not_found),
        (Step::Promote("self"), "FailedPrecondition: etcdserver: can only promote a learner member"),
        (Step::Gateway("/v3/maintenance/transfer-leadership", r#"{"targetID":"self"}"#), "HTTP 200 {}"),
        (
            Step::Gateway("/v3/maintenance/transfer-leadership", r#"{"targetID":"1234"}"#),
            r#"HTTP 400 {"code":9,"message":"etcdserver: bad leader transferee"}"#,
        ),
        (
            Step::Gateway("/v3/cluster/member/remove", r#"{"ID":"1234"}"#),
            r#"HTTP 404 {"code":5,"message":"etcdserver: member not found"}"#,
        ),
        (Step::Gateway("/v3/cluster/member/update", r#"{"ID":1234,"peerURLs":["http://127.0.0.1:1"]}"#), "HTTP 404"),
        (Step::Gateway("/v3/cluster/member/promote", r#"{"ID":"self"}"#), "can only promote a learner member"),
    ];
    let mut failures = Vec::new();
    for (step, expected) in compared {
        let (e, w) = (run(&etcd, &rt, step), run(&watchkv, &rt, step));
        assert!(e.contains(expected), "{step:?}: etcd 3.4 answered {e}, expected {expected:?}");
        if e != w {
            failures.push(format!("{step:?}:\n  etcd:    {e}\n  watchkv: {w}"));
        }
    }
    assert!(failures.is_empty(), "answers differ from etcd's:\n{}", failures.join("\n"));

    // Last, since etcd would remove itself if it could: its strict reconfiguration check
    // refuses. etcd 3.4 sends that text with code Unknown; watchkv with FailedPrecondition,
    // the code etcd's own table gives it (rpctypes `ErrGRPCMemberNotEnoughStarted`).
    let text = "etcdserver: re-configuration failed due to not enough started members";
    assert_eq!(run(&etcd, &rt, Step::Remove("self")), format!("Unknown: {text}"));
    assert_eq!(run(&watchkv, &rt, Step::Remove("self")), format!("FailedPrecondition: {text}"));

    // What etcd would change, watchkv refuses, saying what to do instead.
    for (step, instead) in [(Step::Add, "run watchkv --upstream"), (Step::Update("self"), "no peer URLs")] {
        let w = run(&watchkv, &rt, step);
        assert!(w.starts_with("Unimplemented: watchkv is one member") && w.contains(instead), "{step:?}: {w}");
    }
    let w = run(&watchkv, &rt, Step::Gateway("/v3/cluster/member/add", r#"{"peerURLs":["http://127.0.0.1:1"]}"#));
    assert!(w.starts_with(r#"HTTP 501 {"code":12,"message":"watchkv is one member"#), "{w}");
}

/// `Authenticate` as `name` on `s`: the token.
fn token(s: &Server, rt: &tokio::runtime::Runtime, name: &str, password: &str) -> String {
    let req = pb::AuthenticateRequest { name: name.into(), password: password.into() };
    rt.block_on(pb::auth_client::AuthClient::new(s.channel.clone()).authenticate(req))
        .unwrap_or_else(|e| panic!("{}: authenticate {name}: {e}", s.proc.name))
        .into_inner()
        .token
}

/// `step` on `s` with `token` in the request's metadata.
fn run_as(s: &Server, rt: &tokio::runtime::Runtime, token: &str, step: Step) -> String {
    fn with<T>(message: T, token: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("token", token.parse().expect("an ascii token"));
        request
    }
    let mut cluster = pb::cluster_client::ClusterClient::new(s.channel.clone());
    match step {
        Step::MoveLeader(who) => {
            let req = with(pb::MoveLeaderRequest { target_id: id(s, who) }, token);
            answer(rt.block_on(pb::maintenance_client::MaintenanceClient::new(s.channel.clone()).move_leader(req)))
        }
        Step::Remove(who) => {
            answer(rt.block_on(cluster.member_remove(with(pb::MemberRemoveRequest { id: id(s, who) }, token))))
        }
        Step::Promote(who) => {
            answer(rt.block_on(cluster.member_promote(with(pb::MemberPromoteRequest { id: id(s, who) }, token))))
        }
        other => panic!("not a step run with a token: {other:?}"),
    }
}

/// With auth on, only an admin may change members: `alice` (no root role) is refused before
/// anything else is looked at; `root` gets the answers above.
#[test]
fn membership_changes_and_leader_moves_need_an_admin_as_in_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let etcd = Server::connect(start_etcd(&dir.path().join("etcd")), &rt);
    let watchkv = Server::connect(
        start_watchkv(&dir.path().join("watchkv"), free_port(), &["--durability", "buffered", "--bcrypt-cost", "4"]),
        &rt,
    );
    let mut failures = Vec::new();
    for s in [&etcd, &watchkv] {
        rt.block_on(async {
            let url = format!("127.0.0.1:{}", s.proc.port);
            let mut admin = etcd_client::Client::connect([url], None).await.expect("connect etcd-client");
            wire::users::add_root_and_alice(&mut admin).await;
            admin.auth_enable().await.expect("auth enable");
        });
    }
    let denied = "PermissionDenied: etcdserver: permission denied";
    let steps = [
        ("alice", "apw", Step::Remove("none"), denied),
        ("alice", "apw", Step::Promote("self"), denied),
        ("root", "rootpw", Step::MoveLeader("self"), "ok"),
        ("root", "rootpw", Step::Remove("none"), "NotFound: etcdserver: member not found"),
    ];
    for (user, password, step, expected) in steps {
        let e = run_as(&etcd, &rt, &token(&etcd, &rt, user, password), step);
        let w = run_as(&watchkv, &rt, &token(&watchkv, &rt, user, password), step);
        assert!(e.contains(expected), "{user} {step:?}: etcd 3.4 answered {e}, expected {expected:?}");
        if e != w {
            failures.push(format!("{user} {step:?}:\n  etcd:    {e}\n  watchkv: {w}"));
        }
    }
    assert!(failures.is_empty(), "answers differ from etcd's:\n{}", failures.join("\n"));

    // Deliberately stricter: etcd 3.4 lets any user move the leader; watchkv asks for an admin,
    // as for its other maintenance calls that act on the member (snapshot, defragment, hash).
    let alice = |s: &Server| run_as(s, &rt, &token(s, &rt, "alice", "apw"), Step::MoveLeader("self"));
    assert_eq!(alice(&etcd), "ok");
    assert_eq!(alice(&watchkv), denied);
}
