//! Runs the embedding example (`actors/examples/embed.rs`) as its own process on a free port
//! with a temporary data directory: the host's `/hello` route counts visitors through the typed
//! handle, the etcd gateway mounted under `/kv` sees the same key, a watch through the mounted
//! gateway streams the host's writes, SIGTERM stops it cleanly, and a restart keeps the count.
//!
//! `cargo test` builds the examples; a run restricted to this test (`--test embed_example`)
//! builds the example first with the cargo that built the test.

mod gateway_common;
mod ports;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_common::{b64, client, int, unb64, RawStream, DEADLINE};
use serde_json::{json, Value};

/// `<target>/debug/examples/embed`, next to this test's `<target>/debug/deps/…`.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target profile directory");
    profile_dir.join("examples").join(format!("embed{}", std::env::consts::EXE_SUFFIX))
}

/// Builds the example with the cargo that built this test (a no-op when it is fresh): a run
/// restricted to this test does not build examples, and an old binary would test old code.
fn ensure_built(bin: &Path) {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "watchkv-actors", "--example", "embed"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example embed");
        assert!(status.success(), "cargo build --example embed failed");
    });
    assert!(bin.exists(), "{} missing after the build", bin.display());
}

fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports::free_port()))
}

/// The example process; killed if the test ends without stopping it.
struct Example {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Example {
    fn spawn(data_dir: &Path, log_dir: &Path, run: usize) -> Self {
        let bin = example_binary();
        ensure_built(&bin);
        let addr = free_port();
        let log = log_dir.join(format!("embed-{run}.log"));
        let out = File::create(&log).expect("log file");
        let child = Command::new(&bin)
            .arg(addr.to_string())
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("dup log")))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Self { child, addr, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the mounted gateway answers `/kv/health`.
    async fn wait_ready(&mut self, client: &awc::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the example exited early ({status}):\n{}", self.output());
            }
            if let Ok(resp) = client.get(self.url("/kv/health")).send().await {
                if resp.status().as_u16() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the example did not answer:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, client: &awc::Client, path: &str) -> (u16, String) {
        let mut resp = client.get(self.url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let body = resp.body().await.expect("body");
        (resp.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
    }

    async fn post(&self, client: &awc::Client, path: &str, body: &Value) -> (u16, Value) {
        let mut resp = client.post(self.url(path)).send_json(body).await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let body = resp.body().await.expect("body");
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
        (resp.status().as_u16(), json)
    }

    /// SIGTERM, then waits for a clean exit.
    async fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "the example exited with {status}:\n{}", self.output());
                return;
            }
            assert!(Instant::now() < deadline, "the example did not stop on SIGTERM:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn visitor_line(n: u64) -> impl Fn(&str) -> bool {
    move |body: &str| body.starts_with(&format!("hello, visitor {n} (revision ")) && body.ends_with(")\n")
}

#[actix_rt::test]
async fn embed_example_serves_its_routes_and_the_mounted_gateway() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let client = client();
    let mut ex = Example::spawn(&data, dir.path(), 1);
    ex.wait_ready(&client).await;

    let (status, first) = ex.get(&client, "/hello").await;
    assert_eq!(status, 200, "{first}");
    assert!(visitor_line(1)(&first), "{first:?}");
    let (status, second) = ex.get(&client, "/hello").await;
    assert_eq!(status, 200);
    assert!(visitor_line(2)(&second), "{second:?}");

    // The gateway under /kv reads what the host route wrote.
    let (status, range) = ex.post(&client, "/kv/v3/kv/range", &json!({"key": b64("visits")})).await;
    assert_eq!(status, 200, "{range}");
    let kv = &range["kvs"][0];
    assert_eq!(
        (unb64(kv["key"].as_str().unwrap_or("")), unb64(kv["value"].as_str().unwrap_or(""))),
        ("visits".into(), "2".into())
    );
    assert_eq!(int(&kv["version"]), 2);
    // Nothing of the gateway is at the root.
    let resp = client.post(ex.url("/v3/kv/range")).send_json(&json!({"key": b64("visits")})).await.expect("send");
    assert_eq!(resp.status().as_u16(), 404);

    // A watch through the mounted gateway sees the host's next write.
    let mut w = RawStream::open_chunked(ex.addr, "/kv/v3/watch", false).await;
    w.send_json(&json!({"create_request": {"key": b64("visits")}})).await;
    assert_eq!(w.next_result().await["created"], true);
    let (_, third) = ex.get(&client, "/hello").await;
    assert!(visitor_line(3)(&third), "{third:?}");
    let event = w.next_result().await;
    assert_eq!(event["events"][0]["kv"]["value"], b64("3"), "{event}");
    drop(w);

    // SIGTERM stops it cleanly; a restart on the same directory keeps the count.
    ex.terminate().await;
    let mut ex = Example::spawn(&data, dir.path(), 2);
    ex.wait_ready(&client).await;
    let (status, fourth) = ex.get(&client, "/hello").await;
    assert_eq!(status, 200);
    assert!(visitor_line(4)(&fourth), "after a restart: {fourth:?}");
    ex.terminate().await;
}

/// A watch client that ends its request body and then disconnects must not leave its stream
/// and watcher behind in the example's server (see `gateway::configure`'s docs).
#[actix_rt::test]
async fn embed_example_frees_the_watchers_of_gone_clients() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = client();
    let mut ex = Example::spawn(&dir.path().join("data"), dir.path(), 1);
    ex.wait_ready(&client).await;
    let mut w = RawStream::open_chunked(ex.addr, "/kv/v3/watch", false).await;
    w.send_json(&json!({"create_request": {"key": b64("idle")}})).await;
    w.end_body().await.expect("end body");
    assert_eq!(w.next_result().await["created"], true);
    let (_, metrics) = ex.get(&client, "/kv/metrics").await;
    assert!(metrics.contains("watchkv_streams 1"), "{metrics}");
    drop(w);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, metrics) = ex.get(&client, "/kv/metrics").await;
        if metrics.contains("watchkv_streams 0") && metrics.contains(r#"watchkv_watchers{group="synced"} 0"#) {
            break;
        }
        assert!(Instant::now() < deadline, "the gone client's stream and watcher are still there:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ex.terminate().await;
}
