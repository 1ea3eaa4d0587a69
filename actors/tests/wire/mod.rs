//! Shared by the process-level tests (`differential`, `etcd3gw_client`, `kill9`): a blocking
//! HTTP/1.1 client written on `std::net` (unary JSON posts and a full-duplex chunked
//! `/v3/watch` stream, with or without `Expect: 100-continue`), free ports, and server
//! processes (the `watchkv` binary, real etcd) that are killed when dropped and are waited for
//! by polling their port, never by sleeping.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod cluster;
pub mod defrag;
pub mod grpc_server;
pub mod proxy;
pub mod users;

/// How long anything a test expects may take before it fails. Generous: CI machines have two
/// cores and build other crates at the same time.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Deadline for one HTTP exchange.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

#[path = "../ports/mod.rs"]
mod ports;
pub use ports::free_port;

/// Standard base64 (padded), as the gateway expects bytes.
#[must_use]
pub fn b64(s: impl AsRef<[u8]>) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.as_ref();
    let mut out = String::with_capacity(s.len().div_ceil(3) * 4);
    for c in s.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padded or not).
#[must_use]
pub fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => panic!("not base64: {s:?}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for c in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &b) in c.iter().enumerate() {
            n |= val(b) << (18 - 6 * i);
        }
        for i in 0..c.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// An int64 field of a protojson object (a string), 0 when absent (omitted default).
#[must_use]
pub fn int(v: &Value, field: &str) -> i64 {
    match v.get(field) {
        None | Some(Value::Null) => 0,
        Some(Value::String(s)) => s.parse().unwrap_or_else(|_| panic!("{field} is not an int64: {v}")),
        Some(Value::Number(n)) => n.as_i64().unwrap_or_else(|| panic!("{field} is not an int64: {v}")),
        Some(other) => panic!("{field} is not an int64: {other}"),
    }
}

/// A bytes field of a protojson object, decoded (empty when absent).
#[must_use]
pub fn bytes_field(v: &Value, field: &str) -> Vec<u8> {
    v.get(field).and_then(Value::as_str).map(unb64).unwrap_or_default()
}

/// Drops the identity fields a comparison never looks at: `cluster_id`, `member_id`,
/// `raft_term` (they name the cluster, not the behaviour).
pub fn drop_identity(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in ["cluster_id", "member_id", "raft_term"] {
                m.remove(k);
            }
            m.values_mut().for_each(drop_identity);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_identity),
        _ => {}
    }
}

/// One unary HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Lower-cased header names with their values.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the text when it is not JSON).
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Each non-empty line of the body as JSON (streaming endpoints).
    #[must_use]
    pub fn json_lines(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.body)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}")))
            .collect()
    }
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads a status line and headers, skipping `1xx` interim responses (reported through
/// `on_interim`).
fn read_head(r: &mut impl BufRead, mut on_interim: impl FnMut(u16)) -> std::io::Result<(u16, Vec<(String, String)>)> {
    loop {
        let status_line = read_line(r)?;
        let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {status_line:?}"))
        })?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(r)?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        if (100..200).contains(&status) {
            on_interim(status);
            continue;
        }
        return Ok((status, headers));
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Reads one chunk of a chunked body; `None` at the last chunk (trailers consumed).
fn read_chunk(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let size_line = read_line(r)?;
    let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad chunk size {size_line:?}")))?;
    if size == 0 {
        // Trailers (etcd 3.4 sends `Grpc-Trailer-Content-Type`) up to the blank line.
        while !read_line(r)?.is_empty() {}
        return Ok(None);
    }
    let mut data = vec![0; size];
    r.read_exact(&mut data)?;
    let mut crlf = [0; 2];
    r.read_exact(&mut crlf)?;
    Ok(Some(data))
}

/// POSTs `body` to `http://127.0.0.1:port{path}` on a fresh connection and reads the whole
/// response (`Content-Length`, chunked with trailers, or up to EOF).
///
/// # Errors
/// Connection or protocol errors (a server that is down, or killed mid-request).
pub fn try_post(port: u16, path: &str, body: &[u8]) -> std::io::Result<Reply> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut w = stream.try_clone()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    w.write_all(&req)?;
    let mut r = BufReader::new(stream);
    let (status, headers) = read_head(&mut r, |_| {})?;
    let mut body = Vec::new();
    if header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        while let Some(chunk) = read_chunk(&mut r)? {
            body.extend_from_slice(&chunk);
        }
    } else if let Some(len) = header(&headers, "content-length") {
        let len: usize =
            len.parse().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad content-length"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Reply { status, headers, body })
}

