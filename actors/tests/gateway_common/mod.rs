//! Shared by the HTTP gateway tests: an in-process gateway on `127.0.0.1:0` over a store in a
//! temporary directory, an `awc` client for unary calls, a raw HTTP/1.1 client for full-duplex
//! `/v3/watch` streams (chunked request body written over time, chunked response read line by
//! line), and a panic hook that records panics on the server's threads.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use watchkv::Durability;
use watchkv_actors::gateway::{self, Gateway};
use watchkv_actors::{ActorsConfig, Handle};

/// How long a test waits for something it expects before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

// ----- server-side panics -----

static SERVER_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records every panic on a server thread (actix workers and arbiters are named `actix…`),
/// then runs the default hook. Test threads are named after the test and are not recorded.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            if name.starts_with("actix") {
                if let Ok(mut p) = SERVER_PANICS.lock() {
                    p.push(format!("{name}: {info}"));
                }
            }
            previous(info);
        }));
    });
}

/// Panics recorded on server threads so far (in this test binary).
pub fn server_panics() -> Vec<String> {
    SERVER_PANICS.lock().map(|p| p.clone()).unwrap_or_default()
}

// ----- the server -----

/// How to build the gateway.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// `ActorsConfig::max_watchers_per_stream`.
    pub max_watchers_per_stream: Option<usize>,
    /// `Gateway::max_request_bytes` (mounted with `configure_with`).
    pub max_request_bytes: Option<usize>,
    /// Mount under `web::scope(prefix)`.
    pub prefix: Option<String>,
}

/// A gateway serving on the current actix system.
pub struct Served {
    pub addr: SocketAddr,
    pub handle: Handle,
    pub server: ServerHandle,
    pub dir: tempfile::TempDir,
}

/// Opens a store in a temporary directory and serves the gateway on `127.0.0.1:0`.
pub async fn serve(opts: &Opts) -> Served {
    install_panic_hook();
    let dir = tempfile::tempdir().expect("temp dir");
    // The lowest bcrypt cost: tests add users by the hundred.
    let mut config = ActorsConfig::new(dir.path())
        .with_store(watchkv::StoreConfig::new(dir.path()).with_durability(Durability::Buffered))
        .with_bcrypt_cost(4);
    if let Some(n) = opts.max_watchers_per_stream {
        config = config.with_max_watchers_per_stream(n);
    }
    let handle = watchkv_actors::start(config).await.expect("start the store");
    let configured = opts.max_request_bytes.map(|n| {
        let mut gw = Gateway::new(handle.clone());
        gw.max_request_bytes = n;
        Arc::new(gw)
    });
    let prefix = opts.prefix.clone();
    let h = handle.clone();
    let server = HttpServer::new(move || {
        let app = App::new();
        match (&prefix, &configured) {
            (None, None) => app.configure(gateway::configure(h.clone())),
            (Some(p), None) => app.service(web::scope(p).configure(gateway::configure(h.clone()))),
            (None, Some(gw)) => {
                let gw = Arc::clone(gw);
                app.configure(move |cfg| gateway::configure_with(cfg, gw))
            }
            (Some(p), Some(gw)) => {
                let gw = Arc::clone(gw);
                app.service(web::scope(p).configure(move |cfg| gateway::configure_with(cfg, gw)))
            }
        }
    })
    .workers(2)
    // As the server binary and embedders must: an EOF from the client ends its requests, so a
    // watch client that goes away after ending its body is noticed although nothing is written
    // to it (actix's default keeps such a response, and the client's watchers, forever).
    .h1_allow_half_closed(false)
    .disable_signals()
    .shutdown_timeout(1)
    .bind("127.0.0.1:0")
    .expect("bind 127.0.0.1:0");
    let addr = server.addrs()[0];
    let server = server.run();
    let server_handle = server.handle();
    actix_rt::spawn(server);
    Served { addr, handle, server: server_handle, dir }
}

/// A gateway and a client, for one test.
pub struct Gw {
    pub addr: SocketAddr,
    pub handle: Handle,
    pub prefix: String,
    pub client: awc::Client,
    server: ServerHandle,
    _dir: tempfile::TempDir,
}

