//! A real third-party client against the gateway: the Python `etcd3gw` library (an etcd
//! grpc-gateway client, `pip install etcd3gw`) drives put / get / get_prefix / delete / txn,
//! leases and watches against the `watchkv` binary on a free port. The checks live in
//! `etcd3gw_client.py` next to this file, which asserts each result and prints what it checked.

mod wire;

use std::process::Command;
use std::time::Instant;

#[test]
fn etcd3gw_python_client_works_against_watchkv() {
    let probe = Command::new("python3").args(["-c", "import etcd3gw"]).output();
    match probe {
        Err(e) => panic!("python3 is needed to run the etcd3gw client test ({e}); then `pip install etcd3gw`"),
        Ok(out) if !out.status.success() => panic!(
            "the etcd3gw Python client is not installed: install it with `pip install etcd3gw` \
             (scripts/test.sh does this before running the tests)\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = wire::free_port();
    let server = wire::start_watchkv(&dir.path().join("data"), port, &["--durability", "buffered"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/etcd3gw_client.py");
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap_or_else(|e| panic!("running python3 {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed ({}) after {:.1?}:\nstdout:\n{stdout}\nstderr:\n{stderr}\nwatchkv log tail:\n{}",
        out.status,
        started.elapsed(),
        server.log_tail(3000)
    );
    assert!(stdout.contains("checks passed"), "the script did not report its checks:\n{stdout}");
}