/// [`try_post`] of a JSON value; panics on connection errors.
#[must_use]
pub fn post(port: u16, path: &str, body: &Value) -> Reply {
    try_post(port, path, body.to_string().as_bytes()).unwrap_or_else(|e| panic!("POST {path} to port {port}: {e}"))
}

/// POSTs `body` to a server-streaming route (`/v3/election/observe`) and delivers each
/// response line as JSON until the stream ends. A reader thread holds the socket too: shut the
/// returned one down to go away.
///
/// # Errors
/// Connection errors.
pub fn post_stream(port: u16, path: &str, body: &Value) -> std::io::Result<(TcpStream, mpsc::Receiver<Value>)> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    let mut w = stream.try_clone()?;
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    let (tx, rx) = mpsc::channel();
    let reader = stream.try_clone()?;
    thread::spawn(move || {
        let mut r = BufReader::new(reader);
        let Ok((_, headers)) = read_head(&mut r, |_| {}) else { return };
        if !header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
            if let Ok(v) = serde_json::from_slice(&rest) {
                let _ = tx.send(v);
            }
            return;
        }
        let mut buf = Vec::new();
        while let Ok(Some(chunk)) = read_chunk(&mut r) {
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok((stream, rx))
}

/// Polls `POST /v3/kv/range {"key":"AA=="}` until the server answers 200, failing early with
/// `died()`'s text if the process exits.
pub fn wait_until_serving(port: u16, what: &str, mut died: impl FnMut() -> Option<String>) {
    let start = Instant::now();
    let mut last_err = String::new();
    while start.elapsed() < DEADLINE * 2 {
        if let Some(why) = died() {
            panic!("{what} exited before serving on port {port}: {why}");
        }
        match try_post(port, "/v3/kv/range", br#"{"key":"AA=="}"#) {
            Ok(r) if r.status == 200 => return,
            // Serving, with auth enabled: the store answered with etcd's error.
            Ok(r) if r.status == 400 && String::from_utf8_lossy(&r.body).contains("user name is empty") => return,
            Ok(r) => last_err = format!("HTTP {} {}", r.status, String::from_utf8_lossy(&r.body)),
            Err(e) => last_err = e.to_string(),
        }
        // Polling interval between connection attempts, not a synchronisation.
        thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not answer on port {port} within {:?}: {last_err}", DEADLINE * 2);
}

/// A child process killed (SIGKILL) and reaped on drop, with its output in a log file.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Client port.
    pub port: u16,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    /// For messages.
    pub name: String,
}

impl Proc {
    /// The last `n` bytes of the log.
    #[must_use]
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&text[text.len().saturating_sub(n)..]).into_owned()
    }

    /// `Some(status + log tail)` if the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{status}; log tail:\n{}", self.log_tail(4000))),
            _ => None,
        }
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn_logged(mut cmd: Command, log: &Path) -> std::io::Result<Child> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn()
}

/// Starts the `watchkv` server binary of this build on `port` over `data_dir` with extra
/// arguments, and waits until it serves.
#[must_use]
pub fn start_watchkv(data_dir: &Path, port: u16, extra: &[&str]) -> Proc {
    let mut p = spawn_watchkv(data_dir, port, extra);
    wait_until_serving(port, "watchkv", || p.exited());
    p
}

