//! A load tool that runs the same HTTP/JSON load against watchkv and etcd, one after the other,
//! and prints a side-by-side table. Run with
//! `cargo build --release -p watchkv-actors --bin watchkv --example load` and then
//! `cargo run --release -p watchkv-actors --example load -- [OPTIONS]`.
//!
//! For each server (started here on 127.0.0.1 with a temporary data directory, killed at the end
//! even on errors):
//! 1. puts: `--clients` keep-alive HTTP clients, each doing sequential `POST /v3/kv/put`, for
//!    `--puts` puts in total → puts/s and latency percentiles;
//! 2. watch fan-out: `--streams` `POST /v3/watch` connections (chunked body, `Expect:
//!    100-continue`, so that etcd 3.4 streams both ways), each creating `--watchers-per-stream`
//!    watchers on one prefix, then `--rate` puts/s for `--duration-secs` seconds whose values
//!    carry a sequence number and the send time → events/s, put→event latency, and a check that
//!    every watcher got every acknowledged put exactly once and in revision order;
//! 3. the server's CPU time (utime+stime from `/proc/<pid>/stat`) per scenario and its peak RSS
//!    (`VmHWM` from `/proc/<pid>/status`).
//!
//! The client side runs on one thread (an actix-rt system), so that the servers keep most of the
//! machine; its own CPU time is reported too. Every loop is bounded in count and in time.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Buf as _, BytesMut};
use clap::Parser;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use watchkv_actors::grpc::pb::etcdserverpb::kv_client::KvClient;
use watchkv_actors::grpc::pb::etcdserverpb::PutRequest;

/// Runs the same put and watch fan-out load against watchkv and etcd and compares them.
#[derive(Debug, Clone, Parser)]
#[command(about)]
struct Args {
    /// The watchkv server binary (built with `cargo build --release -p watchkv-actors --bin watchkv`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/watchkv"))]
    watchkv_bin: PathBuf,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Which servers to run: `both`, `watchkv` or `etcd`.
    #[arg(long, default_value = "both")]
    only: String,
    /// Directory under which each server's temporary data directory is created.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Scenario 1: total puts.
    #[arg(long, default_value_t = 20_000)]
    puts: u64,
    /// Scenario 1: concurrent keep-alive clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Scenario 1: value size in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Scenario 1 over `http` (the JSON gateway, one keep-alive connection per client) or `grpc`
    /// (etcd's gRPC API: clients share one HTTP/2 connection, as etcd's clients do).
    #[arg(long, default_value = "http")]
    protocol: String,
    /// Scenario 1: give up after this many seconds.
    #[arg(long, default_value_t = 45)]
    s1_timeout_secs: u64,
    /// Scenario 2: watch streams (HTTP connections).
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Scenario 2: watchers per stream, all on the same prefix.
    #[arg(long, default_value_t = 10)]
    watchers_per_stream: usize,
    /// Scenario 2: puts per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Scenario 2: seconds of puts.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Scenario 2: after the last put, wait at most this many seconds for events.
    #[arg(long, default_value_t = 20)]
    drain_timeout_secs: u64,
    /// If set, `perf record -g` each server during each scenario into this directory.
    #[arg(long)]
    perf_dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Watchkv,
    Etcd,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Watchkv => "watchkv",
            Kind::Etcd => "etcd",
        }
    }
}

/// A running server; killed (and its data directory removed) when dropped.
struct Server {
    kind: Kind,
    child: Child,
    pid: u32,
    base: String,
    log: PathBuf,
    cmdline: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn cmdline_of(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), shell_quote(&v.to_string_lossy()));
        }
    }
    s.push_str(&shell_quote(&cmd.get_program().to_string_lossy()));
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(&a.to_string_lossy()));
    }
    s
}

fn start_server(kind: Kind, args: &Args) -> anyhow::Result<Server> {
    let dir = match &args.data_root {
        Some(root) => tempfile::Builder::new().prefix(&format!("load-{}-", kind.name())).tempdir_in(root)?,
        None => tempfile::Builder::new().prefix(&format!("load-{}-", kind.name())).tempdir()?,
    };
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let mut cmd = match kind {
        Kind::Watchkv => {
            let mut c = Command::new(&args.watchkv_bin);
            c.env("RUST_LOG", "warn")
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--durability")
                .arg("fsync");
            c
        }
        Kind::Etcd => {
            let peer = free_port()?;
            let mut c = Command::new(&args.etcd_bin);
            c.arg("--name")
                .arg("load")
                .arg("--data-dir")
                .arg(&data)
                .arg(format!("--listen-client-urls={base}"))
                .arg(format!("--advertise-client-urls={base}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--initial-cluster=load=http://127.0.0.1:{peer}"))
                .arg("--logger=zap")
                .arg("--log-level=warn");
            c
        }
    };
    let log = dir.path().join("server.log");
    let out = File::create(&log)?;
    cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    let cmdline = cmdline_of(&cmd);
    let child = cmd.spawn().with_context(|| format!("starting {cmdline}"))?;
    let pid = child.id();
    Ok(Server { kind, child, pid, base, log, cmdline, _dir: dir })
}

