//! TLS fixtures shared by the TLS tests (`tls`, `mirror_tls`): a CA, server and client
//! certificates made with rcgen (server: IP SAN 127.0.0.1, DNS localhost; clients: Common Name
//! = the user), a small blocking HTTPS client (rustls), etcd 3.4 serving TLS, and etcdctl over
//! TLS. Each test binary that includes it also includes `wire`.
#![allow(dead_code)]

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

use crate::wire::{self, free_port, Proc, DEADLINE};

/// A certificate and its key, as PEM files.
#[derive(Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything the tests need, written into one directory.
pub struct Certs {
    pub ca: PathBuf,
    pub server: Pair,
    /// Signed by `ca`, Common Name "alice".
    pub alice: Pair,
    /// Signed by a CA the servers do not trust, Common Name "mallory".
    pub untrusted: Pair,
}

/// A CA: its certificate written to `path`, and what signs with it.
pub fn make_ca(name: &str, path: &Path) -> Issuer<'static, KeyPair> {
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
pub fn make_leaf(
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

pub fn make_certs(dir: &Path) -> Certs {
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

pub fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

impl Certs {
    /// The server flags, the same for etcd and watchkv.
    pub fn server_flags(&self, client_auth: &[&str]) -> Vec<String> {
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
pub fn client_config(ca: &Path, client: Option<&Pair>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
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
pub type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `port`, handshake done; the negotiated ALPN protocol.
pub fn tls_connect(port: u16, config: Arc<rustls::ClientConfig>) -> std::io::Result<(TlsClient, Option<Vec<u8>>)> {
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
pub fn https(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    uri: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    https_with_headers(port, config, method, uri, &[], body)
}

/// [`https`] with extra request headers (`Authorization`, say).
pub fn https_with_headers(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let (mut stream, _) = tls_connect(port, config)?;
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    write!(
        stream,
        "{method} {uri} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
pub fn unchunk(mut body: &str) -> String {
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
pub fn wait_until_serving_tls(proc: &mut Proc, config: &Arc<rustls::ClientConfig>) {
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

pub fn spawn_logged(mut cmd: Command, log: &Path) -> std::process::Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open log");
    let err = out.try_clone().expect("clone log");
    cmd.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn().expect("spawn server")
}

/// etcd 3.4 serving `https://127.0.0.1:<port>` with `flags`.
pub fn start_etcd_tls(data_dir: &Path, flags: &[String], ready: &Arc<rustls::ClientConfig>) -> Proc {
    start_etcd_tls_on(data_dir, (free_port(), free_port()), flags, ready)
}

/// etcd 3.4 serving `https://127.0.0.1:<client>` (peers on plaintext `<peer>`) with `flags`:
/// the same ports again restart a stopped etcd on its data directory.
pub fn start_etcd_tls_on(
    data_dir: &Path,
    (client, peer): (u16, u16),
    flags: &[String],
    ready: &Arc<rustls::ClientConfig>,
) -> Proc {
    let bin = wire::etcd_binary();
    let log = data_dir.with_extension("log");
    let mut cmd = wire::etcd_member_command(
        &bin,
        data_dir,
        &format!("https://127.0.0.1:{client}"),
        &format!("http://127.0.0.1:{peer}"),
    );
    cmd.args(flags);
    let mut proc = Proc { child: spawn_logged(cmd, &log), port: client, log, name: "etcd".into() };
    wait_until_serving_tls(&mut proc, ready);
    proc
}

/// etcdctl against `https://127.0.0.1:<port>` trusting the test CA, with `client`'s certificate.
pub fn etcdctl(port: u16, certs: &Certs, client: Option<&Pair>, timeouts: &[&str]) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints=https://127.0.0.1:{port}")).arg("--cacert").arg(&certs.ca);
    if let Some(pair) = client {
        cmd.arg("--cert").arg(&pair.cert).arg("--key").arg(&pair.key);
    }
    cmd.args(timeouts);
    cmd
}

pub const TIMEOUTS: &[&str] = &["--command-timeout=20s", "--dial-timeout=20s"];

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running etcdctl (install Debian's etcd-client; scripts/test.sh does): {e}"))
}
