//! Property tests over the gateway's request decoders, through real sockets: arbitrary bodies
//! (random bytes, random JSON values, mutated and field-overridden valid requests) on every
//! unary route get 200 or a 4xx in etcd's error shape, never a 5xx, a dropped connection or a
//! panic on a server thread; arbitrary bytes on `/v3/watch` end that stream with an error line
//! or leave it usable. Afterwards the server is healthy and no watcher is left behind.

mod gateway_common;

use std::net::SocketAddr;

use gateway_common::{b64, post_raw, serve, server_panics, wait_until, Opts, RawStream, DEADLINE};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

/// Every unary route.
const UNARY: &[&str] = &[
    "/v3/kv/range",
    "/v3/kv/put",
    "/v3/kv/deleterange",
    "/v3/kv/txn",
    "/v3/kv/compaction",
    "/v3/lease/grant",
    "/v3/lease/revoke",
    "/v3/kv/lease/revoke",
    "/v3/lease/keepalive",
    "/v3/lease/timetolive",
    "/v3/kv/lease/timetolive",
    "/v3/lease/leases",
    "/v3/kv/lease/leases",
    "/v3/maintenance/status",
    "/v3/maintenance/hash",
    "/v3/maintenance/hashkv",
    // Every auth route but enable: the fuzz must not lock itself out.
    "/v3/auth/disable",
    "/v3/auth/status",
    "/v3/auth/authenticate",
    "/v3/auth/user/add",
    "/v3/auth/user/get",
    "/v3/auth/user/list",
    "/v3/auth/user/delete",
    "/v3/auth/user/changepw",
    "/v3/auth/user/grant",
    "/v3/auth/user/revoke",
    "/v3/auth/role/add",
    "/v3/auth/role/get",
    "/v3/auth/role/list",
    "/v3/auth/role/delete",
    "/v3/auth/role/grant",
    "/v3/auth/role/revoke",
];

/// Field names the decoders know (and a few they do not), so random objects hit real fields.
const FIELDS: &[&str] = &[
    "key",
    "range_end",
    "rangeEnd",
    "limit",
    "revision",
    "sort_order",
    "sort_target",
    "keys_only",
    "count_only",
    "min_mod_revision",
    "max_create_revision",
    "value",
    "lease",
    "prev_kv",
    "prevKv",
    "ignore_value",
    "ignore_lease",
    "compare",
    "success",
    "failure",
    "request_range",
    "request_put",
    "request_delete_range",
    "request_txn",
    "requestPut",
    "result",
    "target",
    "create_revision",
    "mod_revision",
    "version",
    "physical",
    "TTL",
    "ID",
    "id",
    "ttl",
    "keys",
    "create_request",
    "cancel_request",
    "progress_request",
    "watch_id",
    "start_revision",
    "filters",
    "fragment",
    "progress_notify",
    "Request",
    "TargetUnion",
    "name",
    "password",
    "hashedPassword",
    "options",
    "no_password",
    "user",
    "role",
    "perm",
    "permType",
];

