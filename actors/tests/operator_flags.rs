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
    ("OPTIONS", "/health"),
    ("OPTIONS", "/nope"),
];

/// The same on the client port, where the gateway's routes are served too.
const CLIENT_PORT_MISSES: &[(&str, &str)] = &[
    ("POST", "/health"),
    ("POST", "/version"),
    ("GET", "/nope"),
    ("GET", "/health/"),
    ("POST", "/v3/nope"),
    ("POST", "/v3beta/nope"),
    ("GET", "/v3/kv/range"),
    ("PUT", "/v3beta/kv/put"),
    ("GET", "/v3/watch"),
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
    // Each URL trimmed, as etcd reads the list.
    let urls = |first: u16| format!("http://127.0.0.1:{first}, http://localhost:{}", free_port());
    let (etcd_urls, watchkv_urls) = (urls(etcd_metrics), urls(watchkv_metrics));
    let etcd = start_etcd_with(&dir.path().join("etcd"), &["--listen-metrics-urls", &etcd_urls]);
    let watchkv = start_watchkv(&dir.path().join("watchkv"), free_port(), &["--listen-metrics-urls", &watchkv_urls]);
    let second = |urls: &str| -> u16 {
        let url = urls.split(',').nth(1).expect("a second URL");
        url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the second URL's port")
    };

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
    for method in ["GET", "POST", "OPTIONS"] {
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

/// The server's threads say what they run (`top -H`, `ps -L`, `perf`, `chrt` find them by
/// name): the three actors' threads, one per client-port worker (`--workers`), the metrics
/// port's; and the syncer's is the one at the idle scheduling class.
#[cfg(target_os = "linux")]
#[test]
fn the_servers_threads_are_named_for_what_they_run() {
    use watchkv_actors::thread_name;
    /// A thread's name and its scheduling policy (`/proc/.../stat` field 41).
    fn threads(pid: u32) -> Vec<(String, u32)> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
        tasks
            .filter_map(|task| {
                let dir = task.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?.trim_end().to_string();
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                // The fields after the name, which is in parentheses and may hold spaces.
                let after_name = &stat[stat.rfind(')')? + 2..];
                let policy = after_name.split(' ').nth(41 - 3)?.parse().ok()?;
                Some((name, policy))
            })
            .collect()
    }
    const SCHED_IDLE: u32 = 5;
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = format!("http://127.0.0.1:{}", free_port());
    let watchkv =
        start_watchkv(&dir.path().join("watchkv"), free_port(), &["--workers", "3", "--listen-metrics-urls", &metrics]);
    let pid = watchkv.child.id();
    let worker_names: Vec<String> = (0..3).map(|i| format!("{}{i}", thread_name::CLIENT_PORT_WORKER)).collect();
    let mut expected: Vec<&str> = vec![thread_name::STORE, thread_name::SYNCER, thread_name::VICTIMS];
    expected.extend(worker_names.iter().map(String::as_str));
    expected.push(thread_name::METRICS_PORT_WORKER);
    let named = wait_for("every thread named", || {
        let now = threads(pid);
        expected.iter().all(|want| now.iter().filter(|(name, _)| name == want).count() == 1).then_some(now)
    });
    let policy_of = |want: &str| named.iter().find(|(name, _)| name == want).map(|(_, policy)| *policy);
    assert_eq!(policy_of(thread_name::SYNCER), Some(SCHED_IDLE), "{named:?}");
    assert_ne!(policy_of(thread_name::STORE), Some(SCHED_IDLE), "{named:?}");
}

/// `--log-level` decides what is logged over `RUST_LOG` (the test servers run with
/// `RUST_LOG=warn`): at `info` the start is logged, at `error` a refused start still is.
#[test]
fn the_log_level_flag_sets_what_is_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_watchkv(&dir.path().join("info"), free_port(), &["--log-level", "info"]);
    wait_for("the start logged at info", || server.log_tail(100_000).contains("watchkv serving").then_some(()));
    // With `RUST_LOG=info`, which alone would log the start, `--log-level error` keeps it out.
    let port = free_port();
    let data_dir = dir.path().join("error");
    let log = data_dir.with_extension("log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_watchkv"));
    command.arg("--data-dir").arg(&data_dir).arg("--listen").arg(format!("127.0.0.1:{port}"));
    command.args(["--log-level", "error"]).env("RUST_LOG", "info");
    let out = std::fs::File::create(&log).expect("log file");
    command.stdout(out.try_clone().expect("log file")).stderr(out);
    let child = command.spawn().expect("spawn watchkv");
    let mut quiet = wire::Proc { child, port, log, name: "watchkv".into() };
    wire::wait_until_serving(port, "watchkv", || quiet.exited());
    // The line the first server logged before it served is not in this one's log.
    assert!(!quiet.log_tail(100_000).contains("watchkv serving"), "{}", quiet.log_tail(2000));
    let out = exit::run_to_exit(
        std::process::Command::new(env!("CARGO_BIN_EXE_watchkv")).args(["--log-level", "verbose"]),
        DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("invalid value 'verbose' for '--log-level"), "{stderr}");
}