/// Starts the `watchkv` server binary as [`start_watchkv`] does, without waiting; its log is
/// `data_dir` with the extension `log`, or `log` when given.
#[must_use]
pub fn spawn_watchkv_logging_to(data_dir: &Path, port: u16, extra: &[&str], log: Option<&Path>) -> Proc {
    let log = log.map_or_else(|| data_dir.with_extension("log"), Path::to_path_buf);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_watchkv"));
    cmd.arg("--data-dir").arg(data_dir).arg("--listen").arg(format!("127.0.0.1:{port}")).args(extra);
    cmd.env("RUST_LOG", "warn");
    let child = spawn_logged(cmd, &log).unwrap_or_else(|e| panic!("spawning {}: {e}", env!("CARGO_BIN_EXE_watchkv")));
    Proc { child, port, log, name: "watchkv".into() }
}

/// [`spawn_watchkv_logging_to`] with the default log.
#[must_use]
pub fn spawn_watchkv(data_dir: &Path, port: u16, extra: &[&str]) -> Proc {
    spawn_watchkv_logging_to(data_dir, port, extra, None)
}

/// Where a watch stream's requests go: the chunked HTTP body, or another transport's sender.
enum Writer {
    Http(TcpStream),
    Other(Box<dyn RequestSink>),
}

/// Sends JSON watch requests over a transport other than HTTP/1.1 (gRPC in the differential
/// suite), so that the same scenarios drive both.
pub trait RequestSink: Send {
    /// Sends one `WatchRequest` given as grpc-gateway JSON.
    fn send(&mut self, req: &Value);
    /// Ends the client's side of the stream (the response side stays open).
    fn end(&mut self);
}

/// A full-duplex `/v3/watch` stream: requests are written as chunks of a chunked request body
/// while a reader thread delivers each response line as JSON.
pub struct WatchStream {
    writer: Writer,
    lines: mpsc::Receiver<Value>,
    /// What the reader saw: status, headers, interim statuses, errors.
    pub events: mpsc::Receiver<String>,
    /// Lines read so far but not yet taken.
    pending: std::collections::VecDeque<Value>,
    closed_body: bool,
}

