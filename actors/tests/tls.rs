//! TLS on the client port, compared with real etcd 3.4.23 run with the same certificates: etcdctl
//! with `--cacert` (and `--cert`/`--key`) against both, with and without client-certificate
//! auth; clients without a certificate, or with one from another CA, refused by both; the
//! gateway over HTTPS; a plaintext client refused without harm to the server. The tests make
//! their own CA, server certificate (IP SAN 127.0.0.1, DNS localhost) and client certificates
//! (Common Name = the user) with rcgen.

mod wire;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use wire::{b64, drop_identity, free_port, Proc, DEADLINE};

/// How long a watch must stay silent on etcd before its output counts as complete.
const WATCH_QUIET: Duration = Duration::from_millis(1500);

/// A certificate and its key, as PEM files.
#[derive(Clone)]
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

/// Everything the tests need, written into one directory.
struct Certs {
    ca: PathBuf,
    server: Pair,
    /// Signed by `ca`, Common Name "alice".
    alice: Pair,
    /// Signed by a CA the servers do not trust, Common Name "mallory".
    untrusted: Pair,
}

/// A CA: its certificate written to `path`, and what signs with it.
fn make_ca(name: &str, path: &Path) -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("CA certificate");
    std::fs::write(path, cert.pem()).expect("write CA");
    Issuer::new(params, key)
}

/// A leaf certificate signed by `issuer`, written as `<dir>/<name>.pem` and `<name>-key.pem`.
fn make_leaf(
    issuer: &Issuer<'static, KeyPair>,
    dir: &Path,
    name: &str,
    common_name: &str,
    sans: &[&str],
    usages: &[ExtendedKeyUsagePurpose],
) -> Pair {
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_string()).collect::<Vec<_>>()).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = usages.to_vec();
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    let pair = Pair { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}-key.pem")) };
    std::fs::write(&pair.cert, cert.pem()).expect("write certificate");
    std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
    pair
}

fn make_certs(dir: &Path) -> Certs {
    let ca_path = dir.join("ca.pem");
    let ca = make_ca("watchkv test CA", &ca_path);
    let other = make_ca("someone else's CA", &dir.join("other-ca.pem"));
    Certs {
        // Client auth too: etcd 3.4's gateway dials its own gRPC server with this certificate,
        // which client-certificate auth then verifies (etcd's TLS guide asks for both usages).
        server: make_leaf(
            &ca,
            dir,
            "server",
            "watchkv test server",
            &["127.0.0.1", "localhost"],
            &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        ),
        alice: make_leaf(&ca, dir, "alice", "alice", &[], &[ExtendedKeyUsagePurpose::ClientAuth]),
        untrusted: make_leaf(&other, dir, "mallory", "mallory", &[], &[ExtendedKeyUsagePurpose::ClientAuth]),
        ca: ca_path,
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

impl Certs {
    /// The server flags, the same for etcd and watchkv.
    fn server_flags(&self, client_auth: &[&str]) -> Vec<String> {
        let mut flags = vec![
            "--cert-file".to_string(),
            path(&self.server.cert).to_string(),
            "--key-file".to_string(),
            path(&self.server.key).to_string(),
        ];
        for flag in client_auth {
            match *flag {
                "--trusted-ca-file" => flags.extend(["--trusted-ca-file".to_string(), path(&self.ca).to_string()]),
                other => flags.push(other.to_string()),
            }
        }
        flags
    }
}

// ---------------------------------------------------------------------------------------------
// A small HTTPS client (rustls, blocking).

/// A client configuration trusting `ca`, presenting `client` if given, offering `alpn`.
fn client_config(ca: &Path, client: Option<&Pair>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(watchkv_actors::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(pair) => {
            let certs = CertificateDer::pem_file_iter(&pair.cert)
                .expect("read client certificate")
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate PEM");
            let key = PrivateKeyDer::from_pem_file(&pair.key).expect("client key");
            builder.with_client_auth_cert(certs, key).expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A blocking TLS client connection.
type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `port`, handshake done; the negotiated ALPN protocol.
fn tls_connect(port: u16, config: Arc<rustls::ClientConfig>) -> std::io::Result<(TlsClient, Option<Vec<u8>>)> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(DEADLINE))?;
    tcp.set_write_timeout(Some(DEADLINE))?;
    let server_name = ServerName::try_from("127.0.0.1").expect("server name");
    let connection = rustls::ClientConnection::new(config, server_name).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    let alpn = stream.conn.alpn_protocol().map(<[u8]>::to_vec);
    Ok((stream, alpn))
}

/// An HTTP/1.1 request over TLS: the status code and the body.
fn https(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    uri: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let (mut stream, _) = tls_connect(port, config)?;
    write!(
        stream,
        "{method} {uri} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            // A server that closes without close_notify (Go does) ends the response too.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.to_string() };
    Ok((code, body))
}

/// The payload of a chunked body.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until the server on `port` answers `/health` over TLS.
fn wait_until_serving_tls(proc: &mut Proc, config: &Arc<rustls::ClientConfig>) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < DEADLINE * 2 {
        if let Some(why) = proc.exited() {
            panic!("{} exited before serving on port {}: {why}", proc.name, proc.port);
        }
        match https(proc.port, Arc::clone(config), "GET", "/health", "") {
            Ok((200, _)) => return,
            Ok((code, body)) => last = format!("HTTP {code} {body}"),
            Err(e) => last = e.to_string(),
        }
        // Polling interval between connection attempts, not a synchronisation.
        thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} did not serve TLS on port {} within {:?}: {last}\n{}",
        proc.name,
        proc.port,
        DEADLINE * 2,
        proc.log_tail(3000)
    );
}

fn spawn_logged(mut cmd: Command, log: &Path) -> std::process::Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open log");
    let err = out.try_clone().expect("clone log");
    cmd.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn().expect("spawn server")
}

/// etcd 3.4 serving `https://127.0.0.1:<port>` with `flags`.
fn start_etcd_tls(data_dir: &Path, flags: &[String], ready: &Arc<rustls::ClientConfig>) -> Proc {
    let bin = wire::etcd_binary();
    let (client, peer) = (free_port(), free_port());
    let log = data_dir.with_extension("log");
    let c = format!("https://127.0.0.1:{client}");
    let p = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(&bin);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["--name", "default", "--listen-client-urls", &c, "--advertise-client-urls", &c])
        .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
        .arg("--initial-cluster")
        .arg(format!("default={p}"))
        .args(["--log-level", "warn"])
        .args(flags);
    let mut proc = Proc { child: spawn_logged(cmd, &log), port: client, log, name: "etcd".into() };
    wait_until_serving_tls(&mut proc, ready);
    proc
}

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
// etcdctl over TLS.

