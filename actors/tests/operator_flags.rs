//! etcd's flags for operators, on the binary: the metrics port (`--listen-metrics-urls`)
//! against etcd 3.4.23 started with the same flag (`/health`, with an alarm raised and
//! excluded, and `/metrics` answer there, every other path and method as etcd answers it), the
//! client port's answers to the paths and methods no route takes, and `--log-level`. The TLS
//! metrics port is in `tls.rs`.

mod exit;
mod wire;

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{json, Value};
use wire::{free_port, post, start_etcd_with, start_watchkv, wait_for, DEADLINE};

/// What a request got: the status, the `Allow` header, and the body (a JSON body as its
/// `health` field: the rest names the server or its uptime).
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    allow: Option<String>,
    body: String,
}

/// Sends `method path` with an empty body and reads the whole answer.
fn request(port: u16, method: &str, path: &str) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { wire::dechunk(body) } else { body.to_string() };
    let body = match serde_json::from_str::<Value>(&body) {
        Ok(v) if v.get("health").is_some() => format!("health={}", v["health"]),
        _ => body,
    };
    Answer { status, allow: header("allow"), body }
}

/// The paths and methods no route of the metrics port takes, and the ones it does with
/// another method than theirs.
const METRICS_PORT_MISSES: &[(&str, &str)] = &[
    ("GET", "/version"),
    ("GET", "/v3/kv/range"),
    ("POST", "/v3/kv/range"),
    ("GET", "/"),
    ("GET", "/health/"),
    ("GET", "/metricsx"),
    ("POST", "/health"),
    ("PUT", "/health"),
    ("DELETE", "/health"),
];

/// The same on the client port, where the gateway's routes are served too.
const CLIENT_PORT_MISSES: &[(&str, &str)] = &[
    ("POST", "/health"),
    ("POST", "/version"),
    ("GET", "/nope"),
    ("GET", "/health/"),
    ("POST", "/v3/nope"),
    ("POST", "/v3beta/nope"),
];

/// The member id of the server on `port`, from a status call's header.
fn member_id(port: u16) -> Value {
    post(port, "/v3/maintenance/status", &json!({})).json()["header"]["member_id"].clone()
}

#[test]
fn the_metrics_port_serves_health_and_metrics_only_as_etcds_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (etcd_metrics, watchkv_metrics) = (free_port(), free_port());
    // Two URLs each: every one serves, `localhost` as well as an IP.
    let etcd_urls = format!("http://127.0.0.1:{etcd_metrics},http://localhost:{}", free_port());
    let watchkv_urls = format!("http://127.0.0.1:{watchkv_metrics},http://localhost:{}", free_port());
    let etcd = start_etcd_with(&dir.path().join("etcd"), &["--listen-metrics-urls", &etcd_urls]);
    let watchkv = start_watchkv(&dir.path().join("watchkv"), free_port(), &["--listen-metrics-urls", &watchkv_urls]);
    let second =
        |urls: &str| -> u16 { urls.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the second URL's port") };

    for (name, e, w) in [
        ("metrics port", etcd_metrics, watchkv_metrics),
        ("second metrics port", second(&etcd_urls), second(&watchkv_urls)),
    ] {
        let (e, w) = (request(e, "GET", "/health"), request(w, "GET", "/health"));
        assert_eq!(w, e, "{name}: GET /health");
        assert_eq!((w.status, w.body.as_str()), (200, "health=\"true\""), "{name}: GET /health");
    }
    for (method, path) in METRICS_PORT_MISSES {
        let (e, w) = (request(etcd_metrics, method, path), request(watchkv_metrics, method, path));
        assert_eq!(w, e, "metrics port: {method} {path}");
        assert!(w.status >= 400, "metrics port: {method} {path} is served: {w:?}");
    }
    for (method, path) in CLIENT_PORT_MISSES {
        let (e, w) = (request(etcd.port, method, path), request(watchkv.port, method, path));
        assert_eq!(w, e, "client port: {method} {path}");
    }
    // /metrics answers any method there (etcd's is Prometheus' handler), with etcd's names.
    for method in ["GET", "POST"] {
        let w = request(watchkv_metrics, method, "/metrics");
        assert_eq!(w.status, 200, "{method} /metrics");
        assert!(w.body.contains("etcd_server_has_leader"), "{method} /metrics: {}", w.body);
        assert_eq!(request(etcd_metrics, method, "/metrics").status, 200, "etcd: {method} /metrics");
    }

    // An alarm makes the port's health false, unless excluded; the client port agrees.
    for port in [etcd.port, watchkv.port] {
        let raised = post(
            port,
            "/v3/maintenance/alarm",
            &json!({"action": "ACTIVATE", "memberID": member_id(port), "alarm": "NOSPACE"}),
        );
        assert_eq!(raised.status, 200, "raising NOSPACE on {port}: {:?}", raised.json());
    }
    for path in ["/health", "/health?exclude=NOSPACE", "/health?exclude=CORRUPT"] {
        let (e, w) = (request(etcd_metrics, "GET", path), request(watchkv_metrics, "GET", path));
        assert_eq!(w, e, "metrics port with NOSPACE raised: GET {path}");
        assert_eq!(request(watchkv.port, "GET", path), w, "client port and metrics port: GET {path}");
    }
    assert_eq!(request(watchkv_metrics, "GET", "/health").status, 503);
}

/// `--log-level` decides what is logged over `RUST_LOG` (the test servers run with
/// `RUST_LOG=warn`): at `info` the start is logged, at `error` a refused start still is.
#[test]
fn the_log_level_flag_sets_what_is_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_watchkv(&dir.path().join("info"), free_port(), &["--log-level", "info"]);
    wait_for("the start logged at info", || server.log_tail(100_000).contains("watchkv serving").then_some(()));
    let quiet = start_watchkv(&dir.path().join("error"), free_port(), &["--log-level", "error"]);
    // The same line the first server logged once it served is not in the second's log.
    assert!(!quiet.log_tail(100_000).contains("watchkv serving"), "{}", quiet.log_tail(2000));
    let out = exit::run_to_exit(
        std::process::Command::new(env!("CARGO_BIN_EXE_watchkv")).args(["--log-level", "verbose"]),
        DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("invalid value 'verbose' for '--log-level"), "{stderr}");
}
