//! A real third-party client against the gateway: the Python `etcd3gw` library (an etcd
//! grpc-gateway client, `pip install etcd3gw`) drives put / get / get_prefix / delete / txn,
//! leases and watches against the `watchkv` binary on a free port. The checks live in
//! `etcd3gw_client.py` next to this file, which asserts each result and prints what it checked.
//! The interpreter is `$WATCHKV_PYTHON` when set (scripts/test.sh points it at a virtual
//! environment with the pinned client), `python3` otherwise. A missing client fails the test.

mod wire;

use std::process::Command;
use std::time::Instant;

/// The Python interpreter that has the client: `$WATCHKV_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("WATCHKV_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into())
}

#[test]
fn etcd3gw_python_client_works_against_watchkv() {
    let python = python();
    let probe = Command::new(&python).args(["-c", "import etcd3gw"]).output();
    match probe {
        Err(e) => panic!(
            "{python} is needed to run the etcd3gw client test ({e}); run scripts/test.sh, which \
             installs the client into a virtual environment and sets WATCHKV_PYTHON to it"
        ),
        Ok(out) if !out.status.success() => panic!(
            "the etcd3gw Python client is not installed for {python}: run scripts/test.sh, which \
             installs it into a virtual environment and sets WATCHKV_PYTHON to it (or set \
             WATCHKV_PYTHON to an interpreter that has it)\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = wire::free_port();
    let server = wire::start_watchkv(&dir.path().join("data"), port, &["--durability", "buffered"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/etcd3gw_client.py");
    let started = Instant::now();
    let out = Command::new(&python)
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap_or_else(|e| panic!("running {python} {script}: {e}"));
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