/// etcdctl against `https://127.0.0.1:<port>` trusting the test CA, with `client`'s certificate.
fn etcdctl(port: u16, certs: &Certs, client: Option<&Pair>, timeouts: &[&str]) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints=https://127.0.0.1:{port}")).arg("--cacert").arg(&certs.ca);
    if let Some(pair) = client {
        cmd.arg("--cert").arg(&pair.cert).arg("--key").arg(&pair.key);
    }
    cmd.args(timeouts);
    cmd
}

const TIMEOUTS: &[&str] = &["--command-timeout=20s", "--dial-timeout=20s"];
/// For commands expected to fail at the handshake: etcdctl retries until its dial timeout.
const SHORT_TIMEOUTS: &[&str] = &["--command-timeout=5s", "--dial-timeout=3s"];

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running etcdctl (install Debian's etcd-client; scripts/test.sh does): {e}"))
}

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

impl Both<'_> {
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
    let etcd = start_etcd_tls(&dir.path().join("etcd"), &flags, &ready);
    let port = free_port();
    let mut wk_flags = flags.clone();
    wk_flags.extend(["--listen".to_string(), format!("127.0.0.1:{port}")]);
    let watchkv = start_watchkv_tls(&dir.path().join("watchkv"), port, &wk_flags, &ready);
    let mut b = Both { etcd, watchkv, certs: &certs, failures: Vec::new(), steps: 0 };

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
    let etcd = start_etcd_tls(&dir.path().join("etcd"), &flags, &ready);
    // etcd's spelling of the address.
    let port = free_port();
    let mut wk_flags = flags.clone();
    wk_flags.extend(["--listen-client-urls".to_string(), format!("https://127.0.0.1:{port}")]);
    let watchkv = start_watchkv_tls(&dir.path().join("watchkv"), port, &wk_flags, &ready);
    let mut b = Both { etcd, watchkv, certs: &certs, failures: Vec::new(), steps: 0 };
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

#[test]
fn a_trusted_ca_alone_requires_client_certificates_as_in_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let flags = certs.server_flags(&["--trusted-ca-file"]);
    let ready = client_config(&certs.ca, Some(&certs.alice), &[b"http/1.1"]);
    let etcd = start_etcd_tls(&dir.path().join("etcd"), &flags, &ready);
    let port = free_port();
    let mut wk_flags = flags.clone();
    wk_flags.extend(["--listen".to_string(), format!("127.0.0.1:{port}")]);
    let watchkv = start_watchkv_tls(&dir.path().join("watchkv"), port, &wk_flags, &ready);
    let mut b = Both { etcd, watchkv, certs: &certs, failures: Vec::new(), steps: 0 };
    let alice = certs.alice.clone();
    b.cmd(Some(&alice), &["put", "k", "v"]);
    b.refused("without a client certificate", None, &["get", "k"]);
    b.cmd(Some(&alice), &["get", "k"]);
    b.finish();
}

/// The binary's TLS flag checks.
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
            vec!["--cert-file", cert, "--key-file", key, "--client-cert-auth"],
            "--client-cert-auth needs --trusted-ca-file".to_string(),
        ),
        // A key that is not the certificate's.
        (vec!["--cert-file", cert, "--key-file", path(&certs.alice.key)], "certificate".to_string()),
        (vec!["--cert-file", cert, "--key-file", key, "--trusted-ca-file", key], "no certificate found".to_string()),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_watchkv"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"].iter().filter(|_| !args.contains(&"--listen-client-urls")))
            .args(&args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run watchkv");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for watchkv") {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("watchkv {args:?} is still running: it must refuse to start");
            }
            // Polling a child process for its exit, not a synchronisation.
            thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
        assert!(!status.success(), "watchkv {args:?} exited successfully: {stderr}");
        assert!(stderr.contains(&expected), "watchkv {args:?}: expected {expected:?} in: {stderr}");
    }
}