/// A valid request per unary route.
fn templates() -> Vec<(&'static str, String)> {
    let txn = json!({
        "compare": [{"key": "Zm9v", "target": "VALUE", "result": "EQUAL", "value": "YmFy"},
                    {"key": "Zm9v", "range_end": "AA==", "target": "MOD", "result": "LESS", "mod_revision": "100"}],
        "success": [{"request_put": {"key": "Zm9v", "value": "YmF6"}}, {"request_range": {"key": "Zm9v", "limit": 2}}],
        "failure": [{"request_delete_range": {"key": "YQ==", "prev_kv": true}},
                    {"request_txn": {"success": [{"request_range": {"key": "YQ==", "range_end": "Yg=="}}]}}]
    });
    vec![
        ("/v3/kv/range", json!({"key": "Zm9v", "range_end": "Zm9w", "limit": "10", "revision": "0", "sort_order": "DESCEND", "sort_target": "MOD", "count_only": false, "min_mod_revision": "0"}).to_string()),
        ("/v3/kv/put", json!({"key": "Zm9v", "value": "YmFy", "lease": "0", "prev_kv": true}).to_string()),
        ("/v3/kv/deleterange", json!({"key": "Zm9v", "range_end": "AA==", "prev_kv": true}).to_string()),
        ("/v3/kv/txn", txn.to_string()),
        ("/v3/kv/compaction", json!({"revision": "1", "physical": true}).to_string()),
        ("/v3/lease/grant", json!({"TTL": "60", "ID": "0"}).to_string()),
        ("/v3/lease/revoke", json!({"ID": "1"}).to_string()),
        ("/v3/kv/lease/revoke", json!({"ID": 2}).to_string()),
        ("/v3/lease/keepalive", r#"{"ID":"1"}{"ID":"2"} {"id":3}"#.to_string()),
        ("/v3/lease/timetolive", json!({"ID": "1", "keys": true}).to_string()),
        ("/v3/kv/lease/timetolive", json!({"ID": "3"}).to_string()),
        ("/v3/lease/leases", "{}".to_string()),
        ("/v3/kv/lease/leases", "".to_string()),
        ("/v3/maintenance/status", "{}".to_string()),
        ("/v3/maintenance/hashkv", json!({"revision": "0"}).to_string()),
        ("/v3/auth/authenticate", json!({"name": "alice", "password": "pw"}).to_string()),
        ("/v3/auth/user/add", json!({"name": "alice", "password": "pw", "options": {"no_password": false}}).to_string()),
        ("/v3/auth/user/changepw", json!({"name": "alice", "password": "pw2", "hashedPassword": ""}).to_string()),
        ("/v3/auth/user/grant", json!({"user": "alice", "role": "r"}).to_string()),
        ("/v3/auth/user/revoke", json!({"name": "alice", "role": "r"}).to_string()),
        ("/v3/auth/role/add", json!({"name": "r"}).to_string()),
        ("/v3/auth/role/grant", json!({"name": "r", "perm": {"permType": "READWRITE", "key": "Zm9v", "range_end": "AA=="}}).to_string()),
        ("/v3/auth/role/revoke", json!({"role": "r", "key": "Zm9v", "range_end": "AA=="}).to_string()),
        ("/v3/auth/role/get", json!({"role": "r"}).to_string()),
    ]
}

fn watch_templates() -> Vec<String> {
    vec![
        json!({"create_request": {"key": "Zm9v", "range_end": "AA==", "start_revision": "1", "prev_kv": true, "filters": ["NOPUT"], "progress_notify": true, "fragment": true}}).to_string(),
        json!({"create_request": {"key": "YQ==", "watch_id": 7}}).to_string(),
        json!({"progress_request": {}}).to_string(),
        json!({"cancel_request": {"watch_id": "0"}}).to_string(),
    ]
}

// ----- strategies -----

/// Bytes biased towards JSON punctuation, so that parsers get past the first character.
fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(
            prop_oneof![any::<u8>(), prop::sample::select(b"{}[]\":, \n0123456789-.eE\\tfalsenul".to_vec())],
            0..200
        ),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-3i64..300).prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "-?[0-9]{1,20}".prop_map(Value::String),
        "[A-Za-z0-9+/=_-]{0,12}".prop_map(Value::String),
        ".{0,8}".prop_map(Value::String),
        prop::sample::select(vec![
            "Zm9v",
            "AA==",
            "",
            "NOPUT",
            "DESCEND",
            "VALUE",
            "EQUAL",
            "-1",
            "9223372036854775807"
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((arb_field(), inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_field() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(FIELDS).prop_map(str::to_string), 1 => "[a-zA-Z_]{1,10}"]
}

/// A byte-level mutation: (position, kind, byte).
type Mutation = (usize, u8, u8);

fn mutate(body: &str, mutations: &[Mutation], truncate: Option<usize>) -> Vec<u8> {
    const PUNCT: &[u8] = b"{}[]\":,0 \\";
    let mut b = body.as_bytes().to_vec();
    for &(pos, kind, byte) in mutations {
        let at = if b.is_empty() { 0 } else { pos % (b.len() + 1) };
        match kind % 4 {
            0 if at < b.len() => b[at] = byte,
            1 => b.insert(at, byte),
            2 if at < b.len() => {
                b.remove(at);
            }
            _ => b.insert(at, PUNCT[byte as usize % PUNCT.len()]),
        }
    }
    if let Some(t) = truncate {
        b.truncate(t % (b.len() + 1));
    }
    b
}

fn arb_mutations() -> impl Strategy<Value = (Vec<Mutation>, Option<usize>)> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        prop::option::weighted(0.2, any::<usize>()),
    )
}

