//! TLS on the client port, compared with real etcd 3.4.23 run with the same certificates: etcdctl
//! with `--cacert` (and `--cert`/`--key`) against both, with and without client-certificate
//! auth; clients without a certificate, or with one from another CA, refused by both; the
//! gateway over HTTPS; a plaintext client refused without harm to the server. With auth on, the
//! gateway takes the client certificate's common name as the user (watchkv's alone: etcd 3.4's
//! gateway does not). The certificates, the HTTPS client and etcd over TLS are the `certs`
//! fixtures'.

mod certs;
mod exit;
mod wire;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use certs::{
    client_config, etcdctl, https, https_with_headers, make_certs, path, run, spawn_logged, start_etcd_tls,
    tls_connect, wait_until_serving_tls, Certs, Pair, TIMEOUTS,
};
use serde_json::{json, Value};
use wire::{b64, drop_identity, free_port, Proc, DEADLINE};

/// How long a watch must stay silent on etcd before its output counts as complete.
const WATCH_QUIET: Duration = Duration::from_millis(1500);

/// watchkv serving TLS on `127.0.0.1:<port>` with `flags` (which name the address).
fn start_watchkv_tls(data_dir: &Path, port: u16, flags: &[String], ready: &Arc<rustls::ClientConfig>) -> Proc {
    let log = data_dir.with_extension("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_watchkv"));
    cmd.arg("--data-dir").arg(data_dir).args(["--durability", "buffered"]).args(flags).env("RUST_LOG", "warn");
    let mut proc = Proc { child: spawn_logged(cmd, &log), port, log, name: "watchkv".into() };
    wait_until_serving_tls(&mut proc, ready);
    proc
}

// ---------------------------------------------------------------------------------------------
// etcdctl over TLS, on both.

/// For commands expected to fail at the handshake: etcdctl retries until its dial timeout.
const SHORT_TIMEOUTS: &[&str] = &["--command-timeout=5s", "--dial-timeout=3s"];

/// What one command printed, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Printed {
    ok: bool,
    stdout: String,
    error: String,
}

