//! The servers under load: starting watchkv or etcd on free loopback ports with a temporary data
//! directory, waiting until they answer, and killing them when done.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::args::Args;
use crate::http::{post, post_for_body, put_body};
use crate::pinning::command_on;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Watchkv,
    Etcd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Watchkv => "watchkv",
            Kind::Etcd => "etcd",
        }
    }
}

/// A running server; killed (and its data directory removed) when dropped.
pub struct Server {
    pub kind: Kind,
    /// Which of the `--runs` runs this server is for (from 0).
    pub run: usize,
    pub child: Child,
    pub pid: u32,
    pub base: String,
    pub log: PathBuf,
    pub cmdline: String,
    /// Builds the command that started the server, to start it again (`restart`).
    command: Box<dyn Fn() -> Command>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The directory holding the server's data directory (on the same disk).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }
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

pub fn shell_quote(s: &str) -> String {
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

pub fn start_server(kind: Kind, args: &Args, run: usize) -> anyhow::Result<Server> {
    start_server_on(kind, args, run, None, &[])
}

/// Starts a server as `start_server` does, on `cpu` only if given (see `pinning`), with `extra`
/// arguments after the usual ones (e.g. a mirror's `--upstream`).
pub fn start_server_on(
    kind: Kind,
    args: &Args,
    run: usize,
    cpu: Option<usize>,
    extra: &[String],
) -> anyhow::Result<Server> {
    let dir = match &args.data_root {
        Some(root) => tempfile::Builder::new().prefix(&format!("load-{}-", kind.name())).tempdir_in(root)?,
        None => tempfile::Builder::new().prefix(&format!("load-{}-", kind.name())).tempdir()?,
    };
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    // etcd's peer port; watchkv has none.
    let peer = if kind == Kind::Etcd { free_port()? } else { 0 };
    let (args, extra) = (args.clone(), extra.to_vec());
    let command = move || server_command(kind, &args, cpu, &extra, &data, port, peer);
    let log = dir.path().join("server.log");
    let out = File::create(&log)?;
    let mut cmd = command();
    cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    let cmdline = cmdline_of(&cmd);
    let child = cmd.spawn().with_context(|| format!("starting {cmdline}"))?;
    let pid = child.id();
    Ok(Server { kind, run, child, pid, base, log, cmdline, command: Box::new(command), _dir: dir })
}

/// The command line of a server on loopback `port` (and `peer`, etcd's peer port) with its data
/// in `data`.
fn server_command(
    kind: Kind,
    args: &Args,
    cpu: Option<usize>,
    extra: &[String],
    data: &Path,
    port: u16,
    peer: u16,
) -> Command {
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = match kind {
        Kind::Watchkv => {
            let mut c = command_on(&args.watchkv_bin, cpu);
            c.env("RUST_LOG", "warn")
                .arg("--data-dir")
                .arg(data)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--durability")
                .arg("fsync")
                .args(&args.watchkv_args);
            c
        }
        Kind::Etcd => {
            let mut c = command_on(&args.etcd_bin, cpu);
            c.arg("--name")
                .arg("load")
                .arg("--data-dir")
                .arg(data)
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
    cmd.args(extra);
    cmd
}

impl Server {
    /// Writes one key, stops the server with SIGTERM as an operator would, and starts it again
    /// on the same data directory and port (`--restarted`); returns once it answers again with
    /// the key it was given.
    pub async fn restart(&mut self, client: &awc::Client) -> anyhow::Result<Duration> {
        const KEY: &[u8] = b"/load/restart";
        let value = format!("before restart {}", self.run);
        post(client, &format!("{}/v3/kv/put", self.base), put_body(KEY, value.as_bytes()))
            .await
            .map_err(|e| anyhow::anyhow!("the write before the restart: {e}"))?;
        let pid = libc::pid_t::try_from(self.pid).context("a pid that fits pid_t")?;
        // SAFETY: kill(2) only sends a signal, to our own child.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error()).context("sending SIGTERM");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                bail!("{} did not stop within 30 s of SIGTERM", self.kind.name());
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let out = OpenOptions::new().append(true).open(&self.log)?;
        let mut cmd = (self.command)();
        cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        self.child = cmd.spawn().with_context(|| format!("restarting {}", self.cmdline))?;
        self.pid = self.child.id();
        let ready = wait_ready(self, client).await?;
        let range = format!(r#"{{"key":"{}"}}"#, B64.encode(KEY));
        let answer = post_for_body(client, &format!("{}/v3/kv/range", self.base), range)
            .await
            .map_err(|e| anyhow::anyhow!("reading back the write after the restart: {e}"))?;
        if !answer.contains(&format!(r#""value":"{}""#, B64.encode(&value))) {
            bail!("{} lost the write made before its restart; range answered {answer}", self.kind.name());
        }
        Ok(ready)
    }
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits (at most 30 s) until the server answers a range.
pub async fn wait_ready(server: &mut Server, client: &awc::Client) -> anyhow::Result<Duration> {
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
