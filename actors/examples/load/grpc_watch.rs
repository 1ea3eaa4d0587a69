//! One watch stream of grpc-fanout: an `etcd_client` gRPC `Watch` stream that creates its
//! watchers on the one key, then reads events and checks each watcher's sequence numbers and
//! revision order.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType};

use crate::hist::Hist;

/// What every stream task shares with the driver and the writer (all on one thread).
pub struct Shared {
    pub created: Cell<u64>,
    pub events: Cell<u64>,
    /// Watch responses that carried events.
    pub responses: Cell<u64>,
    pub last_event: Cell<Option<Instant>>,
    pub failed_streams: Cell<u64>,
    /// Put→event latencies of every watcher.
    pub lat: RefCell<Hist>,
    /// Each put's send time in µs since `WatchCfg::epoch`, by sequence number (0: not sent).
    pub sent_us: Vec<Cell<u64>>,
}

impl Shared {
    pub fn new(puts: usize) -> Self {
        Self {
            created: Cell::new(0),
            events: Cell::new(0),
            responses: Cell::new(0),
            last_event: Cell::new(None),
            failed_streams: Cell::new(0),
            lat: RefCell::default(),
            sent_us: (0..puts).map(|_| Cell::new(0)).collect(),
        }
    }
}

pub struct WatchCfg {
    pub key: Vec<u8>,
    pub watchers: usize,
    pub max_seq: usize,
    pub epoch: Instant,
    pub setup_deadline: Instant,
}

/// One stream's findings.
#[derive(Default)]
pub struct StreamResult {
    /// Per watcher (creation order): how often each sequence number arrived.
    pub counts: Vec<Vec<u8>>,
    /// Per watcher: events whose revision was not above the previous one's.
    pub out_of_order: Vec<u64>,
    pub unexpected: u64,
    pub canceled: u64,
    pub error: Option<String>,
}

/// The sequence number at the front of a value (`format!("{seq:010}")` and padding).
pub fn parse_seq(value: &[u8]) -> Option<usize> {
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&value[..digits]).ok()?.parse().ok()
}

pub async fn grpc_watch_stream(
    client: Client,
    cfg: std::rc::Rc<WatchCfg>,
    shared: std::rc::Rc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> StreamResult {
    let mut res = StreamResult::default();
    if let Err(e) = stream_inner(client, &cfg, &shared, &mut stop, &mut res).await {
        shared.failed_streams.set(shared.failed_streams.get() + 1);
        res.error.get_or_insert(e);
    }
    res
}

async fn stream_inner(
    mut client: Client,
    cfg: &WatchCfg,
    shared: &Shared,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    res: &mut StreamResult,
) -> Result<(), String> {
    // One `Watch` call opens the stream with its first watcher; the rest go over the same stream.
    let mut stream = actix_rt::time::timeout(Duration::from_secs(10), client.watch(cfg.key.clone(), None))
        .await
        .map_err(|_| "opening the watch stream timed out".to_string())?
        .map_err(|e| format!("watch: {e}"))?;
    for _ in 1..cfg.watchers {
        stream.watch(cfg.key.clone(), None).await.map_err(|e| format!("watch create: {e}"))?;
    }
    let mut ids: HashMap<i64, usize> = HashMap::new();
    let mut last_rev: Vec<i64> = Vec::new();
    loop {
        let msg = tokio::select! {
            m = stream.message() => m.map_err(|e| format!("watch stream: {e}"))?,
            _ = stop.changed() => return Ok(()),
            _ = actix_rt::time::sleep_until(cfg.setup_deadline.into()), if res.counts.len() < cfg.watchers => {
                return Err(format!("only {} of {} watchers created in time", res.counts.len(), cfg.watchers));
            }
        };
        let Some(resp) = msg else {
            return Err("server closed the watch stream".into());
        };
        let now_us = cfg.epoch.elapsed().as_micros() as u64;
        if resp.created() {
            if ids.insert(resp.watch_id(), res.counts.len()).is_some() {
                return Err(format!("watch id {} created twice", resp.watch_id()));
            }
            res.counts.push(vec![0u8; cfg.max_seq]);
            res.out_of_order.push(0);
            last_rev.push(0);
            shared.created.set(shared.created.get() + 1);
        }
        if resp.canceled() {
            res.canceled += 1;
            res.error.get_or_insert_with(|| format!("watch {} canceled: {:?}", resp.watch_id(), resp.cancel_reason()));
        }
        let events = resp.events();
        if events.is_empty() {
            continue;
        }
        shared.events.set(shared.events.get() + events.len() as u64);
        shared.responses.set(shared.responses.get() + 1);
        shared.last_event.set(Some(Instant::now()));
        let Some(&w) = ids.get(&resp.watch_id()) else {
            res.unexpected += events.len() as u64;
            continue;
        };
        let mut lat = shared.lat.borrow_mut();
        for ev in events {
            let Some(kv) = ev.kv().filter(|_| ev.event_type() == EventType::Put) else {
                res.unexpected += 1;
                continue;
            };
            if kv.mod_revision() <= last_rev[w] {
                res.out_of_order[w] += 1;
            }
            last_rev[w] = last_rev[w].max(kv.mod_revision());
            match parse_seq(kv.value()).filter(|&s| s < cfg.max_seq) {
                Some(seq) => {
                    let c = &mut res.counts[w][seq];
                    *c = c.saturating_add(1);
                    let sent = shared.sent_us[seq].get();
                    if sent > 0 {
                        lat.record(now_us.saturating_sub(sent));
                    }
                }
                None => res.unexpected += 1,
            }
        }
    }
}