/// JSON pointers of every object inside `v`.
fn object_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            out.push(at.clone());
            for (k, c) in m {
                object_pointers(c, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                object_pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Sets `field = value` in one of the objects of a valid request.
fn override_fields(body: &str, overrides: &[(usize, String, Value)]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_str::<Value>(body) else {
        return body.as_bytes().to_vec();
    };
    let mut pointers = Vec::new();
    object_pointers(&v, String::new(), &mut pointers);
    for (i, field, value) in overrides {
        if pointers.is_empty() {
            break;
        }
        if let Some(obj) = v.pointer_mut(&pointers[i % pointers.len()]).and_then(Value::as_object_mut) {
            obj.insert(field.clone(), value.clone());
        }
    }
    v.to_string().into_bytes()
}

fn arb_overrides() -> impl Strategy<Value = Vec<(usize, String, Value)>> {
    prop::collection::vec((any::<usize>(), arb_field(), arb_json()), 1..4)
}

// ----- the server, in its own thread and actix system -----

struct Fuzz {
    sys: actix_rt::SystemRunner,
    client: awc::Client,
    addr: SocketAddr,
}

fn start() -> Fuzz {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("actix-fuzz-server".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let served = serve(&Opts { max_request_bytes: Some(64 * 1024), ..Opts::default() }).await;
                tx.send(served.addr).expect("hand over the address");
                let _keep = served;
                std::future::pending::<()>().await;
            });
        })
        .expect("server thread");
    let addr = rx.recv_timeout(DEADLINE).expect("the server started");
    let sys = actix_rt::System::new();
    let client = sys.block_on(async { gateway_common::client() });
    Fuzz { sys, client, addr }
}

impl Fuzz {
    /// POSTs `body` to `route` and checks the answer's status and shape.
    fn check_unary(&self, route: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
        let url = format!("http://{}{route}", self.addr);
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (status, resp) = self
            .sys
            .block_on(post_raw(&self.client, &url, body.into()))
            .map_err(|e| TestCaseError::fail(format!("{route} {shown:?}: {e}")))?;
        let text = String::from_utf8_lossy(&resp).into_owned();
        prop_assert!(status == 200 || (400..500).contains(&status), "{} {:?} -> {} {}", route, shown, status, text);
        if status == 200 {
            // keepalive answers lines; everything else one object.
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: Value =
                    serde_json::from_str(line).map_err(|e| TestCaseError::fail(format!("{route}: {e}: {text}")))?;
                prop_assert!(v.is_object(), "{} -> {}", route, text);
            }
        } else {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{route} {status}: {e}: {text}")))?;
            let shape_ok = v["code"].as_i64().is_some_and(|c| c > 0)
                && v["message"].is_string()
                && v.as_object().is_some_and(|m| m.len() == 2);
            prop_assert!(shape_ok, "{} {:?} -> {} {}", route, shown, status, text);
        }
        let panics = server_panics();
        prop_assert!(panics.is_empty(), "server panicked: {:?}", panics);
        Ok(())
    }

    /// Writes `body` (in up to three chunks) then a sentinel create and the end of the body:
    /// the stream must end with an error line, or answer the sentinel.
    fn check_watch(&self, body: Vec<u8>, cuts: (usize, usize)) -> Result<(), TestCaseError> {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let addr = self.addr;
        let outcome: Result<(), String> = self.sys.block_on(async move {
            let mut w = RawStream::open_chunked(addr, "/v3/watch", false).await;
            let (a, b) = (cuts.0 % (body.len() + 1), cuts.1 % (body.len() + 1));
            let (a, b) = (a.min(b), a.max(b));
            for part in [&body[..a], &body[a..b], &body[b..]] {
                if !part.is_empty() && w.send(part).await.is_err() {
                    break;
                }
            }
            let sentinel = json!({"create_request": {"key": b64("sentinel"), "watch_id": "999999"}});
            let _ = w.send(sentinel.to_string().as_bytes()).await;
            let _ = w.end_body().await;
            loop {
                let Some(line) = w.next_line().await else {
                    return Err("the stream ended without an error line".to_string());
                };
                let v: Value = serde_json::from_str(&line).map_err(|e| format!("not JSON ({e}): {line}"))?;
                if let Some(err) = v.get("error") {
                    if err["code"] != 3 || !err["message"].is_string() {
                        return Err(format!("bad error line {line}"));
                    }
                    return match w.next_line().await {
                        None => Ok(()),
                        Some(more) => Err(format!("a line after the error line: {more}")),
                    };
                }
                let r = v.get("result").ok_or_else(|| format!("neither result nor error: {line}"))?;
                if r["watch_id"] == "999999" && r["created"] == true {
                    return Ok(());
                }
            }
        });
        outcome.map_err(|e| TestCaseError::fail(format!("{shown:?}: {e}")))?;
        let panics = server_panics();
        prop_assert!(panics.is_empty(), "server panicked: {:?}", panics);
        Ok(())
    }

    fn healthy(&self) {
        let url = format!("http://{}/health", self.addr);
        let status = self.sys.block_on(async {
            let resp = self.client.get(&url).send().await.expect("GET /health");
            resp.status().as_u16()
        });
        assert_eq!(status, 200);
        assert!(server_panics().is_empty(), "server panicked: {:?}", server_panics());
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, max_shrink_iters: 256, ..Config::default() })
}