/// What a server's `grpc.health.v1.Health` answers a probe: `Check` and the first message of
/// `Watch`, for the whole server (`""`) and for a name it does not know.
fn health_answers(rt: &tokio::runtime::Runtime, port: u16) -> Vec<String> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("url")
            .connect_timeout(DEADLINE)
            .connect()
            .await
            .expect("connect");
        let mut client = HealthClient::new(channel);
        let mut answers = Vec::new();
        for service in ["", "etcdserverpb.KV", "nope"] {
            let request = || HealthCheckRequest { service: service.to_string() };
            answers.push(match client.check(request()).await {
                Ok(r) => format!("check {service:?}: {:?}", r.into_inner().status()),
                Err(s) => format!("check {service:?}: {:?} {}", s.code(), s.message()),
            });
            let mut watch = client.watch(request()).await.expect("watch").into_inner();
            let first = tokio::time::timeout(DEADLINE, watch.message()).await.expect("a first status in time");
            answers.push(format!("watch {service:?}: {:?}", first.map(|m| m.map(|m| m.status()))));
        }
        answers
    })
}

/// gRPC's health service answers probes as etcd 3.4.23's does, and turns `NOT_SERVING` once a
/// graceful shutdown begins (etcd's stays `SERVING`: docs/etcd-semantics.md), so a balancer
/// watching it drains the member first.
#[test]
fn grpc_health_answers_as_etcds_and_turns_not_serving_at_shutdown() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd_with(&dir.path().join("etcd"), &[]);
    let mut watchkv = start_watchkv(&dir.path().join("watchkv"), free_port(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (e, w) = (health_answers(&rt, etcd.port), health_answers(&rt, watchkv.port));
    assert_eq!(w, e);
    assert!(w[0].ends_with("Serving"), "{w:?}");

    let port = watchkv.port;
    let mut statuses = rt.block_on(async {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("url").connect().await;
        let mut client = HealthClient::new(channel.expect("connect"));
        client.watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner()
    });
    let mut next = || {
        rt.block_on(async { tokio::time::timeout(DEADLINE, statuses.message()).await })
            .expect("a status in time")
            .ok()
            .flatten()
            .map(|m| m.status())
    };
    assert_eq!(next(), Some(ServingStatus::Serving));
    let term = std::process::Command::new("kill")
        .args(["-TERM", &watchkv.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    assert_eq!(next(), Some(ServingStatus::NotServing), "the watch heard the shutdown");
    let end = rt.block_on(async { tokio::time::timeout(DEADLINE, statuses.message()).await }).expect("in time");
    assert!(matches!(end, Ok(None)), "the watch ended with OK, not with the connection: {end:?}");
    let stopped = wait_for("watchkv to stop", || watchkv.exited());
    assert!(stopped.contains("exit status: 0"), "a clean stop: {stopped}");
}

/// The `grpc_server_*` series a scrape of `port` shows: each line's name and labels, with its
/// value.
fn grpc_series(port: u16) -> std::collections::BTreeMap<String, f64> {
    let (code, text) = wire::http_get(port, "/metrics");
    assert_eq!(code, 200, "{text}");
    text.lines()
        .filter(|l| l.starts_with("grpc_server_"))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_string(), value.parse().ok()?)))
        .collect()
}

/// The series of `method` of `service`: started, or handled with `code`.
fn series(service: &str, method: &str, kind: &str, code: Option<&str>) -> String {
    match code {
        None => format!(
            "grpc_server_started_total{{grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}}"
        ),
        Some(code) => format!(
            "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}}"
        ),
    }
}