impl Gw {
    pub async fn start() -> Self {
        Self::with(Opts::default()).await
    }

    pub async fn with(opts: Opts) -> Self {
        let served = serve(&opts).await;
        Self {
            addr: served.addr,
            handle: served.handle,
            prefix: opts.prefix.unwrap_or_default(),
            client: client(),
            server: served.server,
            _dir: served.dir,
        }
    }

    /// The URL of a gateway route (under the prefix, if any).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{}", self.addr, self.prefix, path)
    }

    /// POSTs `body` to a gateway route; returns the status and the body.
    pub async fn post_raw(&self, path: &str, body: impl Into<bytes::Bytes>) -> (u16, bytes::Bytes) {
        post_raw(&self.client, &self.url(path), body.into()).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POSTs `body` to a gateway route; returns the status and the body parsed as JSON.
    pub async fn post(&self, path: &str, body: impl Into<bytes::Bytes>) -> (u16, Value) {
        let (status, body) = self.post_raw(path, body).await;
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("POST {path}: body is not JSON ({e}): {}", String::from_utf8_lossy(&body)));
        (status, json)
    }

    /// POSTs a JSON value and expects 200.
    pub async fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, json) = self.post(path, body.to_string()).await;
        assert_eq!(status, 200, "POST {path} {body}: {json}");
        json
    }

    /// GETs a route; returns the status and the body as text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let url = self.url(path);
        let mut resp = self.client.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let body = resp.body().limit(16 << 20).await.unwrap_or_else(|e| panic!("GET {url} body: {e}"));
        (resp.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
    }

    /// Puts `key=value` through `/v3/kv/put`; returns the revision.
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let json = self.ok("/v3/kv/put", &serde_json::json!({"key": b64(key), "value": b64(value)})).await;
        rev(&json["header"])
    }

    /// Deletes `key` through `/v3/kv/deleterange`; returns the revision.
    pub async fn del(&self, key: &str) -> i64 {
        let json = self.ok("/v3/kv/deleterange", &serde_json::json!({"key": b64(key)})).await;
        rev(&json["header"])
    }

    /// Opens `/v3/watch` with a chunked request body, optionally with `Expect: 100-continue`.
    pub async fn watch(&self, expect_continue: bool) -> RawStream {
        RawStream::open_chunked(self.addr, &format!("{}/v3/watch", self.prefix), expect_continue).await
    }

    /// Stops the server and the store, and checks that no server thread panicked.
    pub async fn finish(self) {
        self.server.stop(false).await;
        let _ = self.handle.shutdown().await;
        let panics = server_panics();
        assert!(panics.is_empty(), "server threads panicked: {panics:#?}");
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        // Sends the stop command at once; a test that panicked does not wait for it.
        drop(self.server.stop(false));
    }
}

/// An `awc` client with generous timeouts.
pub fn client() -> awc::Client {
    awc::Client::builder().timeout(DEADLINE).disable_redirects().finish()
}

/// POSTs a body; transport errors are returned, not panicked on.
pub async fn post_raw(client: &awc::Client, url: &str, body: bytes::Bytes) -> Result<(u16, bytes::Bytes), String> {
    let mut resp = client.post(url).send_body(body).await.map_err(|e| format!("send: {e}"))?;
    let body = resp.body().limit(64 << 20).await.map_err(|e| format!("body: {e}"))?;
    Ok((resp.status().as_u16(), body))
}

/// Base64 of a string, standard alphabet, padded.
pub fn b64(s: impl AsRef<[u8]>) -> String {
    STANDARD.encode(s.as_ref())
}

/// Decodes base64 into a string.
pub fn unb64(s: &str) -> String {
    String::from_utf8(STANDARD.decode(s).expect("base64")).expect("utf-8")
}

/// The `revision` of a response header (an int64 as a JSON string; absent = 0).
pub fn rev(header: &Value) -> i64 {
    match &header["revision"] {
        Value::Null => 0,
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("revision {s:?}")),
        other => panic!("revision must be a JSON string, got {other}"),
    }
}

/// An int64 field (a JSON string; absent = 0).
pub fn int(v: &Value) -> i64 {
    match v {
        Value::Null => 0,
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("int64 {s:?}")),
        other => panic!("int64 must be a JSON string, got {other}"),
    }
}