fn run<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    if let Err(e) = runner(cases).run(&strategy, test) {
        panic!("{name}: {e}");
    }
}

#[test]
fn unary_routes_answer_200_or_4xx_to_anything() {
    let f = start();
    let templates = templates();
    run("random bytes on every route", 48, arb_bytes(), |body| {
        UNARY.iter().try_for_each(|route| f.check_unary(route, body.clone()))
    });
    run("random JSON on every route", 64, arb_json(), |v| {
        let body = v.to_string().into_bytes();
        UNARY.iter().try_for_each(|route| f.check_unary(route, body.clone()))
    });
    run("mutated valid requests", 160, (0..templates.len(), arb_mutations()), |(i, (m, t))| {
        let (route, body) = &templates[i];
        f.check_unary(route, mutate(body, &m, t))
    });
    run("valid requests with random fields", 160, (0..templates.len(), arb_overrides()), |(i, o)| {
        let (route, body) = &templates[i];
        f.check_unary(route, override_fields(body, &o))
    });
    f.healthy();
}

#[test]
fn watch_stream_ends_cleanly_or_stays_usable() {
    let f = start();
    let watch = watch_templates();
    let cuts = (any::<usize>(), any::<usize>());
    run("random bytes on /v3/watch", 48, (arb_bytes(), cuts), |(body, c)| f.check_watch(body, c));
    run("random JSON values on /v3/watch", 32, (prop::collection::vec(arb_json(), 1..4), cuts), |(vs, c)| {
        let body: String = vs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
        f.check_watch(body.into_bytes(), c)
    });
    run("mutated watch requests", 48, (0..watch.len(), arb_mutations(), cuts), |(i, (m, t), c)| {
        f.check_watch(mutate(&watch[i], &m, t), c)
    });
    run("watch requests with random fields", 48, (0..watch.len(), arb_overrides(), cuts), |(i, o, c)| {
        f.check_watch(override_fields(&watch[i], &o), c)
    });
    f.healthy();
    // Every stream is gone, and so are its watchers.
    let url = format!("http://{}/metrics", f.addr);
    f.sys.block_on(wait_until(
        "no watchers or streams left",
        || async {
            let mut resp = f.client.get(&url).send().await.expect("GET /metrics");
            String::from_utf8_lossy(&resp.body().await.expect("body")).into_owned()
        },
        |text: &String| {
            ["watchkv_streams 0", r#"group="synced"} 0"#, r#"group="unsynced"} 0"#, r#"group="victim"} 0"#]
                .iter()
                .all(|needle| text.contains(needle))
        },
    ));
}

/// With auth enabled: arbitrary tokens in `Authorization`, arbitrary credentials on
/// `/v3/auth/authenticate` and oversized auth requests get a 4xx in etcd's error shape, never a
/// 5xx or a panic, and a real token still works afterwards.
#[test]
fn bad_tokens_credentials_and_oversized_auth_requests_are_refused() {
    let f = start();
    let url = |route: &str| format!("http://{}{route}", f.addr);
    let setup = [
        ("/v3/auth/user/add", json!({"name": "root", "password": "rootpw"})),
        ("/v3/auth/user/grant", json!({"user": "root", "role": "root"})),
        ("/v3/auth/enable", json!({})),
    ];
    for (route, body) in setup {
        let (status, text) =
            f.sys.block_on(post_raw(&f.client, &url(route), body.to_string().into())).expect("setup request");
        assert_eq!(status, 200, "{route}: {}", String::from_utf8_lossy(&text));
    }
    let check = |status: u16, text: &[u8], what: &str| -> Result<(), TestCaseError> {
        let text = String::from_utf8_lossy(text);
        prop_assert!((400..500).contains(&status), "{}: {} {}", what, status, text);
        let v: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{what}: {e}: {text}")))?;
        prop_assert!(v["code"].as_i64().is_some_and(|c| c > 0) && v["message"].is_string(), "{}: {}", what, text);
        Ok(())
    };
    run("random tokens", 64, "[ -~]{0,80}", |token| {
        let (status, text) = f.sys.block_on(async {
            let mut resp = f
                .client
                .post(url("/v3/kv/range"))
                .insert_header(("Authorization", token.as_str()))
                .send_body(json!({"key": "Zm9v"}).to_string())
                .await
                .map_err(|e| TestCaseError::fail(format!("send: {e}")))?;
            let body = resp.body().await.map_err(|e| TestCaseError::fail(format!("body: {e}")))?;
            Ok::<_, TestCaseError>((resp.status().as_u16(), body))
        })?;
        check(status, &text, &format!("token {token:?}"))
    });
    run("random credentials", 32, ("[ -~]{0,20}", "[ -~]{0,20}"), |(name, password)| {
        prop_assume!(!(name == "root" && password == "rootpw"));
        let body = json!({"name": name, "password": password}).to_string();
        let (status, text) = f
            .sys
            .block_on(post_raw(&f.client, &url("/v3/auth/authenticate"), body.into()))
            .map_err(TestCaseError::fail)?;
        check(status, &text, "credentials")
    });
    for route in ["/v3/auth/authenticate", "/v3/auth/user/add", "/v3/auth/role/grant"] {
        let huge = json!({"name": "x".repeat(100 * 1024), "password": "p"}).to_string();
        let (status, text) = f.sys.block_on(post_raw(&f.client, &url(route), huge.into())).expect("oversized");
        if let Err(e) = check(status, &text, route) {
            panic!("oversized request: {e}");
        }
    }
    // A real token still works.
    let (status, text) = f
        .sys
        .block_on(post_raw(
            &f.client,
            &url("/v3/auth/authenticate"),
            json!({"name": "root", "password": "rootpw"}).to_string().into(),
        ))
        .expect("authenticate");
    assert_eq!(status, 200);
    let token: Value = serde_json::from_slice(&text).expect("json");
    let token = token["token"].as_str().expect("a token").to_string();
    let status = f.sys.block_on(async {
        let resp = f
            .client
            .post(url("/v3/kv/put"))
            .insert_header(("Authorization", token.as_str()))
            .send_body(json!({"key": "Zm9v", "value": "YmFy"}).to_string())
            .await
            .expect("put");
        resp.status().as_u16()
    });
    assert_eq!(status, 200);
    assert!(server_panics().is_empty(), "server panicked: {:?}", server_panics());
}