fn normalise(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(mut v) if v.is_object() => {
                drop_identity(&mut v);
                out.push_str(&v.to_string());
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn printed(out: &Output) -> Printed {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr.lines().rev().find(|l| l.starts_with("Error:")).unwrap_or("").to_string();
    Printed { ok: out.status.success(), stdout: normalise(&String::from_utf8_lossy(&out.stdout)), error }
}

/// etcd and watchkv run with the same certificates and flags, and the differences found.
struct Both<'a> {
    etcd: Proc,
    watchkv: Proc,
    certs: &'a Certs,
    failures: Vec<String>,
    steps: usize,
}

impl<'a> Both<'a> {
    /// etcd and watchkv serving TLS with the same `flags` in `dir`, watchkv's address given as
    /// `--listen-client-urls https://…` (etcd's spelling) or as `--listen`; each waited for
    /// with `ready`.
    fn start(dir: &Path, certs: &'a Certs, flags: &[String], ready: &Arc<rustls::ClientConfig>, url: bool) -> Self {
        let etcd = start_etcd_tls(&dir.join("etcd"), flags, ready);
        let port = free_port();
        let mut wk_flags = flags.to_vec();
        if url {
            wk_flags.extend(["--listen-client-urls".to_string(), format!("https://127.0.0.1:{port}")]);
        } else {
            wk_flags.extend(["--listen".to_string(), format!("127.0.0.1:{port}")]);
        }
        let watchkv = start_watchkv_tls(&dir.join("watchkv"), port, &wk_flags, ready);
        Self { etcd, watchkv, certs, failures: Vec::new(), steps: 0 }
    }

    fn compare(&mut self, step: &str, e: &Printed, w: &Printed) {
        self.steps += 1;
        if e != w {
            self.failures.push(format!("`{step}` differs:\n  etcd 3.4: {e:?}\n  watchkv:  {w:?}"));
        }
    }

    /// Runs `etcdctl args` on both as `client` and compares.
    fn cmd(&mut self, client: Option<&Pair>, args: &[&str]) -> (Printed, Printed) {
        let e = printed(&run(etcdctl(self.etcd.port, self.certs, client, TIMEOUTS).args(args)));
        let w = printed(&run(etcdctl(self.watchkv.port, self.certs, client, TIMEOUTS).args(args)));
        self.compare(&format!("etcdctl {}", args.join(" ")), &e, &w);
        (e, w)
    }

    /// Runs `etcdctl args` on both as `client`, expecting both to succeed (for output that
    /// names the endpoint or a duration).
    fn succeeds(&mut self, client: Option<&Pair>, args: &[&str]) {
        for proc in [&self.etcd, &self.watchkv] {
            let out = run(etcdctl(proc.port, self.certs, client, TIMEOUTS).args(args));
            self.steps += 1;
            if !out.status.success() {
                self.failures.push(format!("{}: `etcdctl {}` failed: {out:?}", proc.name, args.join(" ")));
            }
        }
    }

    /// Runs `etcdctl args` on both as `client`, expecting both to refuse the connection.
    fn refused(&mut self, who: &str, client: Option<&Pair>, args: &[&str]) {
        for proc in [&self.etcd, &self.watchkv] {
            let out = run(etcdctl(proc.port, self.certs, client, SHORT_TIMEOUTS).args(args));
            self.steps += 1;
            if out.status.success() {
                self.failures.push(format!(
                    "{}: `etcdctl {}` {who} succeeded; it must be refused: {}",
                    proc.name,
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
    }

    /// `etcdctl watch args` on both as `client`: etcd's output is complete once silent for
    /// [`WATCH_QUIET`]; watchkv must print the same lines.
    fn watch(&mut self, client: Option<&Pair>, args: &[&str]) {
        let e = wire::watch_lines(etcdctl(self.etcd.port, self.certs, client, TIMEOUTS).args(args), None, WATCH_QUIET);
        assert!(!e.is_empty(), "etcd printed nothing for `etcdctl {}`", args.join(" "));
        let w = wire::watch_lines(
            etcdctl(self.watchkv.port, self.certs, client, TIMEOUTS).args(args),
            Some(e.len()),
            WATCH_QUIET,
        );
        let as_printed =
            |lines: Vec<String>| Printed { ok: true, stdout: normalise(&lines.join("\n")), error: String::new() };
        self.compare(&format!("etcdctl {}", args.join(" ")), &as_printed(e), &as_printed(w));
    }

    /// The gateway over HTTPS as `client` on both, compared (identity fields dropped).
    fn gateway(&mut self, client: Option<&Pair>, method: &str, uri: &str, body: &str) {
        let config = client_config(&self.certs.ca, client, &[b"http/1.1"]);
        let answer = |port| match https(port, Arc::clone(&config), method, uri, body) {
            Ok((code, text)) => {
                let mut v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                drop_identity(&mut v);
                // watchkv's /health adds fields of its own (uptime); the answer is `health`.
                if uri.starts_with("/health") {
                    v = json!({ "health": v["health"] });
                }
                format!("{code} {v}")
            }
            Err(e) => format!("error: {e}"),
        };
        let (e, w) = (answer(self.etcd.port), answer(self.watchkv.port));
        self.steps += 1;
        if e != w || !e.starts_with("200 ") {
            self.failures.push(format!("gateway {method} {uri}: etcd 3.4 answers {e}, watchkv {w}"));
        }
    }

    /// Asserts nothing differed.
    fn finish(self) {
        eprintln!("tls: {} steps compared", self.steps);
        assert!(
            self.failures.is_empty(),
            "{} of {} steps differ:\n\n{}\n\nwatchkv log tail:\n{}",
            self.failures.len(),
            self.steps,
            self.failures.join("\n\n"),
            self.watchkv.log_tail(3000)
        );
    }
}

/// What a plaintext HTTP request to a TLS port gets back before the server closes (etcd 3.4:
/// nothing, its TLS listener closes a connection whose handshake fails).
fn plaintext_request(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let body = r#"{"key":"Zm9v"}"#;
    let _ =
        write!(stream, "POST /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let mut raw = Vec::new();
    // Ends at the server's close (or reset); the read timeout would mean it kept the socket.
    let result = stream.read_to_end(&mut raw);
    if let Err(e) = &result {
        let kept_open = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
        assert!(!kept_open, "port {port} kept a plaintext client open");
    }
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn tls_without_client_certificates_matches_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let flags = certs.server_flags(&[]);
    let ready = client_config(&certs.ca, None, &[b"http/1.1"]);
    let mut b = Both::start(dir.path(), &certs, &flags, &ready, false);
    let port = b.watchkv.port;

    b.cmd(None, &["put", "foo", "bar"]);
    b.cmd(None, &["put", "foo", "baz", "--prev-kv"]);
    b.cmd(None, &["put", "foo1", "one"]);
    b.cmd(None, &["get", "foo"]);
    b.cmd(None, &["get", "foo", "--prefix", "-w", "json"]);
    b.cmd(None, &["del", "foo1"]);
    b.watch(None, &["watch", "--prefix", "foo", "--rev", "1"]);
    b.succeeds(None, &["endpoint", "health"]);
    // A client certificate nobody asked for changes nothing.
    b.cmd(Some(&certs.alice), &["get", "foo"]);
    // `endpoint status` names the member; both must answer it over TLS.
    for proc in [&b.etcd, &b.watchkv] {
        let out = run(etcdctl(proc.port, &certs, None, TIMEOUTS).args(["endpoint", "status", "-w", "json"]));
        assert!(out.status.success(), "{}: endpoint status over TLS: {out:?}", proc.name);
        let v: Value = serde_json::from_slice(&out.stdout).expect("endpoint status json");
        assert!(v[0]["Status"]["header"]["revision"].as_i64().unwrap_or(0) >= 4, "{}: {v}", proc.name);
    }
    // The member advertises its https:// URL.
    let members = run(etcdctl(port, &certs, None, TIMEOUTS).args(["member", "list"]));
    let text = String::from_utf8_lossy(&members.stdout);
    assert!(text.contains(&format!("https://127.0.0.1:{port}")), "member list names the https:// URL: {text}");

    // The gateway over HTTPS.
    b.gateway(None, "POST", "/v3/kv/range", &json!({ "key": b64("foo") }).to_string());
    b.gateway(None, "POST", "/v3/kv/range", &json!({ "key": b64("foo"), "range_end": b64("fop") }).to_string());
    b.gateway(None, "GET", "/health", "");
    // ALPN: gRPC clients offer h2 alone; an HTTP client offering both gets HTTP/1.1 (the gateway).
    for (offered, expected) in [
        (&[b"h2".as_slice()][..], Some(b"h2".to_vec())),
        (&[b"h2".as_slice(), b"http/1.1".as_slice()][..], Some(b"http/1.1".to_vec())),
        (&[b"http/1.1".as_slice()][..], Some(b"http/1.1".to_vec())),
        (&[][..], None),
    ] {
        let (_, alpn) = tls_connect(port, client_config(&certs.ca, None, offered)).expect("TLS connect");
        assert_eq!(alpn, expected, "offering {offered:?}");
    }
    // No ALPN: told apart by the first bytes. HTTP/1.1 reaches the gateway ...
    let (code, body) =
        https(port, client_config(&certs.ca, None, &[]), "GET", "/health", "").expect("gateway without ALPN");
    assert_eq!(code, 200, "gateway without ALPN: {body}");
    // ... and HTTP/2's preface reaches the gRPC server, which answers with its SETTINGS frame.
    let (mut stream, _) = tls_connect(port, client_config(&certs.ca, None, &[])).expect("TLS connect");
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").expect("send the HTTP/2 preface");
    stream.flush().expect("flush");
    let mut frame_header = [0u8; 9];
    stream.read_exact(&mut frame_header).expect("the server's first frame");
    assert_eq!(frame_header[3], 0x4, "the server's first HTTP/2 frame is SETTINGS: {frame_header:?}");

    // A plaintext client is refused (no HTTP answer) by both, and the server keeps serving.
    for proc in [&b.etcd, &b.watchkv] {
        let answer = plaintext_request(proc.port);
        assert!(answer.is_empty(), "{}: a plaintext client got an answer: {answer:?}", proc.name);
    }
    b.cmd(None, &["get", "foo"]);
    b.finish();
}

#[test]
fn client_cert_auth_matches_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let flags = certs.server_flags(&["--trusted-ca-file", "--client-cert-auth"]);
    let ready = client_config(&certs.ca, Some(&certs.alice), &[b"http/1.1"]);
    // etcd's spelling of the address.
    let mut b = Both::start(dir.path(), &certs, &flags, &ready, true);
    let port = b.watchkv.port;
    let alice = certs.alice.clone();

    b.cmd(Some(&alice), &["put", "foo", "bar"]);
    b.cmd(Some(&alice), &["put", "foo", "baz"]);
    b.cmd(Some(&alice), &["get", "foo", "-w", "json"]);
    b.cmd(Some(&alice), &["get", "", "--prefix"]);
    b.watch(Some(&alice), &["watch", "foo", "--rev", "1"]);
    b.succeeds(Some(&alice), &["endpoint", "health"]);

    // Without a certificate, or with one from another CA: refused by both.
    b.refused("without a client certificate", None, &["get", "foo"]);
    b.refused("without a client certificate", None, &["put", "foo", "nobody"]);
    let untrusted = certs.untrusted.clone();
    b.refused("with an untrusted client certificate", Some(&untrusted), &["get", "foo"]);
    // The refused put changed nothing.
    b.cmd(Some(&alice), &["get", "foo"]);

    // The gateway: with alice's certificate it answers; without one, or with the untrusted
    // one, the handshake fails on both.
    b.gateway(Some(&alice), "POST", "/v3/kv/range", &json!({ "key": b64("foo") }).to_string());
    b.gateway(Some(&alice), "GET", "/health", "");
    for (who, client) in [("no certificate", None), ("an untrusted certificate", Some(&untrusted))] {
        for proc in [&b.etcd, &b.watchkv] {
            let answer = https(proc.port, client_config(&certs.ca, client, &[b"http/1.1"]), "GET", "/health", "");
            assert!(answer.is_err(), "{}: the gateway answered a client with {who}: {answer:?}", proc.name);
        }
    }
    // A plaintext client is refused too, and the server keeps serving.
    for proc in [&b.etcd, &b.watchkv] {
        let answer = plaintext_request(proc.port);
        assert!(answer.is_empty(), "{}: a plaintext client got an answer: {answer:?}", proc.name);
    }
    let members = run(etcdctl(port, &certs, Some(&alice), TIMEOUTS).args(["member", "list"]));
    let text = String::from_utf8_lossy(&members.stdout);
    assert!(text.contains(&format!("https://127.0.0.1:{port}")), "member list names the https:// URL: {text}");
    b.cmd(Some(&alice), &["get", "foo"]);

    // With auth on, the certificate's common name is the user (etcd `AuthInfoFromTLS`): alice
    // may read `foo` and nothing else without any password; a token still takes precedence.
    let root = "--user=root:rootpw";
    b.cmd(Some(&alice), &["user", "add", "root:rootpw", "--interactive=false"]);
    b.cmd(Some(&alice), &["user", "add", "alice:apw", "--interactive=false"]);
    b.cmd(Some(&alice), &["role", "add", "ro"]);
    b.cmd(Some(&alice), &["role", "grant-permission", "ro", "read", "foo"]);
    b.cmd(Some(&alice), &["user", "grant-role", "alice", "ro"]);
    b.cmd(Some(&alice), &["auth", "enable"]);
    b.cmd(Some(&alice), &["get", "foo"]);
    b.cmd(Some(&alice), &["put", "foo", "by-alice"]);
    b.cmd(Some(&alice), &["get", "other"]);
    b.cmd(Some(&alice), &["put", "foo", "by-root", root]);
    b.cmd(Some(&alice), &["get", "foo"]);
    b.cmd(Some(&alice), &["auth", "disable", root]);
    b.finish();
}

/// An `https://` metrics URL serves with the client port's certificate and its client
/// certificate checks, an `http://` one beside it in plain text, as etcd's do
/// (`--listen-metrics-urls`): `/health` answers alice over TLS, and a client without a
/// certificate, or speaking plain HTTP to the TLS port, gets nothing.
#[test]
fn an_https_metrics_port_uses_the_client_ports_certificate_as_in_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let ready = client_config(&certs.ca, Some(&certs.alice), &[b"http/1.1"]);
    let with_metrics = |tls_port: u16, plain_port: u16| {
        let mut flags = certs.server_flags(&["--trusted-ca-file", "--client-cert-auth"]);
        let urls = format!("https://127.0.0.1:{tls_port},http://127.0.0.1:{plain_port}");
        flags.extend(["--listen-metrics-urls".to_string(), urls]);
        flags
    };
    let (etcd_ports, watchkv_ports) = ((free_port(), free_port()), (free_port(), free_port()));
    let _etcd = start_etcd_tls(&dir.path().join("etcd"), &with_metrics(etcd_ports.0, etcd_ports.1), &ready);
    let port = free_port();
    let mut flags = with_metrics(watchkv_ports.0, watchkv_ports.1);
    flags.extend(["--listen-client-urls".to_string(), format!("https://127.0.0.1:{port}")]);
    let _watchkv = start_watchkv_tls(&dir.path().join("watchkv"), port, &flags, &ready);

    for (name, (tls_port, plain_port)) in [("etcd", etcd_ports), ("watchkv", watchkv_ports)] {
        let (code, body) = https(tls_port, Arc::clone(&ready), "GET", "/health", "").expect("TLS /health");
        let health: Value = serde_json::from_str(&body).expect("a JSON health");
        assert_eq!((code, &health["health"]), (200, &json!("true")), "{name}: /health over TLS: {body}");
        let (code, body) = https(tls_port, Arc::clone(&ready), "GET", "/metrics", "").expect("TLS /metrics");
        assert!(code == 200 && body.contains("etcd_server_has_leader"), "{name}: /metrics over TLS: {code} {body}");
        let without = https(tls_port, client_config(&certs.ca, None, &[b"http/1.1"]), "GET", "/health", "");
        assert!(without.is_err(), "{name}: the TLS metrics port answered a client without a certificate: {without:?}");
        assert!(plaintext_request(tls_port).is_empty(), "{name}: the TLS metrics port answered plain HTTP");
        let (code, body) = wire::http_get(plain_port, "/health");
        assert_eq!(code, 200, "{name}: /health on the plain metrics port: {body}");
    }
}

/// With auth on, a gateway request without a token is made as the user its TLS client
/// certificate names (docs/etcd-semantics.md §16, point 5): alice's certificate reads what alice
/// may read and nothing else, and a token, even a bad one, takes precedence over it. etcd 3.4's
/// gateway calls gRPC over its own connection and never sees the client's certificate, so there
/// is no etcd to compare with.
#[test]
fn the_gateway_takes_the_client_certificates_user_with_auth_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let port = free_port();
    let mut flags = certs.server_flags(&["--trusted-ca-file", "--client-cert-auth"]);
    flags.extend(["--listen".to_string(), format!("127.0.0.1:{port}"), "--bcrypt-cost".into(), "4".into()]);
    let as_alice = client_config(&certs.ca, Some(&certs.alice), &[b"http/1.1"]);
    let server = start_watchkv_tls(&dir.path().join("watchkv"), port, &flags, &as_alice);
    // A request with alice's certificate and, if given, a token.
    let call = |uri: &str, token: Option<&str>, body: Value| -> (u16, Value) {
        let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
        let (code, text) = https_with_headers(port, Arc::clone(&as_alice), "POST", uri, &headers, &body.to_string())
            .unwrap_or_else(|e| panic!("POST {uri}: {e}\n{}", server.log_tail(3000)));
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {uri}: not JSON ({e}): {text}"));
        (code, v)
    };
    let ok = |uri: &str, token: Option<&str>, body: Value| -> Value {
        let (code, v) = call(uri, token, body.clone());
        assert_eq!(code, 200, "POST {uri} {body}: {v}");
        v
    };
    let denied = |uri: &str, token: Option<&str>, body: Value, message: &str| {
        let (code, v) = call(uri, token, body.clone());
        assert_eq!((code, &v["message"]), (403, &json!(message)), "POST {uri} {body}: {v}");
    };

    // Before auth is on, anyone may set it up: root with the root role, alice reading `foo`.
    ok("/v3/kv/put", None, json!({"key": b64("foo"), "value": b64("bar")}));
    ok("/v3/kv/put", None, json!({"key": b64("other"), "value": b64("secret")}));
    ok("/v3/auth/user/add", None, json!({"name": "root", "password": "rootpw"}));
    ok("/v3/auth/role/add", None, json!({"name": "root"}));
    ok("/v3/auth/user/grant", None, json!({"user": "root", "role": "root"}));
    ok("/v3/auth/user/add", None, json!({"name": "alice", "password": "apw"}));
    ok("/v3/auth/role/add", None, json!({"name": "ro"}));
    ok("/v3/auth/role/grant", None, json!({"name": "ro", "perm": {"permType": "READ", "key": b64("foo")}}));
    ok("/v3/auth/user/grant", None, json!({"user": "alice", "role": "ro"}));
    ok("/v3/auth/enable", None, json!({}));

    // No token: alice, by her certificate.
    let read = ok("/v3/kv/range", None, json!({"key": b64("foo")}));
    assert_eq!(read["kvs"][0]["value"], json!(b64("bar")), "{read}");
    let denial = "etcdserver: permission denied";
    denied("/v3/kv/range", None, json!({"key": b64("other")}), denial);
    denied("/v3/kv/put", None, json!({"key": b64("foo"), "value": b64("by-alice")}), denial);
    denied("/v3/auth/user/list", None, json!({}), denial);
    // A token takes precedence over the certificate: root's writes, a bad token's refusal.
    let token = ok("/v3/auth/authenticate", None, json!({"name": "root", "password": "rootpw"}));
    let token = token["token"].as_str().expect("a token").to_string();
    ok("/v3/kv/put", Some(&token), json!({"key": b64("foo"), "value": b64("by-root")}));
    let users = ok("/v3/auth/user/list", Some(&token), json!({}));
    assert_eq!(users["users"], json!(["alice", "root"]), "{users}");
    let (code, v) = call("/v3/kv/range", Some("not-a-token"), json!({"key": b64("foo")}));
    assert_eq!((code, &v["message"]), (401, &json!("etcdserver: invalid auth token")), "{v}");
    let read = ok("/v3/kv/range", None, json!({"key": b64("foo")}));
    assert_eq!(read["kvs"][0]["value"], json!(b64("by-root")), "alice reads root's write: {read}");
    // Alice's certificate cannot turn auth off; root's token can, and then anyone may write.
    denied("/v3/auth/disable", None, json!({}), denial);
    ok("/v3/auth/disable", Some(&token), json!({}));
    ok("/v3/kv/put", None, json!({"key": b64("other"), "value": b64("by-anyone")}));
}

#[test]
fn a_trusted_ca_alone_requires_client_certificates_as_in_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let flags = certs.server_flags(&["--trusted-ca-file"]);
    let ready = client_config(&certs.ca, Some(&certs.alice), &[b"http/1.1"]);
    let mut b = Both::start(dir.path(), &certs, &flags, &ready, false);
    let alice = certs.alice.clone();
    b.cmd(Some(&alice), &["put", "k", "v"]);
    b.refused("without a client certificate", None, &["get", "k"]);
    b.cmd(Some(&alice), &["get", "k"]);
    // Without --client-cert-auth the certificate names no user (etcd: `AuthInfoFromCtx` takes
    // one only with `ClientCertAuthEnabled`): with auth on, alice's certificate alone is no
    // one, and a certificate whose name is root would not be root either.
    b.cmd(Some(&alice), &["user", "add", "root:rootpw"]);
    b.cmd(Some(&alice), &["user", "add", "alice:apw"]);
    b.cmd(Some(&alice), &["role", "add", "ro"]);
    b.cmd(Some(&alice), &["role", "grant-permission", "ro", "read", "k"]);
    b.cmd(Some(&alice), &["user", "grant-role", "alice", "ro"]);
    b.cmd(Some(&alice), &["auth", "enable"]);
    b.cmd(Some(&alice), &["get", "k"]);
    b.cmd(Some(&alice), &["--user=alice:apw", "get", "k"]);
    b.cmd(Some(&alice), &["--user=root:rootpw", "auth", "disable"]);
    b.finish();
}

/// The binary's TLS flag checks (and the client URL's).
#[test]
fn tls_flags_are_checked_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let data = dir.path().join("data");
    let (cert, key) = (path(&certs.server.cert), path(&certs.server.key));
    let url = format!("https://127.0.0.1:{}", free_port());
    for (args, expected) in [
        (
            vec!["--listen-client-urls", url.as_str()],
            format!("TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"),
        ),
        (vec!["--cert-file", cert], "--cert-file and --key-file must both be given".to_string()),
        (
            vec!["--listen-metrics-urls", url.as_str()],
            format!("cannot listen on TLS for {}: KeyFile and CertFile are not presented", &url["https://".len()..]),
        ),
        (
            vec!["--listen-metrics-urls", "unix://localhost:2381"],
            "--listen-metrics-urls unix://localhost:2381: unix sockets are not supported".to_string(),
        ),
        (
            vec!["--listen-metrics-urls", "http://127.0.0.1:0,,http://127.0.0.1:0"],
            "URL scheme must be http, https, unix, or unixs: ".to_string(),
        ),
        (
            vec!["--listen-metrics-urls", "tcp://127.0.0.1:2381"],
            "URL scheme must be http, https, unix, or unixs: tcp://127.0.0.1:2381".to_string(),
        ),
        // Listen URLs name an address to bind, as etcd's `checkBindURLs` wants them.
        (
            vec!["--listen-metrics-urls", "http://127.0.0.1:0,http://metrics.example:2381"],
            "--listen-metrics-urls: expected IP in URL for binding (http://metrics.example:2381)".to_string(),
        ),
        (
            vec!["--listen-client-urls", "http://etcd.example:2379"],
            "--listen-client-urls: expected IP in URL for binding (http://etcd.example:2379)".to_string(),
        ),
        (
            vec!["--listen-metrics-urls", "127.0.0.1:2381"],
            "--listen-metrics-urls 127.0.0.1:2381: expected http://host:port or https://host:port".to_string(),
        ),
        (
            vec!["--cert-file", cert, "--key-file", key, "--client-cert-auth"],
            "--client-cert-auth needs --trusted-ca-file".to_string(),
        ),
        // A key that is not the certificate's.
        (vec!["--cert-file", cert, "--key-file", path(&certs.alice.key)], "certificate".to_string()),
        (vec!["--cert-file", cert, "--key-file", key, "--trusted-ca-file", key], "no certificate found".to_string()),
        // Not TLS, but checked with the client URL: a wildcard address needs advertised URLs.
        (
            vec!["--listen-client-urls", "http://0.0.0.0:0"],
            "--advertise-client-urls is required when listening on 0.0.0.0:0".to_string(),
        ),
        // Advertised URLs are checked as etcd's `types.NewURLs` checks them (its texts): an
        // empty one (an unset variable) does not stand in for a real one.
        (
            vec!["--listen-client-urls", "http://0.0.0.0:0", "--advertise-client-urls", ""],
            "URL scheme must be http, https, unix, or unixs: ".to_string(),
        ),
        (
            vec!["--advertise-client-urls", "127.0.0.1:2379"],
            "URL scheme must be http, https, unix, or unixs: 127.0.0.1:2379".to_string(),
        ),
        (
            vec!["--advertise-client-urls", "http://10.0.0.1"],
            "URL address does not have the form \"host:port\": http://10.0.0.1".to_string(),
        ),
        (
            vec!["--advertise-client-urls", "http://10.0.0.1:2379,https://h:2379/v3"],
            "URL must not contain a path: https://h:2379/v3".to_string(),
        ),
    ] {
        let out = exit::run_to_exit(
            Command::new(env!("CARGO_BIN_EXE_watchkv"))
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen", "127.0.0.1:0"].iter().filter(|_| !args.contains(&"--listen-client-urls")))
                .args(&args)
                .env("RUST_LOG", "error"),
            DEADLINE,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "watchkv {args:?} exited successfully: {stderr}");
        assert!(stderr.contains(&expected), "watchkv {args:?}: expected {expected:?} in: {stderr}");
    }
}

/// A client port in use fails the start before the store is opened (etcd binds its listeners
/// first): the data directory is never created.
#[test]
fn a_port_in_use_fails_before_the_store_is_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = held.local_addr().expect("addr").to_string();
    let out = exit::run_to_exit(
        Command::new(env!("CARGO_BIN_EXE_watchkv"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", address.as_str()])
            .env("RUST_LOG", "error"),
        DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "watchkv started on a port in use: {stderr}");
    assert!(stderr.contains(&format!("binding {address}")), "{stderr}");
    assert!(!data.exists(), "the store was opened before the port was bound");
}