/// go-grpc-prometheus' call counters, which etcd's dashboards read (the RPC rate, failed RPCs,
/// open watch streams), count the same calls the same way on both servers: puts, a read of a
/// future revision (`OutOfRange`), a txn, lease grants, a watch stream opened and left open, a
/// lock taken and one given up while it waited, and no finished call as canceled.
#[test]
fn grpc_call_counters_count_as_etcds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd_with(&dir.path().join("etcd"), &[]);
    let watchkv = start_watchkv(&dir.path().join("watchkv"), free_port(), &[]);
    let kv = |m: &str, code: Option<&str>| series("etcdserverpb.KV", m, "unary", code);
    let watched = [
        kv("Put", None),
        kv("Put", Some("OK")),
        kv("Range", None),
        kv("Range", Some("OK")),
        kv("Range", Some("OutOfRange")),
        kv("Txn", None),
        kv("Txn", Some("OK")),
        series("etcdserverpb.Lease", "LeaseGrant", "unary", Some("OK")),
        series("etcdserverpb.Watch", "Watch", "bidi_stream", None),
        series("v3lockpb.Lock", "Lock", "unary", None),
        series("v3lockpb.Lock", "Lock", "unary", Some("OK")),
        kv("Put", Some("Canceled")),
        kv("Range", Some("Canceled")),
        // Pre-registered at zero, as etcd's dashboards expect every series to exist.
        kv("Compact", Some("Unavailable")),
    ];
    // A thread of its own drives the clients' connections between calls, so a call given up
    // is reset on the wire at once.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut deltas = Vec::new();
    for port in [etcd.port, watchkv.port] {
        let before = grpc_series(port);
        let _watch = rt.block_on(async {
            let mut client = etcd_client::Client::connect([format!("127.0.0.1:{port}")], None).await.expect("connect");
            client.put("foo", "1", None).await.expect("put");
            client.put("foo", "2", None).await.expect("put");
            client.get("foo", None).await.expect("get");
            let future = etcd_client::GetOptions::new().with_revision(1000);
            assert!(client.get("foo", Some(future)).await.is_err(), "a future revision is refused");
            client.txn(etcd_client::Txn::new()).await.expect("txn");
            client.lease_grant(60, None).await.expect("lease grant");
            // Kept open until the counts are read: a watch stream is started, not handled.
            let watch = client.watch("foo", None).await.expect("watch");
            let held = client.lease_grant(60, None).await.expect("lease grant").id();
            let lock = etcd_client::LockOptions::new().with_lease(held);
            client.lock("lk", Some(lock)).await.expect("lock");
            let waiting = client.lease_grant(60, None).await.expect("lease grant").id();
            let lock = etcd_client::LockOptions::new().with_lease(waiting);
            let wait = std::time::Duration::from_millis(300);
            assert!(tokio::time::timeout(wait, client.lock("lk", Some(lock))).await.is_err(), "the lock is held");
            (client, watch)
        });
        let counted = wait_for("every call counted", || {
            let after = grpc_series(port);
            let delta: Vec<(String, f64)> = watched
                .iter()
                .map(|s| (s.clone(), after.get(s).copied().unwrap_or(f64::NAN) - before.get(s).copied().unwrap_or(0.0)))
                .collect();
            // Every series present, and every call but the zero series' counted.
            let zero = |s: &str| s.contains("Compact") || s.contains("Canceled");
            delta.iter().all(|(s, d)| !d.is_nan() && (zero(s) || *d > 0.0)).then_some(delta)
        });
        deltas.push(counted);
    }
    assert_eq!(deltas[1], deltas[0], "watchkv's call counts (right: etcd's)");
    // The lock given up: handled `Canceled` on watchkv; etcd 3.4.23's handler keeps waiting for
    // the lock (docs/etcd-semantics.md §5.4), so there is nothing to compare.
    let lock_canceled = series("v3lockpb.Lock", "Lock", "unary", Some("Canceled"));
    wait_for("the given-up lock handled as canceled", || {
        (grpc_series(watchkv.port).get(&lock_canceled).copied() == Some(1.0)).then_some(())
    });
}

/// What a raw HTTP/2 client saw of the server's keep-alive pings: how many it saw, and whether
/// the server closed the connection.
#[derive(Debug, PartialEq, Eq)]
struct Pinged {
    pings: usize,
    closed: bool,
}