fn log_tail(path: &Path, lines: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits (at most 30 s) until the server answers a range.
async fn wait_ready(server: &mut Server, client: &awc::Client) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let url = format!("{}/v3/kv/range", server.base);
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(status) = server.child.try_wait()? {
            bail!("{} exited during startup ({status}); log:\n{}", server.kind.name(), log_tail(&server.log, 20));
        }
        if post(client, &url, r#"{"key":"AA=="}"#.to_string()).await.is_ok() {
            return Ok(start.elapsed());
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{} not ready after 30 s; log:\n{}", server.kind.name(), log_tail(&server.log, 20))
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// utime+stime in clock ticks (fields 14 and 15 of `/proc/<pid>/stat`).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A `kB` line of `/proc/<pid>/status` (`VmHWM`, `VmRSS`) or `Threads`.
fn status_field(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU seconds of the server and of this process over a span.
struct CpuSpan {
    pid: String,
    server0: u64,
    self0: u64,
    t0: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    server_s: f64,
    self_s: f64,
    wall_s: f64,
}

impl CpuSpan {
    fn start(pid: u32) -> Self {
        let pid = pid.to_string();
        Self { server0: cpu_ticks(&pid).unwrap_or(0), self0: cpu_ticks("self").unwrap_or(0), pid, t0: Instant::now() }
    }

    fn end(&self, tck: f64) -> Cpu {
        Cpu {
            server_s: cpu_ticks(&self.pid).unwrap_or(0).saturating_sub(self.server0) as f64 / tck,
            self_s: cpu_ticks("self").unwrap_or(0).saturating_sub(self.self0) as f64 / tck,
            wall_s: self.t0.elapsed().as_secs_f64(),
        }
    }
}

/// `perf record` attached to a server for one scenario.
struct Perf(Option<Child>);

impl Perf {
    fn start(args: &Args, server: &Server, scenario: &str) -> Self {
        let Some(dir) = &args.perf_dir else {
            return Self(None);
        };
        let _ = std::fs::create_dir_all(dir);
        let out = dir.join(format!("{}-{scenario}.perf.data", server.kind.name()));
        let child = Command::new("perf")
            .args(["record", "-F", "499", "-g", "-p", &server.pid.to_string(), "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        std::thread::sleep(Duration::from_millis(300));
        Self(child)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------

fn http_client(pool: usize) -> awc::Client {
    http_client_timeout(pool, Duration::from_secs(10))
}

fn http_client_timeout(pool: usize, timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .limit(pool)
                .conn_keep_alive(Duration::from_secs(120))
                .conn_lifetime(Duration::from_secs(600)),
        )
        .timeout(timeout)
        .disable_redirects()
        .finish()
}

/// One unary POST; the body is read to the end so that the connection goes back to the pool.
async fn post(client: &awc::Client, url: &str, body: String) -> Result<(), String> {
    let mut resp = client
        .post(url)
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let bytes = resp.body().limit(1 << 20).await.map_err(|e| format!("body: {e}"))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(())
}

fn put_body(key: &[u8], value: &[u8]) -> String {
    format!(r#"{{"key":"{}","value":"{}"}}"#, B64.encode(key), B64.encode(value))
}

/// Nearest-rank percentile of a sorted slice.
fn pct(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: concurrent puts
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct S1 {
    done: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    lat_us: Vec<u64>,
    cpu: Cpu,
    timed_out: bool,
}

/// One put, over the protocol scenario 1 runs on.
#[derive(Clone)]
enum PutClient {
    Http(awc::Client, Rc<str>),
    Grpc(KvClient<tonic::transport::Channel>),
}

impl PutClient {
    async fn new(args: &Args, server: &Server) -> anyhow::Result<Self> {
        Ok(match args.protocol.as_str() {
            "http" => Self::Http(http_client(args.clients.max(1) + 8), format!("{}/v3/kv/put", server.base).into()),
            "grpc" => {
                let channel = tonic::transport::Channel::from_shared(server.base.clone())?
                    .connect_timeout(Duration::from_secs(10))
                    .connect()
                    .await?;
                Self::Grpc(KvClient::new(channel))
            }
            other => bail!("--protocol must be http or grpc, not {other}"),
        })
    }

    async fn put(&self, key: Vec<u8>, value: &[u8]) -> Result<(), String> {
        match self {
            Self::Http(client, url) => post(client, url, put_body(&key, value)).await,
            Self::Grpc(kv) => {
                let req = PutRequest { key, value: value.to_vec(), ..Default::default() };
                kv.clone().put(req).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}

async fn scenario_puts(args: &Args, server: &Server, tck: f64) -> S1 {
    let client = match PutClient::new(args, server).await {
        Ok(c) => c,
        Err(e) => {
            return S1 {
                done: 0,
                errors: 1,
                first_error: Some(format!("{e:#}")),
                secs: 0.0,
                lat_us: Vec::new(),
                cpu: CpuSpan::start(server.pid).end(tck),
                timed_out: false,
            }
        }
    };
    let value: Rc<[u8]> = vec![b'x'; args.value_size].into();

    // Warm-up: open every connection once (not measured).
    let warm: Vec<_> = (0..args.clients)
        .map(|i| {
            let (client, value) = (client.clone(), value.clone());
            actix_rt::spawn(async move { client.put(format!("/warm/{i}").into_bytes(), &value).await })
        })
        .collect();
    let _ = futures::future::join_all(warm).await;

    let next = Rc::new(Cell::new(0u64));
    let errors = Rc::new(Cell::new(0u64));
    let first_error: Rc<RefCell<Option<String>>> = Rc::default();
    let total = args.puts;
    let per_client = (total as usize / args.clients).max(16);
    let perf = Perf::start(args, server, "s1");
    let span = CpuSpan::start(server.pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.s1_timeout_secs);
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| {
            let (client, value) = (client.clone(), value.clone());
            let (next, errors, first_error) = (next.clone(), errors.clone(), first_error.clone());
            actix_rt::spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                loop {
                    let i = next.get();
                    if i >= total || Instant::now() >= deadline {
                        break;
                    }
                    next.set(i + 1);
                    let key = format!("/load/{i:08}").into_bytes();
                    let t = Instant::now();
                    match client.put(key, &value).await {
                        Ok(()) => lat.push(t.elapsed().as_micros() as u64),
                        Err(e) => {
                            errors.set(errors.get() + 1);
                            first_error.borrow_mut().get_or_insert(e);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat_us = Vec::with_capacity(total as usize);
    for t in futures::future::join_all(tasks).await {
        lat_us.extend(t.unwrap_or_default());
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = span.end(tck);
    drop(perf);
    lat_us.sort_unstable();
    let first_error = first_error.borrow().clone();
    S1 {
        done: lat_us.len() as u64,
        errors: errors.get(),
        first_error,
        secs,
        lat_us,
        cpu,
        timed_out: next.get() < total,
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: watch fan-out over raw HTTP/1.1 streams
// ---------------------------------------------------------------------------------------------

/// Bytes each watch stream asks the socket for per read.
const READ_BUFFER: usize = 64 * 1024;

/// Decodes one HTTP/1.1 response (interim 1xx heads, then a chunked, sized or close-delimited
/// body) as bytes arrive.
#[derive(Default)]
struct HttpDecoder {
    raw: BytesMut,
    body: Vec<u8>,
    state: DecState,
    status: Option<u16>,
    got_continue: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum DecState {
    #[default]
    Head,
    ChunkSize,
    ChunkData(usize),
    ChunkCrlf,
    Sized(usize),
    UntilClose,
    Done,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl HttpDecoder {
    fn advance(&mut self) -> Result<(), String> {
        loop {
            match self.state {
                DecState::Head => {
                    let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                        if self.raw.len() > 64 * 1024 {
                            return Err("response head too large".into());
                        }
                        return Ok(());
                    };
                    let head = self.raw.split_to(end + 4);
                    let text = String::from_utf8_lossy(&head);
                    let mut lines = text.split("\r\n");
                    let status_line = lines.next().unwrap_or("");
                    let code: u16 = status_line
                        .split(' ')
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
                    if (100..200).contains(&code) {
                        self.got_continue |= code == 100;
                        continue;
                    }
                    self.status = Some(code);
                    let (mut chunked, mut len) = (false, None);
                    for l in lines {
                        if let Some((k, v)) = l.split_once(':') {
                            let k = k.trim().to_ascii_lowercase();
                            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                                chunked = true;
                            } else if k == "content-length" {
                                len = v.trim().parse::<usize>().ok();
                            }
                        }
                    }
                    self.state = if chunked {
                        DecState::ChunkSize
                    } else if let Some(n) = len {
                        DecState::Sized(n)
                    } else {
                        DecState::UntilClose
                    };
                }
                DecState::ChunkSize => {
                    let Some(end) = find(&self.raw, b"\r\n") else {
                        return Ok(());
                    };
                    let line = self.raw.split_to(end + 2);
                    let hex = String::from_utf8_lossy(&line[..end]);
                    let hex = hex.split(';').next().unwrap_or("").trim();
                    let n = usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {hex:?}"))?;
                    self.state = if n == 0 { DecState::Done } else { DecState::ChunkData(n) };
                }
                DecState::ChunkData(n) => {
                    if self.raw.is_empty() {
                        return Ok(());
                    }
                    let k = n.min(self.raw.len());
                    self.body.extend_from_slice(&self.raw[..k]);
                    self.raw.advance(k);
                    self.state = if k == n { DecState::ChunkCrlf } else { DecState::ChunkData(n - k) };
                }
                DecState::ChunkCrlf => {
                    if self.raw.len() < 2 {
                        return Ok(());
                    }
                    self.raw.advance(2);
                    self.state = DecState::ChunkSize;
                }
                DecState::Sized(n) => {
                    if self.raw.is_empty() {
                        return Ok(());
                    }
                    let k = n.min(self.raw.len());
                    self.body.extend_from_slice(&self.raw[..k]);
                    self.raw.advance(k);
                    self.state = if k == n { DecState::Done } else { DecState::Sized(n - k) };
                }
                DecState::UntilClose => {
                    self.body.extend_from_slice(&self.raw);
                    self.raw.clear();
                    return Ok(());
                }
                DecState::Done => return Ok(()),
            }
        }
    }

    /// Takes every complete line of the body (as one string), leaving any partial line.
    fn take_lines(&mut self) -> Result<String, String> {
        let Some(last) = self.body.iter().rposition(|&b| b == b'\n') else {
            return Ok(String::new());
        };
        let rest = self.body.split_off(last + 1);
        let lines = std::mem::replace(&mut self.body, rest);
        String::from_utf8(lines).map_err(|e| format!("response body is not UTF-8: {e}"))
    }
}

fn de_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an int64 as a number or a string")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(E::custom)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i64, E> {
            v.parse().map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    result: Option<WResp<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WResp<'a> {
    #[serde(default, deserialize_with = "de_i64")]
    watch_id: i64,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: Option<String>,
    #[serde(borrow, default)]
    events: Vec<WEvent<'a>>,
}

#[derive(Deserialize)]
struct WEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kv: WKv<'a>,
}

#[derive(Deserialize)]
struct WKv<'a> {
    #[serde(default, deserialize_with = "de_i64")]
    mod_revision: i64,
    #[serde(borrow, default)]
    value: Cow<'a, str>,
}

/// One response line, as the stream task needs it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct LineInfo {
    error: Option<String>,
    watch_id: i64,
    created: bool,
    canceled: bool,
    cancel_reason: String,
    events: Vec<EvInfo>,
}

/// One event: PUT or not, its revision, and the (sequence, send time) its value carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EvInfo {
    put: bool,
    mod_rev: i64,
    payload: Option<(usize, u64)>,
}

/// Decodes a `seq:sent_us` value from base64 without allocating.
fn decode_payload(b64: &str) -> Option<(usize, u64)> {
    let mut buf = [0u8; 64];
    let n = B64.decode_slice(b64.as_bytes(), &mut buf).ok()?;
    let (a, b) = std::str::from_utf8(&buf[..n]).ok()?.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Reads a response line in one pass over its quotes, picking out the few fields it needs
/// (both servers write proto field names; base64 and numbers need no escapes). Returns false
/// for anything it does not fully understand (an error line, a canceled watcher, a non-PUT
/// event, escapes, a kv without a revision): serde decides those.
fn scan_line(line: &str, out: &mut LineInfo) -> bool {
    *out = LineInfo { events: std::mem::take(&mut out.events), ..LineInfo::default() };
    out.events.clear();
    if line.contains('\\') {
        return false;
    }
    let b = line.as_bytes();
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    let (mut saw_result, mut in_events, mut kvs) = (false, false, 0usize);
    let mut cur: Option<(Option<i64>, Option<&str>)> = None;
    let flush = |cur: &mut Option<(Option<i64>, Option<&str>)>, events: &mut Vec<EvInfo>| -> bool {
        match cur.take() {
            None => true,
            Some((Some(mod_rev), value)) => {
                events.push(EvInfo { put: true, mod_rev, payload: value.and_then(decode_payload) });
                true
            }
            Some((None, _)) => false,
        }
    };
    let mut i = 0;
    while let Some(q) = line[i..].find('"') {
        let ks = i + q + 1;
        let Some(kl) = line[ks..].find('"') else {
            return false;
        };
        let ke = ks + kl;
        let mut j = skip_ws(ke + 1);
        if b.get(j) != Some(&b':') {
            i = ke + 1; // a string value, not a key
            continue;
        }
        j = skip_ws(j + 1);
        let (val, next) = match b.get(j) {
            Some(b'"') => {
                let Some(vl) = line[j + 1..].find('"') else {
                    return false;
                };
                (&line[j + 1..j + 1 + vl], j + vl + 2)
            }
            Some(b'{' | b'[') => ("", j + 1),
            Some(_) => {
                let end = line[j..].find([',', '}', ']', ' ', '\n', '\r']).map_or(line.len(), |e| j + e);
                (&line[j..end], end)
            }
            None => return false,
        };
        match &line[ks..ke] {
            "result" => saw_result = true,
            "error" | "type" | "prev_kv" => return false,
            "canceled" if val == "true" => return false,
            "watch_id" if !in_events => match val.parse() {
                Ok(v) => out.watch_id = v,
                Err(_) => return false,
            },
            "created" if !in_events => out.created = val == "true",
            "events" => in_events = true,
            "kv" if in_events => {
                if !flush(&mut cur, &mut out.events) {
                    return false;
                }
                kvs += 1;
                cur = Some((None, None));
            }
            "mod_revision" if in_events => match (val.parse(), cur.as_mut()) {
                (Ok(v), Some(c)) => c.0 = Some(v),
                _ => return false,
            },
            "value" if in_events => match cur.as_mut() {
                Some(c) => c.1 = Some(val),
                None => return false,
            },
            _ => {}
        }
        i = next;
    }
    flush(&mut cur, &mut out.events) && saw_result && kvs == out.events.len()
}

fn serde_line(line: &[u8], out: &mut LineInfo) -> Result<(), String> {
    let parsed: Line =
        serde_json::from_slice(line).map_err(|e| format!("bad line ({e}): {}", String::from_utf8_lossy(line)))?;
    *out = LineInfo { error: parsed.error.map(|e| e.to_string()), ..LineInfo::default() };
    let Some(r) = parsed.result else {
        return Ok(());
    };
    out.watch_id = r.watch_id;
    out.created = r.created;
    out.canceled = r.canceled;
    out.cancel_reason = r.cancel_reason.unwrap_or_default();
    out.events = r
        .events
        .iter()
        .map(|ev| EvInfo {
            put: ev.kind.as_deref().is_none_or(|k| k == "PUT"),
            mod_rev: ev.kv.mod_revision,
            payload: decode_payload(&ev.kv.value),
        })
        .collect();
    Ok(())
}

/// What every stream task shares with the driver (all on one thread).
#[derive(Default)]
struct Shared {
    created: Cell<u64>,
    events: Cell<u64>,
    last_event: Cell<Option<Instant>>,
    failed_streams: Cell<u64>,
}

/// One stream's findings.
#[derive(Default)]
struct StreamResult {
    created: usize,
    /// Per watcher (creation order): how often each sequence number arrived.
    counts: Vec<Vec<u8>>,
    lat_us: Vec<u64>,
    out_of_order: u64,
    unexpected: u64,
    canceled: u64,
    non_put: u64,
    error: Option<String>,
}

struct StreamCfg {
    addr: SocketAddr,
    host: String,
    watchers: usize,
    prefix: Vec<u8>,
    max_seq: usize,
    epoch: Instant,
    setup_deadline: Instant,
}

async fn watch_stream(
    cfg: Rc<StreamCfg>,
    shared: Rc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> StreamResult {
    let mut res = StreamResult::default();
    if let Err(e) = watch_stream_inner(&cfg, &shared, &mut stop, &mut res).await {
        shared.failed_streams.set(shared.failed_streams.get() + 1);
        res.error = Some(e);
    }
    res
}

async fn watch_stream_inner(
    cfg: &StreamCfg,
    shared: &Shared,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    res: &mut StreamResult,
) -> Result<(), String> {
    let mut sock = actix_rt::time::timeout(Duration::from_secs(5), TcpStream::connect(cfg.addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let head = format!(
        "POST /v3/watch HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        cfg.host
    );
    sock.write_all(head.as_bytes()).await.map_err(|e| format!("write head: {e}"))?;
    let mut dec = HttpDecoder::default();
    // Wait (at most 2 s, as curl does 1 s) for `100 Continue` before sending the body.
    let wait_until = Instant::now() + Duration::from_secs(2);
    while !dec.got_continue && dec.status.is_none() && Instant::now() < wait_until {
        match tokio::time::timeout_at(wait_until.into(), sock.read_buf(&mut dec.raw)).await {
            Err(_) => break,
            Ok(Ok(0)) => return Err("closed before 100 Continue".into()),
            Ok(Ok(_)) => dec.advance()?,
            Ok(Err(e)) => return Err(format!("read: {e}")),
        }
    }
    if let Some(s) = dec.status.filter(|&s| s != 200) {
        return Err(format!("HTTP {s} before the body was sent"));
    }
    let mut prefix_end = cfg.prefix.clone();
    *prefix_end.last_mut().expect("non-empty prefix") += 1;
    let create = format!(
        r#"{{"create_request":{{"key":"{}","range_end":"{}"}}}}"#,
        B64.encode(&cfg.prefix),
        B64.encode(&prefix_end)
    );
    let mut body = String::new();
    for _ in 0..cfg.watchers {
        let _ = write!(body, "{:x}\r\n{create}\r\n", create.len());
    }
    sock.write_all(body.as_bytes()).await.map_err(|e| format!("write body: {e}"))?;

    let mut ids: HashMap<i64, usize> = HashMap::new();
    let mut last_rev: Vec<i64> = Vec::new();
    let (mut info, mut check, mut checked) = (LineInfo::default(), LineInfo::default(), 0u32);
    loop {
        // Read in large pieces: an empty `BytesMut` would otherwise read 64 bytes at a time.
        dec.raw.reserve(READ_BUFFER);
        let n = tokio::select! {
            r = sock.read_buf(&mut dec.raw) => r.map_err(|e| format!("read: {e}"))?,
            _ = stop.changed() => return Ok(()),
            _ = actix_rt::time::sleep_until(cfg.setup_deadline.into()), if res.created < cfg.watchers => {
                return Err(format!("only {} of {} watchers created in time", res.created, cfg.watchers));
            }
        };
        if n == 0 {
            return Err("server closed the stream".into());
        }
        let now_us = cfg.epoch.elapsed().as_micros() as u64;
        dec.advance()?;
        if let Some(s) = dec.status.filter(|&s| s != 200) {
            let mut text = String::from_utf8_lossy(&dec.body).into_owned();
            text.truncate(300);
            return Err(format!("HTTP {s}: {text}"));
        }
        let mut events_here = 0u64;
        let lines = dec.take_lines()?;
        for line in lines.split('\n') {
            if line.trim().is_empty() {
                continue;
            }
            // The scanner is cheap; serde checks it on each stream's first lines (and takes
            // over for any line the scanner does not understand).
            let fast = scan_line(line, &mut info);
            if !fast || checked < 20 {
                serde_line(line.as_bytes(), &mut check)?;
                if fast && check != info {
                    return Err(format!("scanner and serde disagree on {line}: {info:?} vs {check:?}"));
                }
                if !fast {
                    std::mem::swap(&mut info, &mut check);
                }
                checked += 1;
            }
            if let Some(err) = &info.error {
                return Err(format!("stream error: {err}"));
            }
            if info.created {
                if ids.insert(info.watch_id, res.created).is_some() {
                    return Err(format!("watch id {} created twice", info.watch_id));
                }
                res.created += 1;
                res.counts.push(vec![0u8; cfg.max_seq]);
                last_rev.push(0);
                shared.created.set(shared.created.get() + 1);
            }
            if info.canceled {
                res.canceled += 1;
                if res.error.is_none() {
                    res.error = Some(format!("watch {} canceled: {:?}", info.watch_id, info.cancel_reason));
                }
            }
            if info.events.is_empty() {
                continue;
            }
            let Some(&w) = ids.get(&info.watch_id) else {
                res.unexpected += info.events.len() as u64;
                continue;
            };
            for ev in &info.events {
                events_here += 1;
                if !ev.put {
                    res.non_put += 1;
                    continue;
                }
                if ev.mod_rev <= last_rev[w] {
                    res.out_of_order += 1;
                }
                last_rev[w] = last_rev[w].max(ev.mod_rev);
                match ev.payload {
                    Some((seq, sent_us)) if seq < cfg.max_seq => {
                        let c = &mut res.counts[w][seq];
                        *c = c.saturating_add(1);
                        res.lat_us.push(now_us.saturating_sub(sent_us));
                    }
                    _ => res.unexpected += 1,
                }
            }
        }
        if events_here > 0 {
            shared.events.set(shared.events.get() + events_here);
            shared.last_event.set(Some(Instant::now()));
        }
    }
}

#[derive(Debug, Default, Clone)]
struct S2 {
    watchers_wanted: u64,
    watchers_created: u64,
    setup_secs: f64,
    failed_streams: u64,
    first_stream_error: Option<String>,
    puts_sent: u64,
    puts_acked: u64,
    put_errors: u64,
    first_put_error: Option<String>,
    put_rate: f64,
    put_lat_us: Vec<u64>,
    events_expected: u64,
    events_received: u64,
    events_per_s: f64,
    ev_lat_us: Vec<u64>,
    watchers_exact: u64,
    missing: u64,
    duplicates: u64,
    out_of_order: u64,
    unexpected: u64,
    canceled: u64,
    drain_secs: f64,
    drain_timed_out: bool,
    cpu: Cpu,
}

async fn scenario_fanout(args: &Args, server: &Server, tck: f64) -> S2 {
    let mut out = S2 { watchers_wanted: (args.streams * args.watchers_per_stream) as u64, ..S2::default() };
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().expect("loopback address");
    let total_puts = (args.rate * args.duration_secs) as usize;
    let epoch = Instant::now();
    let cfg = Rc::new(StreamCfg {
        addr,
        host: addr.to_string(),
        watchers: args.watchers_per_stream,
        prefix: b"/fan/".to_vec(),
        max_seq: total_puts,
        epoch,
        setup_deadline: epoch + Duration::from_secs(20),
    });
    let shared = Rc::new(Shared::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let streams: Vec<_> = (0..args.streams)
        .map(|_| actix_rt::spawn(watch_stream(cfg.clone(), shared.clone(), stop_rx.clone())))
        .collect();

    // All watchers created (or a stream failed, or the setup deadline passed).
    while shared.created.get() < out.watchers_wanted
        && shared.failed_streams.get() == 0
        && Instant::now() < cfg.setup_deadline + Duration::from_millis(100)
    {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    out.setup_secs = epoch.elapsed().as_secs_f64();
    out.watchers_created = shared.created.get();

    let mut put_handles = Vec::new();
    let mut span = None;
    let mut perf = None;
    let mut put_start = Instant::now();
    let mut last_send = put_start;
    if out.watchers_created == out.watchers_wanted && shared.failed_streams.get() == 0 {
        perf = Some(Perf::start(args, server, "s2"));
        span = Some(CpuSpan::start(server.pid));
        // A long timeout, so that slow puts show as latency rather than as errors.
        let client = http_client_timeout(256, Duration::from_secs(30));
        let url: Rc<str> = format!("{}/v3/kv/put", server.base).into();
        // Warm the put connections (not measured; the key is outside the watched prefix).
        let _ = post(&client, &url, put_body(b"/warm/fan", b"x")).await;
        let mut tick = actix_rt::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        put_start = Instant::now();
        let end_by = put_start + Duration::from_secs(args.duration_secs + 5);
        for seq in 0..total_puts {
            tick.tick().await;
            if Instant::now() > end_by {
                break;
            }
            let (client, url) = (client.clone(), url.clone());
            let sent_us = epoch.elapsed().as_micros() as u64;
            last_send = Instant::now();
            let body = put_body(format!("/fan/{seq:08}").as_bytes(), format!("{seq}:{sent_us}").as_bytes());
            put_handles.push(actix_rt::spawn(async move {
                let t = Instant::now();
                let r = post(&client, &url, body).await;
                (seq, r, t.elapsed().as_micros() as u64)
            }));
        }
    }
    out.puts_sent = put_handles.len() as u64;
    let mut acked = vec![false; total_puts];
    for h in futures::future::join_all(put_handles).await {
        match h {
            Ok((seq, Ok(()), us)) => {
                acked[seq] = true;
                out.puts_acked += 1;
                out.put_lat_us.push(us);
            }
            Ok((_, Err(e), _)) => {
                out.put_errors += 1;
                out.first_put_error.get_or_insert(e);
            }
            Err(e) => {
                out.put_errors += 1;
                out.first_put_error.get_or_insert(e.to_string());
            }
        }
    }
    out.put_rate = if out.puts_sent > 1 {
        (out.puts_sent - 1) as f64 / (last_send - put_start).as_secs_f64().max(1e-9)
    } else {
        0.0
    };

    if server.kind == Kind::Watchkv {
        println!("[watchkv] metrics after the last put was answered: {}", watchkv_metrics(server).await);
    }

    // Drain: until every watcher has an event for every put sent, or for every acknowledged put
    // and nothing more arrived for 1 s (a failed put may or may not have been applied), or the
    // timeout.
    out.events_expected = out.puts_acked * out.watchers_created;
    let most = out.puts_sent * out.watchers_created;
    let drain_start = Instant::now();
    let drain_deadline = drain_start + Duration::from_secs(args.drain_timeout_secs);
    if out.puts_sent > 0 {
        loop {
            let got = shared.events.get();
            let idle = shared.last_event.get().is_none_or(|t| t.elapsed() > Duration::from_secs(1));
            if got >= most
                || (got >= out.events_expected && idle)
                || Instant::now() >= drain_deadline
                || shared.failed_streams.get() > 0
            {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        out.drain_timed_out = shared.events.get() < out.events_expected;
        // A little longer, to catch duplicates.
        actix_rt::time::sleep(Duration::from_millis(300)).await;
    }
    out.drain_secs = drain_start.elapsed().as_secs_f64();
    if let Some(span) = span {
        out.cpu = span.end(tck);
    }
    drop(perf);
    if server.kind == Kind::Watchkv {
        println!("[watchkv] metrics after the drain: {}", watchkv_metrics(server).await);
    }
    let last_event = shared.last_event.get();
    let _ = stop_tx.send(true);

    let mut results = Vec::new();
    for s in streams {
        if let Ok(Ok(r)) = actix_rt::time::timeout(Duration::from_secs(5), s).await {
            results.push(r);
        }
    }
    out.failed_streams = shared.failed_streams.get();
    for r in &mut results {
        out.ev_lat_us.append(&mut r.lat_us);
        out.out_of_order += r.out_of_order;
        out.unexpected += r.unexpected + r.non_put;
        out.canceled += r.canceled;
        if out.first_stream_error.is_none() {
            out.first_stream_error = r.error.clone();
        }
        for counts in &r.counts {
            let mut exact = true;
            for (seq, &c) in counts.iter().enumerate() {
                if acked[seq] {
                    if c == 0 {
                        out.missing += 1;
                        exact = false;
                    } else if c > 1 {
                        out.duplicates += u64::from(c - 1);
                        exact = false;
                    }
                } else if c > 0 {
                    // An unacknowledged put that was applied anyway: not an error, but counted.
                    out.unexpected += u64::from(c);
                }
            }
            if exact {
                out.watchers_exact += 1;
            }
        }
    }
    out.events_received = out.ev_lat_us.len() as u64;
    out.ev_lat_us.sort_unstable();
    out.put_lat_us.sort_unstable();
    if let Some(last) = last_event {
        out.events_per_s =
            out.events_received as f64 / last.saturating_duration_since(put_start).as_secs_f64().max(1e-9);
    }
    out
}

/// The watcher-group, victim and write-batch lines of watchkv's `/metrics`, on one line.
async fn watchkv_metrics(server: &Server) -> String {
    let client = http_client(1);
    let url = format!("{}/metrics", server.base);
    let Ok(mut resp) = client.get(&url).send().await else {
        return "(unavailable)".into();
    };
    let Ok(body) = resp.body().limit(1 << 20).await else {
        return "(unavailable)".into();
    };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            ["watchers", "victim", "write_batch", "events_sent", "responses_sent"].iter().any(|k| l.contains(k))
        })
        .map(|l| l.trim_start_matches("watchkv_").to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Driver and report
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Report {
    cmdline: String,
    startup_secs: f64,
    s1: Option<S1>,
    s2: Option<S2>,
    hwm_after_s1_kb: Option<u64>,
    hwm_after_s2_kb: Option<u64>,
    rss_end_kb: Option<u64>,
    threads: Option<u64>,
    error: Option<String>,
}

async fn run_server(kind: Kind, args: &Args, tck: f64) -> Report {
    let mut rep = Report::default();
    let mut server = match start_server(kind, args) {
        Ok(s) => s,
        Err(e) => {
            rep.error = Some(format!("{e:#}"));
            return rep;
        }
    };
    rep.cmdline = server.cmdline.clone();
    println!("[{}] started pid {}: {}", kind.name(), server.pid, server.cmdline);
    let probe = http_client(4);
    match wait_ready(&mut server, &probe).await {
        Ok(d) => rep.startup_secs = d.as_secs_f64(),
        Err(e) => {
            rep.error = Some(format!("{e:#}"));
            return rep;
        }
    }
    let pid = server.pid.to_string();
    println!("[{}] ready in {:.2} s; scenario 1 (puts), load avg {}", kind.name(), rep.startup_secs, loadavg());
    let s1 = scenario_puts(args, &server, tck).await;
    rep.hwm_after_s1_kb = status_field(&pid, "VmHWM");
    println!(
        "[{}] scenario 1: {} puts in {:.2} s, {} errors; scenario 2 (watch fan-out), load avg {}",
        kind.name(),
        s1.done,
        s1.secs,
        s1.errors,
        loadavg()
    );
    rep.s1 = Some(s1);
    let s2 = scenario_fanout(args, &server, tck).await;
    rep.hwm_after_s2_kb = status_field(&pid, "VmHWM");
    rep.rss_end_kb = status_field(&pid, "VmRSS");
    rep.threads = status_field(&pid, "Threads");
    println!(
        "[{}] scenario 2: {}/{} events, drain {:.2} s; load avg {}",
        kind.name(),
        s2.events_received,
        s2.events_expected,
        s2.drain_secs,
        loadavg()
    );
    rep.s2 = Some(s2);
    if let Ok(Some(status)) = server.child.try_wait() {
        rep.error = Some(format!("server exited during the run ({status}); log:\n{}", log_tail(&server.log, 20)));
    } else {
        let tail = log_tail(&server.log, 5);
        if !tail.trim().is_empty() {
            println!("[{}] last log lines:\n{tail}", kind.name());
        }
    }
    drop(server);
    rep
}

fn ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |u| format!("{:.2}", u as f64 / 1000.0))
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn print_table(args: &Args, reports: &[(Kind, Report)]) {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&Report) -> String| {
        rows.push((name.to_string(), reports.iter().map(|(_, r)| f(r)).collect()));
    };
    row("server startup (s)", &|r| format!("{:.2}", r.startup_secs));
    let s1_title = format!(
        "S1: {} puts, {} clients, {} B values, over {}",
        args.puts, args.clients, args.value_size, args.protocol
    );
    row(&s1_title, &|_| String::new());
    row("  puts ok / errors", &|r| r.s1.as_ref().map_or("-".into(), |s| format!("{} / {}", s.done, s.errors)));
    row("  wall time (s)", &|r| r.s1.as_ref().map_or("-".into(), |s| format!("{:.2}", s.secs)));
    row("  puts/s", &|r| r.s1.as_ref().map_or("-".into(), |s| format!("{:.0}", s.done as f64 / s.secs.max(1e-9))));
    row("  latency p50 (ms)", &|r| ms(r.s1.as_ref().and_then(|s| pct(&s.lat_us, 50.0))));
    row("  latency p99 (ms)", &|r| ms(r.s1.as_ref().and_then(|s| pct(&s.lat_us, 99.0))));
    row("  latency max (ms)", &|r| ms(r.s1.as_ref().and_then(|s| s.lat_us.last().copied())));
    row("  server CPU (s)", &|r| r.s1.as_ref().map_or("-".into(), |s| format!("{:.2}", s.cpu.server_s)));
    row("  server CPU (cores avg)", &|r| {
        r.s1.as_ref().map_or("-".into(), |s| format!("{:.2}", s.cpu.server_s / s.cpu.wall_s.max(1e-9)))
    });
    row("  server CPU per 1k puts (ms)", &|r| {
        r.s1.as_ref().map_or("-".into(), |s| format!("{:.1}", s.cpu.server_s * 1e6 / (s.done.max(1) as f64)))
    });
    row("  load tool CPU (s)", &|r| r.s1.as_ref().map_or("-".into(), |s| format!("{:.2}", s.cpu.self_s)));
    row("  peak RSS after S1 (MiB)", &|r| mb(r.hwm_after_s1_kb));
    let s2_title = format!(
        "S2: {}x{} watchers, {} puts/s for {} s",
        args.streams, args.watchers_per_stream, args.rate, args.duration_secs
    );
    row(&s2_title, &|_| String::new());
    row("  watchers created", &|r| {
        r.s2.as_ref().map_or("-".into(), |s| format!("{} / {}", s.watchers_created, s.watchers_wanted))
    });
    row("  watcher setup (s)", &|r| r.s2.as_ref().map_or("-".into(), |s| format!("{:.2}", s.setup_secs)));
    row("  puts sent / acked / errors", &|r| {
        r.s2.as_ref().map_or("-".into(), |s| format!("{} / {} / {}", s.puts_sent, s.puts_acked, s.put_errors))
    });
    row("  achieved put rate (/s)", &|r| r.s2.as_ref().map_or("-".into(), |s| format!("{:.1}", s.put_rate)));
    row("  put latency p50 (ms)", &|r| ms(r.s2.as_ref().and_then(|s| pct(&s.put_lat_us, 50.0))));
    row("  put latency p99 (ms)", &|r| ms(r.s2.as_ref().and_then(|s| pct(&s.put_lat_us, 99.0))));
    row("  events received / expected", &|r| {
        r.s2.as_ref().map_or("-".into(), |s| format!("{} / {}", s.events_received, s.events_expected))
    });
    row("  events/s (all watchers)", &|r| r.s2.as_ref().map_or("-".into(), |s| format!("{:.0}", s.events_per_s)));
    row("  put->event p50 (ms)", &|r| ms(r.s2.as_ref().and_then(|s| pct(&s.ev_lat_us, 50.0))));
    row("  put->event p99 (ms)", &|r| ms(r.s2.as_ref().and_then(|s| pct(&s.ev_lat_us, 99.0))));
    row("  put->event max (ms)", &|r| ms(r.s2.as_ref().and_then(|s| s.ev_lat_us.last().copied())));
    row("  drain after last put (s)", &|r| {
        r.s2.as_ref()
            .map_or("-".into(), |s| format!("{:.2}{}", s.drain_secs, if s.drain_timed_out { " TIMEOUT" } else { "" }))
    });
    row("  watchers exactly-once", &|r| {
        r.s2.as_ref().map_or("-".into(), |s| format!("{} / {}", s.watchers_exact, s.watchers_created))
    });
    row("  missing / duplicate", &|r| {
        r.s2.as_ref().map_or("-".into(), |s| format!("{} / {}", s.missing, s.duplicates))
    });
    row("  out-of-order / unexpected", &|r| {
        r.s2.as_ref().map_or("-".into(), |s| format!("{} / {}", s.out_of_order, s.unexpected))
    });
    row("  canceled / failed streams", &|r| {
        r.s2.as_ref().map_or("-".into(), |s| format!("{} / {}", s.canceled, s.failed_streams))
    });
    row("  server CPU (s, puts+drain)", &|r| r.s2.as_ref().map_or("-".into(), |s| format!("{:.2}", s.cpu.server_s)));
    row("  server CPU (cores avg)", &|r| {
        r.s2.as_ref().map_or("-".into(), |s| format!("{:.2}", s.cpu.server_s / s.cpu.wall_s.max(1e-9)))
    });
    row("  server CPU per 1M events (s)", &|r| {
        r.s2.as_ref().map_or("-".into(), |s| format!("{:.2}", s.cpu.server_s * 1e6 / (s.events_received.max(1) as f64)))
    });
    row("  load tool CPU (s)", &|r| r.s2.as_ref().map_or("-".into(), |s| format!("{:.2}", s.cpu.self_s)));
    row("  peak RSS after S2 (MiB)", &|r| mb(r.hwm_after_s2_kb));
    row("RSS at end (MiB)", &|r| mb(r.rss_end_kb));
    row("threads at end", &|r| r.threads.map_or("-".into(), |t| t.to_string()));

    let w0 = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(10).max(10);
    let widths: Vec<usize> = (0..reports.len())
        .map(|i| rows.iter().map(|(_, v)| v[i].len()).max().unwrap_or(0).max(reports[i].0.name().len()).max(14))
        .collect();
    let mut header = format!("{:<w0$}", "");
    for (i, (kind, _)) in reports.iter().enumerate() {
        let name = if *kind == Kind::Etcd { "etcd 3.4" } else { kind.name() };
        let _ = write!(header, " | {:>w$}", name, w = widths[i]);
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for (name, vals) in &rows {
        let mut line = format!("{name:<w0$}");
        if vals.iter().all(String::is_empty) {
            println!("{line}");
            continue;
        }
        for (i, v) in vals.iter().enumerate() {
            let _ = write!(line, " | {:>w$}", v, w = widths[i]);
        }
        println!("{line}");
    }
    for (kind, r) in reports {
        if let Some(e) = &r.error {
            println!("{} error: {e}", kind.name());
        }
        if let Some(s) = &r.s1 {
            if let Some(e) = &s.first_error {
                println!("{} S1 first put error: {e}", kind.name());
            }
            if s.timed_out {
                println!("{} S1 stopped at its {} s time limit", kind.name(), args.s1_timeout_secs);
            }
        }
        if let Some(s) = &r.s2 {
            if let Some(e) = &s.first_put_error {
                println!("{} S2 first put error: {e}", kind.name());
            }
            if let Some(e) = &s.first_stream_error {
                println!("{} S2 first stream error: {e}", kind.name());
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let argv: Vec<String> = std::env::args().map(|a| shell_quote(&a)).collect();
    println!("command: {}", argv.join(" "));
    println!(
        "host: {} cores, load avg {} at start, uptime: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        Command::new("uptime")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    let first_line = |prog: &Path, arg: &str| {
        Command::new(prog)
            .arg(arg)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
            .unwrap_or_else(|e| format!("({e})"))
    };
    let modified = std::fs::metadata(&args.watchkv_bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map_or_else(|| "?".to_string(), |d| format!("{} s ago", d.as_secs()));
    println!(
        "watchkv: {} ({}, built {modified}); etcd: {} ({})",
        args.watchkv_bin.display(),
        first_line(&args.watchkv_bin, "--version"),
        args.etcd_bin.display(),
        first_line(&args.etcd_bin, "--version")
    );
    let kinds: Vec<Kind> = match args.only.as_str() {
        "both" => vec![Kind::Watchkv, Kind::Etcd],
        "watchkv" => vec![Kind::Watchkv],
        "etcd" => vec![Kind::Etcd],
        other => return Err(anyhow!("--only must be both, watchkv or etcd, not {other:?}")),
    };
    if kinds.contains(&Kind::Watchkv) && !args.watchkv_bin.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p watchkv-actors --bin watchkv`",
            args.watchkv_bin.display()
        );
    }
    if args.streams == 0 || args.watchers_per_stream == 0 || args.clients == 0 {
        bail!("--streams, --watchers-per-stream and --clients must be positive");
    }
    let tck = clk_tck();
    let started = Instant::now();
    let reports = actix_rt::System::new().block_on(async {
        let mut reports = Vec::new();
        for kind in kinds {
            let rep = run_server(kind, &args, tck).await;
            reports.push((kind, rep));
        }
        reports
    });
    println!("load avg {} at end; total {:.1} s", loadavg(), started.elapsed().as_secs_f64());
    println!();
    print_table(&args, &reports);
    Ok(())
}
