//! One watch stream of scenario 2: a raw HTTP/1.1 `POST /v3/watch` connection that creates its
//! watchers, then reads events and checks each watcher's sequence numbers and revision order.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::http::HttpDecoder;
use crate::watch_lines::{scan_line, serde_line, LineInfo};

/// Bytes each watch stream asks the socket for per read.
const READ_BUFFER: usize = 64 * 1024;

/// What every stream task shares with the driver (all on one thread).
#[derive(Default)]
pub struct Shared {
    pub created: Cell<u64>,
    pub events: Cell<u64>,
    pub last_event: Cell<Option<Instant>>,
    pub failed_streams: Cell<u64>,
}

/// One stream's findings.
#[derive(Default)]
pub struct StreamResult {
    pub created: usize,
    /// Per watcher (creation order): how often each sequence number arrived.
    pub counts: Vec<Vec<u8>>,
    pub lat_us: Vec<u64>,
    /// Per watcher: events whose revision was not above the previous one's.
    pub out_of_order: Vec<u64>,
    /// Per watcher: events it should never have had (not a put, a value that is no put's),
    /// each also in `unexpected` or `non_put`.
    pub foreign: Vec<u64>,
    /// Events of a watch id the stream never created, each also in `unexpected`.
    pub unattributed: u64,
    pub unexpected: u64,
    pub canceled: u64,
    pub non_put: u64,
    pub error: Option<String>,
}

pub struct StreamCfg {
    pub addr: SocketAddr,
    pub host: String,
    pub watchers: usize,
    pub prefix: Vec<u8>,
    pub max_seq: usize,
    pub epoch: Instant,
    pub setup_deadline: Instant,
}

pub async fn watch_stream(
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
                res.out_of_order.push(0);
                res.foreign.push(0);
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
                res.unattributed += info.events.len() as u64;
                continue;
            };
            for ev in &info.events {
                events_here += 1;
                if !ev.put {
                    res.non_put += 1;
                    res.foreign[w] += 1;
                    continue;
                }
                if ev.mod_rev <= last_rev[w] {
                    res.out_of_order[w] += 1;
                }
                last_rev[w] = last_rev[w].max(ev.mod_rev);
                match ev.payload {
                    Some((seq, sent_us)) if seq < cfg.max_seq => {
                        let c = &mut res.counts[w][seq];
                        *c = c.saturating_add(1);
                        res.lat_us.push(now_us.saturating_sub(sent_us));
                    }
                    _ => {
                        res.unexpected += 1;
                        res.foreign[w] += 1;
                    }
                }
            }
        }
        if events_here > 0 {
            shared.events.set(shared.events.get() + events_here);
            shared.last_event.set(Some(Instant::now()));
        }
    }
}