// ----- the raw HTTP/1.1 client -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// The head has not arrived.
    Head,
    Chunked,
    Length(usize),
    UntilClose,
}

/// One HTTP/1.1 request whose body is written over time, and its response read incrementally.
pub struct RawStream {
    sock: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    framing: Framing,
    /// The final (non-1xx) status; 0 before it arrived.
    pub status: u16,
    /// Headers of the final response, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// `100 Continue` seen.
    pub continued: bool,
    /// The response body ended (last chunk, full length, or EOF).
    ended: bool,
    /// The socket reached EOF or failed.
    eof: bool,
}

/// A wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

impl RawStream {
    async fn connect(addr: SocketAddr) -> TcpStream {
        let sock = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        sock
    }

    fn new(sock: TcpStream) -> Self {
        Self {
            sock,
            raw: Vec::new(),
            body: Vec::new(),
            framing: Framing::Head,
            status: 0,
            headers: Vec::new(),
            continued: false,
            ended: false,
            eof: false,
        }
    }

    /// Sends a request head announcing a chunked body. With `expect_continue`, waits for the
    /// `100 Continue` before returning, as curl does.
    pub async fn open_chunked(addr: SocketAddr, path: &str, expect_continue: bool) -> Self {
        let mut s = Self::new(Self::connect(addr).await);
        let expect = if expect_continue { "Expect: 100-continue\r\n" } else { "" };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n{expect}\r\n"
        );
        s.send_raw(head.as_bytes()).await.expect("write request head");
        if expect_continue {
            let deadline = Instant::now() + DEADLINE;
            while !s.continued && s.status == 0 {
                match s.fill(deadline).await {
                    Ok(true) => {}
                    Ok(false) => panic!("connection closed before 100 Continue"),
                    Err(TimedOut) => panic!("no 100 Continue within {DEADLINE:?}"),
                }
            }
        }
        s
    }

    /// Sends a whole request with a `Content-Length` body (what `curl -d` does).
    pub async fn open_with_body(addr: SocketAddr, path: &str, body: &[u8]) -> Self {
        let mut s = Self::new(Self::connect(addr).await);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.send_raw(head.as_bytes()).await.expect("write request head");
        s.send_raw(body).await.expect("write request body");
        s
    }

    /// Writes bytes as they are.
    pub async fn send_raw(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(data).await?;
        self.sock.flush().await
    }

    /// Writes one body chunk.
    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        self.send_raw(&chunk).await
    }

    /// Writes one body chunk holding a JSON value; panics if the write fails.
    pub async fn send_json(&mut self, v: &Value) {
        self.send(v.to_string().as_bytes()).await.expect("write a body chunk");
    }

    /// Ends the request body (the last chunk); the connection stays open.
    pub async fn end_body(&mut self) -> std::io::Result<()> {
        self.send_raw(b"0\r\n\r\n").await
    }

    /// Shuts down the write half of the socket.
    pub async fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.sock.shutdown().await
    }

    /// Reads more bytes; `Ok(false)` at EOF.
    async fn fill(&mut self, deadline: Instant) -> Result<bool, TimedOut> {
        if self.eof {
            return Ok(false);
        }
        let mut buf = [0u8; 16 * 1024];
        let read = tokio::time::timeout_at(deadline.into(), self.sock.read(&mut buf)).await.map_err(|_| TimedOut)?;
        match read {
            Ok(0) | Err(_) => {
                self.eof = true;
                self.parse();
                if !matches!(self.framing, Framing::Head) {
                    self.ended = true;
                }
                Ok(false)
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                self.parse();
                Ok(true)
            }
        }
    }

    /// Moves what `raw` holds into the head and the decoded body.
    fn parse(&mut self) {
        loop {
            match self.framing {
                Framing::Head => {
                    let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                    self.raw.drain(..end + 4);
                    let mut lines = head.split("\r\n");
                    let status_line = lines.next().unwrap_or("");
                    let status: u16 = status_line
                        .split(' ')
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
                    if (100..200).contains(&status) {
                        self.continued |= status == 100;
                        continue;
                    }
                    self.status = status;
                    self.headers = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    self.framing =
                        if self.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                            Framing::Chunked
                        } else if let Some(n) = self.header("content-length").and_then(|v| v.parse().ok()) {
                            Framing::Length(n)
                        } else {
                            Framing::UntilClose
                        };
                    if self.framing == Framing::Length(0) {
                        self.ended = true;
                    }
                }
                Framing::Chunked => {
                    if self.ended {
                        return;
                    }
                    let Some(line_end) = find(&self.raw, b"\r\n") else {
                        return;
                    };
                    let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
                    let size_hex = size_text.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_hex, 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {size_text:?}"));
                    if size == 0 {
                        self.ended = true;
                        return;
                    }
                    if self.raw.len() < line_end + 2 + size + 2 {
                        return;
                    }
                    self.body.extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
                    self.raw.drain(..line_end + 2 + size + 2);
                }
                Framing::Length(n) => {
                    let take = self.raw.len().min(n);
                    self.body.extend(self.raw.drain(..take));
                    self.framing = Framing::Length(n - take);
                    if n - take == 0 {
                        self.ended = true;
                    }
                    return;
                }
                Framing::UntilClose => {
                    self.body.append(&mut self.raw);
                    return;
                }
            }
        }
    }

    /// A response header's value (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Waits for the final status line and headers.
    pub async fn wait_head(&mut self) -> u16 {
        let deadline = Instant::now() + DEADLINE;
        while self.status == 0 {
            match self.fill(deadline).await {
                Ok(true) => {}
                Ok(false) => panic!("connection closed before a response head"),
                Err(TimedOut) => panic!("no response head within {DEADLINE:?}"),
            }
        }
        self.status
    }

    /// The next body line by `deadline`: `Ok(None)` once the response has ended.
    pub async fn line_by(&mut self, deadline: Instant) -> Result<Option<String>, TimedOut> {
        loop {
            if let Some(pos) = self.body.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=pos).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..pos]).into_owned()));
            }
            if self.ended || (self.eof && self.status == 0) {
                if self.body.is_empty() {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.body);
                return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
            }
            self.fill(deadline).await?;
        }
    }

    /// The next body line within [`DEADLINE`]; `None` once the response has ended.
    pub async fn next_line(&mut self) -> Option<String> {
        self.line_by(Instant::now() + DEADLINE)
            .await
            .unwrap_or_else(|_| panic!("no watch response within {DEADLINE:?}"))
    }

    /// The next line, which must be `{"result":{...}}`; returns the inner object.
    pub async fn next_result(&mut self) -> Value {
        let line = self.next_line().await.expect("the watch stream ended, expected a result");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("line is not JSON ({e}): {line}"));
        match v {
            Value::Object(mut m) if m.len() == 1 && m.contains_key("result") => m.remove("result").unwrap_or_default(),
            other => panic!("expected {{\"result\":...}}, got {other}"),
        }
    }

    /// The next line, which must be `{"error":{"code":N,"message":...}}`; returns the inner
    /// object.
    pub async fn next_error(&mut self) -> Value {
        let line = self.next_line().await.expect("the watch stream ended, expected an error line");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("line is not JSON ({e}): {line}"));
        match v {
            Value::Object(mut m) if m.len() == 1 && m.contains_key("error") => m.remove("error").unwrap_or_default(),
            other => panic!("expected {{\"error\":...}}, got {other}"),
        }
    }

    /// Waits for the response to end (its last chunk, or the connection closing).
    pub async fn expect_end(&mut self) {
        if let Some(line) = self.next_line().await {
            panic!("expected the watch stream to end, got {line}");
        }
    }

    /// A line that arrives within `window`, if any (for checks that something does *not*
    /// arrive; never used to wait for something expected).
    pub async fn line_within(&mut self, window: Duration) -> Option<String> {
        self.line_by(Instant::now() + window).await.unwrap_or(None)
    }

    /// Whether the response body has ended.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Waits, up to [`DEADLINE`], until `check` holds on a fresh value from `probe`.
pub async fn wait_until<T, F, Fut>(what: &str, mut probe: F, check: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        let v = probe().await;
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last: {v:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