impl WatchStream {
    /// Opens the stream; with `expect_continue` the request carries `Expect: 100-continue`
    /// (etcd 3.4 streams both ways only then, docs/etcd-semantics.md §12 item 1) and the first request is written
    /// after the interim `100 Continue` (or after 2 s without one).
    ///
    /// # Errors
    /// Connection errors.
    pub fn open(port: u16, expect_continue: bool) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut writer = stream.try_clone()?;
        let expect = if expect_continue { "Expect: 100-continue\r\n" } else { "" };
        let head = format!(
            "POST /v3/watch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n{expect}\r\n"
        );
        writer.write_all(head.as_bytes())?;
        let (line_tx, lines) = mpsc::channel();
        let (ev_tx, events) = mpsc::channel();
        let (cont_tx, cont_rx) = mpsc::channel::<()>();
        thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let head = read_head(&mut r, |s| {
                let _ = ev_tx.send(format!("interim {s}"));
                let _ = cont_tx.send(());
            });
            let (status, headers) = match head {
                Ok(h) => h,
                Err(e) => {
                    let _ = ev_tx.send(format!("error {e}"));
                    return;
                }
            };
            let _ = ev_tx.send(format!("status {status} {headers:?}"));
            let chunked = header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
            let mut buf: Vec<u8> = Vec::new();
            loop {
                let data = if chunked {
                    match read_chunk(&mut r) {
                        Ok(Some(d)) => d,
                        Ok(None) => break,
                        Err(e) => {
                            let _ = ev_tx.send(format!("error {e}"));
                            break;
                        }
                    }
                } else {
                    let mut d = vec![0; 8192];
                    match r.read(&mut d) {
                        Ok(0) => break,
                        Ok(n) => {
                            d.truncate(n);
                            d
                        }
                        Err(e) => {
                            let _ = ev_tx.send(format!("error {e}"));
                            break;
                        }
                    }
                };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let text = String::from_utf8_lossy(&line);
                    if text.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Value>(text.trim()) {
                        Ok(v) => {
                            if line_tx.send(v).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = ev_tx.send(format!("bad line ({e}): {text}"));
                        }
                    }
                }
            }
            let _ = ev_tx.send("eof".into());
        });
        if expect_continue {
            let _ = cont_rx.recv_timeout(Duration::from_secs(2));
        }
        Ok(Self { writer: Writer::Http(writer), lines, events, pending: Default::default(), closed_body: false })
    }

    /// A stream over another transport: requests go to `sink`, and `lines` delivers each
    /// response as a `{"result":...}` (or `{"error":...}`) value.
    #[must_use]
    pub fn from_parts(sink: Box<dyn RequestSink>, lines: mpsc::Receiver<Value>) -> Self {
        let (_, events) = mpsc::channel();
        Self { writer: Writer::Other(sink), lines, events, pending: Default::default(), closed_body: false }
    }

    /// Writes one request object as a chunk of the request body.
    pub fn send(&mut self, req: &Value) {
        match &mut self.writer {
            Writer::Http(w) => {
                let data = req.to_string();
                let chunk = format!("{:x}\r\n{data}\r\n", data.len());
                w.write_all(chunk.as_bytes()).unwrap_or_else(|e| panic!("writing watch request {req}: {e}"));
            }
            Writer::Other(sink) => sink.send(req),
        }
    }

    /// Writes raw bytes as one chunk (malformed-input cases).
    pub fn send_raw(&mut self, data: &[u8]) {
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        match &mut self.writer {
            Writer::Http(w) => w.write_all(&chunk).expect("writing watch request chunk"),
            Writer::Other(_) => panic!("raw request bytes are an HTTP-only case"),
        }
    }

    /// Ends the request body (half-close at the HTTP level; the response stream stays open).
    pub fn end_body(&mut self) {
        if !self.closed_body {
            self.closed_body = true;
            match &mut self.writer {
                Writer::Http(w) => {
                    let _ = w.write_all(b"0\r\n\r\n");
                }
                Writer::Other(sink) => sink.end(),
            }
        }
    }

    /// The next response line, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(v) = self.pending.pop_front() {
            return Some(v);
        }
        self.lines.recv_timeout(timeout).ok()
    }

    /// Exactly `n` more lines, each within [`DEADLINE`]; returns what arrived if fewer did.
    pub fn take(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.recv(DEADLINE) {
                Some(v) => out.push(v),
                None => break,
            }
        }
        out
    }

    /// Lines until `done(all so far)` holds or `deadline` passes.
    pub fn take_until(&mut self, deadline: Duration, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        let mut out = Vec::new();
        while !done(&out) {
            let left = deadline.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            match self.recv(left) {
                Some(v) => out.push(v),
                None => break,
            }
        }
        out
    }

    /// Every line that arrives within `window` (checks that nothing more comes).
    pub fn drain_for(&mut self, window: Duration) -> Vec<Value> {
        let start = Instant::now();
        let mut out: Vec<Value> = self.pending.drain(..).collect();
        loop {
            let left = window.saturating_sub(start.elapsed());
            if left.is_zero() {
                return out;
            }
            match self.lines.recv_timeout(left) {
                Ok(v) => out.push(v),
                Err(_) => return out,
            }
        }
    }

    /// Closes the connection both ways.
    pub fn close(self) {
        if let Writer::Http(w) = &self.writer {
            let _ = w.shutdown(Shutdown::Both);
        }
    }
}

/// Finds `etcd` on `PATH`; fails naming the Debian package when it is missing or is not 3.4.
#[must_use]
pub fn etcd_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("etcd")).find(|c| c.is_file()))
        .unwrap_or(None);
    let Some(bin) = found else {
        panic!(
            "real etcd 3.4 is the oracle of this test but no `etcd` binary is on PATH: install it with \
             `apt-get install etcd-server etcd-client` (scripts/test.sh does this before running the tests)"
        );
    };
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("etcd Version: 3.4."),
        "{} is not etcd 3.4 (the deliberate-difference table is written against Debian's etcd-server 3.4.23; \
         `apt-get install etcd-server` gives it): {text}",
        bin.display()
    );
    bin
}

