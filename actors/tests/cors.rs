//! Cross-origin requests to the HTTP/JSON gateway, against etcd 3.4.23 and watchkv started with
//! the same `--cors`: the `Access-Control-Allow-*` headers each response carries, and the
//! answer to `OPTIONS` (a browser's preflight), must be the same.

mod wire;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use wire::{start_etcd_with, start_watchkv};

/// A request's status and its `Access-Control-*` headers (lower-cased names, sorted).
fn cors_of(port: u16, method: &str, origin: Option<&str>) -> (u16, Vec<(String, String)>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let body = r#"{"key":"Zm9v"}"#;
    let mut head = format!("{method} /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(origin) = origin {
        head.push_str(&format!("Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    if method == "POST" {
        head.push_str(body);
    }
    stream.write_all(head.as_bytes()).expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(k, _)| k.starts_with("access-control-"))
        .collect();
    headers.sort();
    (status, headers)
}

#[test]
fn cross_origin_headers_and_preflights_match_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (n, cors) in [None, Some("http://ui.example:3000,https://admin.example:8443")].into_iter().enumerate() {
        let flags: Vec<&str> = cors.map(|c| vec!["--cors", c]).unwrap_or_default();
        let etcd = start_etcd_with(&dir.path().join(format!("etcd{n}")), &flags);
        let watchkv = start_watchkv(&dir.path().join(format!("watchkv{n}")), wire::free_port(), &flags);
        for method in ["POST", "OPTIONS"] {
            for origin in [
                None,
                Some("http://ui.example:3000"),
                Some("https://admin.example:8443"),
                Some("http://evil.example:3000"),
            ] {
                let (e, w) = (cors_of(etcd.port, method, origin), cors_of(watchkv.port, method, origin));
                assert_eq!(w, e, "--cors {cors:?}: {method} from {origin:?}");
            }
        }
        // The headers are there at all (a test that compared two empty lists would pass).
        let (status, headers) = cors_of(watchkv.port, "OPTIONS", Some("http://ui.example:3000"));
        assert_eq!(status, 200);
        let allowed = headers.iter().find(|(k, _)| k == "access-control-allow-origin").map(|(_, v)| v.as_str());
        assert_eq!(allowed, Some(if cors.is_none() { "*" } else { "http://ui.example:3000" }), "{headers:?}");
    }
}