/// Opens an HTTP/2 connection to `port` that makes no call, acknowledges the server's settings,
/// and answers the server's pings when `answer` says so, until the server has pinged
/// `enough` times or closed the connection.
fn keepalive_pings(port: u16, answer: bool, enough: usize) -> Pinged {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let frame = |kind: u8, flags: u8, payload: &[u8]| {
        let len = u32::try_from(payload.len()).expect("a small frame").to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        out.extend_from_slice(payload);
        out
    };
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(0x4, 0, &[]));
    stream.write_all(&hello).expect("preface");
    let mut pings = 0;
    loop {
        let mut head = [0u8; 9];
        if stream.read_exact(&mut head).is_err() {
            return Pinged { pings, closed: true };
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).is_err() {
            return Pinged { pings, closed: true };
        }
        let (kind, flags) = (head[3], head[4]);
        match (kind, flags & 0x1) {
            // The server's settings, acknowledged as a client must.
            (0x4, 0) => stream.write_all(&frame(0x4, 0x1, &[])).expect("settings ack"),
            (0x6, 0) => {
                pings += 1;
                if answer {
                    stream.write_all(&frame(0x6, 0x1, &payload)).expect("ping ack");
                }
                if pings >= enough {
                    return Pinged { pings, closed: false };
                }
            }
            _ => {}
        }
    }
}

/// `--grpc-keepalive-interval` and `--grpc-keepalive-timeout` as etcd 3.4.23 applies them: a
/// silent connection is pinged; one whose client never answers is closed, one whose client
/// answers stays open.
#[test]
fn grpc_keepalive_pings_and_closes_a_silent_client_as_etcd_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = ["--grpc-keepalive-interval", "1s", "--grpc-keepalive-timeout", "1s"];
    let etcd = start_etcd_with(&dir.path().join("etcd"), &flags);
    let watchkv = start_watchkv(&dir.path().join("watchkv"), free_port(), &flags);
    for (name, port) in [("etcd", etcd.port), ("watchkv", watchkv.port)] {
        assert_eq!(
            keepalive_pings(port, false, usize::MAX),
            Pinged { pings: 1, closed: true },
            "{name}: never answered"
        );
        assert_eq!(keepalive_pings(port, true, 3), Pinged { pings: 3, closed: false }, "{name}: answered");
    }
    let out = exit::run_to_exit(
        std::process::Command::new(env!("CARGO_BIN_EXE_watchkv")).args(["--grpc-keepalive-interval", "2x"]),
        DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("invalid value '2x' for '--grpc-keepalive-interval"), "{stderr}");
}

/// The `SETTINGS_MAX_CONCURRENT_STREAMS` a server's first settings on a new HTTP/2 connection
/// advertise, if any.
fn advertised_max_streams(port: u16) -> Option<u32> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    stream.write_all(&hello).expect("preface");
    loop {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).expect("a frame");
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).expect("its payload");
        if head[3] == 0x4 && head[4] & 0x1 == 0 {
            return payload
                .chunks_exact(6)
                .find(|s| s[..2] == [0, 0x3])
                .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
        }
    }
}

/// `--max-concurrent-streams` is advertised as etcd 3.4.23 advertises it (its default, 2^32 - 1,
/// too), and a connection whose calls reach it waits for one to end before the next starts.
#[test]
fn max_concurrent_streams_is_advertised_and_kept_as_etcds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd_with(&dir.path().join("etcd"), &[]);
    let watchkv = start_watchkv(&dir.path().join("watchkv"), free_port(), &[]);
    assert_eq!(advertised_max_streams(watchkv.port), advertised_max_streams(etcd.port));
    assert_eq!(advertised_max_streams(watchkv.port), Some(u32::MAX));
    let flags = ["--max-concurrent-streams", "2"];
    let etcd = start_etcd_with(&dir.path().join("etcd2"), &flags);
    let watchkv = start_watchkv(&dir.path().join("watchkv2"), free_port(), &flags);
    assert_eq!(advertised_max_streams(etcd.port), Some(2));
    assert_eq!(advertised_max_streams(watchkv.port), Some(2));

    // Two watch streams take the connection's two slots: a put on it waits until one ends.
    let port = watchkv.port;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([format!("127.0.0.1:{port}")], None).await.expect("connect");
        let first = client.watch("a", None).await.expect("watch");
        let second = client.watch("b", None).await.expect("watch");
        let wait = std::time::Duration::from_millis(500);
        let waited = tokio::time::timeout(wait, client.put("k", "v", None)).await;
        assert!(waited.is_err(), "a third call ran beside two open streams: {waited:?}");
        drop(first);
        let put = tokio::time::timeout(DEADLINE, client.put("k", "v", None)).await;
        assert!(matches!(put, Ok(Ok(_))), "the put once a stream ended: {put:?}");
        drop(second);
    });
}