/// The command line of a one-member etcd cluster (member `default`) over `data_dir`, serving
/// clients on `client_url` and its peer on `peer_url`, logging warnings only.
#[must_use]
pub fn etcd_member_command(bin: &Path, data_dir: &Path, client_url: &str, peer_url: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["--name", "default", "--listen-client-urls", client_url, "--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url])
        .arg("--initial-cluster")
        .arg(format!("default={peer_url}"))
        .args(["--log-level", "warn"]);
    cmd
}

/// Starts a one-member etcd 3.4 on free loopback ports over `data_dir` and waits until its
/// gateway serves.
#[must_use]
pub fn start_etcd(data_dir: &Path) -> Proc {
    start_etcd_with(data_dir, &[])
}

/// [`start_etcd`] with extra flags.
#[must_use]
pub fn start_etcd_with(data_dir: &Path, extra: &[&str]) -> Proc {
    let bin = etcd_binary();
    let mut last = String::new();
    // A port picked free can be taken before etcd binds it: try a few times.
    for _ in 0..3 {
        let (client, peer) = (free_port(), free_port());
        let _ = std::fs::remove_dir_all(data_dir);
        let log = data_dir.with_extension("log");
        let mut cmd = etcd_member_command(
            &bin,
            data_dir,
            &format!("http://127.0.0.1:{client}"),
            &format!("http://127.0.0.1:{peer}"),
        );
        cmd.args(extra);
        let child = spawn_logged(cmd, &log).unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let mut proc = Proc { child, port: client, log, name: "etcd".into() };
        let start = Instant::now();
        while start.elapsed() < DEADLINE * 2 {
            if let Some(why) = proc.exited() {
                last = why;
                break;
            }
            if let Ok(r) = try_post(client, "/v3/kv/range", br#"{"key":"AA=="}"#) {
                if r.status == 200 {
                    return proc;
                }
            }
            thread::sleep(Duration::from_millis(25));
        }
        if last.is_empty() {
            panic!("etcd did not serve on port {client} within {:?}; log:\n{}", DEADLINE * 2, proc.log_tail(4000));
        }
    }
    panic!("etcd failed to start three times; last exit: {last}");
}

/// Runs an `etcdctl watch` and collects its output lines, its stderr's plain lines (a cancelled
/// watch explains itself there) as `stderr: ...`: until `want` lines arrived (then a short
/// quiet check for extra ones), or, with `want = None`, from the first line (waited for up to
/// the deadline) until silent for `quiet`.
pub fn watch_lines(cmd: &mut Command, want: Option<usize>, quiet: Duration) -> Vec<String> {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn etcdctl watch");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("watch stdout");
    let stderr = child.stderr.take().expect("watch stderr");
    let out_tx = tx.clone();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if out_tx.send(line).is_err() {
                break;
            }
        }
    });
    // A cancelled watch explains itself on stderr; etcdctl's JSON log lines carry timestamps.
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !line.starts_with('{') && tx.send(format!("stderr: {line}")).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let start = Instant::now();
    loop {
        let wait = match want {
            Some(n) if lines.len() >= n => Duration::from_millis(300),
            Some(_) => DEADLINE.saturating_sub(start.elapsed()),
            // The first line may take a while on a loaded machine; after it, silence ends it.
            None if lines.is_empty() => DEADLINE,
            None => quiet,
        };
        match rx.recv_timeout(wait) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
        if start.elapsed() > DEADLINE * 2 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

/// A plain HTTP/1.1 `GET path` (`/health`, `/metrics`): the status code and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    (code, if chunked { dechunk(body) } else { body.to_string() })
}

/// A chunked HTTP/1.1 body (RFC 9112 §7.1) joined: each chunk is its size in hex, CRLF, the
/// bytes, CRLF; a chunk of size 0 ends it.
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").expect("chunk end");
    }
    out
}

/// Polls `check` until it returns `Some`, or panics naming `what` after a generous deadline
/// (three times [`DEADLINE`]).
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE * 3, "{what}: not within {:?}", DEADLINE * 3);
        // Polling interval, not a synchronisation.
        thread::sleep(Duration::from_millis(50));
    }
}
