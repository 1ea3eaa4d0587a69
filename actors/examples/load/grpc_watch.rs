//! One watch stream of the gRPC scenarios: an `etcd_client` gRPC `Watch` stream that creates its
//! watchers (watcher `w` on key or prefix `(first_key + w) % keys`, `first_key` the stream's),
//! then reads events and checks each watcher's keys, sequence numbers and revision order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, WatchOptions};

use crate::hist::Hist;

/// What the stream tasks of one client thread share with the driver, which may run on another
/// thread (`--watch-threads`), and, through `sent_us`, with the writer (on a thread of its own,
/// see `grpc_writer`). Each client thread has its own, so its counters are written by one thread
/// and only read elsewhere.
pub struct Shared {
    /// The origin of the stored instants.
    epoch: Instant,
    created: AtomicU64,
    events: AtomicU64,
    /// Watch responses that carried events.
    responses: AtomicU64,
    /// When the latest event arrived: nanoseconds since `epoch`, plus one (0: none yet).
    last_event: AtomicU64,
    failed_streams: AtomicU64,
    /// Put→event latencies of every watcher.
    lat: Mutex<Hist>,
    /// Each put's send time in µs since `WatchCfg::epoch`, by sequence number (0: not sent);
    /// written by the writer's thread before it sends the put.
    pub sent_us: Arc<[AtomicU64]>,
    /// Watchers that have received `WatchCfg::complete_after` distinct puts, and when the latest
    /// of them did (grpc-catchup's catch-up time; encoded as `last_event`).
    caught_up: AtomicU64,
    last_caught_up: AtomicU64,
    /// Notified when a watcher catches up or a stream fails (grpc-catchup's rounds wait on it).
    pub progress: tokio::sync::Notify,
}

impl Shared {
    /// A `Shared` with its own send times for `puts` puts.
    pub fn new(puts: usize, epoch: Instant) -> Self {
        Self::with_sent((0..puts).map(|_| AtomicU64::new(0)).collect(), epoch)
    }

    /// A `Shared` reading the send times of another (the streams of every client thread check
    /// the same puts).
    pub fn with_sent(sent_us: Arc<[AtomicU64]>, epoch: Instant) -> Self {
        Self {
            epoch,
            created: AtomicU64::new(0),
            events: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            last_event: AtomicU64::new(0),
            failed_streams: AtomicU64::new(0),
            lat: Mutex::default(),
            sent_us,
            caught_up: AtomicU64::new(0),
            last_caught_up: AtomicU64::new(0),
            progress: tokio::sync::Notify::new(),
        }
    }

    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn responses(&self) -> u64 {
        self.responses.load(Ordering::Relaxed)
    }

    pub fn failed_streams(&self) -> u64 {
        self.failed_streams.load(Ordering::Relaxed)
    }

    pub fn caught_up(&self) -> u64 {
        self.caught_up.load(Ordering::Relaxed)
    }

    pub fn last_event(&self) -> Option<Instant> {
        self.instant(&self.last_event)
    }

    pub fn last_caught_up(&self) -> Option<Instant> {
        self.instant(&self.last_caught_up)
    }

    /// Takes the latencies recorded so far.
    pub fn take_lat(&self) -> Hist {
        std::mem::take(&mut *self.lat.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Counts a stream that failed and wakes whoever waits for progress.
    pub fn stream_failed(&self) {
        self.failed_streams.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_one();
    }

    fn instant(&self, at: &AtomicU64) -> Option<Instant> {
        match at.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.epoch + Duration::from_nanos(ns - 1)),
        }
    }

    fn stamp(&self, at: &AtomicU64, now: Instant) {
        at.store(now.saturating_duration_since(self.epoch).as_nanos() as u64 + 1, Ordering::Relaxed);
    }
}

pub struct WatchCfg {
    /// Watcher `w` of a stream watches `keys[(first_key + w) % keys.len()]`, `first_key` the
    /// stream's; the puts to that key are the sequence numbers `seq` with
    /// `seq % keys.len() == (first_key + w) % keys.len()`.
    pub keys: Vec<Vec<u8>>,
    /// Whether each of `keys` is a prefix rather than a key.
    pub prefix: bool,
    /// The revision to watch from (0: from now).
    pub start_revision: i64,
    /// Sequence numbers are below this.
    pub max_seq: usize,
    /// A watcher is caught up once it has this many distinct puts (0: never counted).
    pub complete_after: usize,
    pub epoch: Instant,
    pub setup_deadline: Instant,
}

impl WatchCfg {
    /// Each watcher's tally slots: one per put to its key.
    fn slots(&self) -> usize {
        self.max_seq.div_ceil(self.keys.len().max(1))
    }

    fn options(&self) -> Option<WatchOptions> {
        let mut o = WatchOptions::new().with_start_revision(self.start_revision);
        if self.prefix {
            o = o.with_prefix();
        }
        Some(o)
    }

    /// Whether an event on `key` belongs to the watcher of key index `k` (taken modulo `keys`).
    fn matches(&self, k: usize, key: &[u8]) -> bool {
        let mine = &self.keys[k % self.keys.len()];
        if self.prefix {
            key.starts_with(mine)
        } else {
            key == mine.as_slice()
        }
    }
}

/// One stream's findings.
#[derive(Default)]
pub struct StreamResult {
    /// The key index of the stream's first watcher: watcher `w` is on key `(first_key + w) % keys`.
    pub first_key: usize,
    /// Per watcher (creation order): how often each put to its key arrived, by `seq / keys`.
    pub counts: Vec<Vec<u8>>,
    /// Per watcher: events whose revision was not above the previous one's.
    pub out_of_order: Vec<u64>,
    /// Per watcher: events it should never have had (another key's, not a put, a value that is
    /// no put's), each also in `unexpected`.
    pub foreign: Vec<u64>,
    /// Events of a watch id the stream never created, each also in `unexpected`.
    pub unattributed: u64,
    pub unexpected: u64,
    pub canceled: u64,
    pub error: Option<String>,
}

/// The sequence number at the front of a value (`format!("{seq:010}")` and padding).
pub fn parse_seq(value: &[u8]) -> Option<usize> {
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&value[..digits]).ok()?.parse().ok()
}

/// Runs one stream of `watchers` watchers, the first on key index `first_key`, until `stop`.
pub async fn grpc_watch_stream(
    client: Client,
    cfg: Arc<WatchCfg>,
    shared: Arc<Shared>,
    watchers: usize,
    first_key: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> StreamResult {
    let mut res = StreamResult { first_key, ..StreamResult::default() };
    if let Err(e) = stream_inner(client, &cfg, &shared, watchers, &mut stop, &mut res).await {
        shared.stream_failed();
        res.error.get_or_insert(e);
    }
    res
}

async fn stream_inner(
    mut client: Client,
    cfg: &WatchCfg,
    shared: &Shared,
    watchers: usize,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    res: &mut StreamResult,
) -> Result<(), String> {
    let first = res.first_key;
    let key_of = |w: usize| cfg.keys[(first + w) % cfg.keys.len()].clone();
    // One `Watch` call opens the stream with its first watcher; the rest go over the same stream.
    // The server answers creates in order, so the n-th `created` is watcher n (and `matches`
    // catches it if not).
    let mut stream = actix_rt::time::timeout(Duration::from_secs(10), client.watch(key_of(0), cfg.options()))
        .await
        .map_err(|_| "opening the watch stream timed out".to_string())?
        .map_err(|e| format!("watch: {e}"))?;
    for w in 1..watchers {
        stream.watch(key_of(w), cfg.options()).await.map_err(|e| format!("watch create: {e}"))?;
    }
    let mut ids: HashMap<i64, usize> = HashMap::new();
    let mut last_rev: Vec<i64> = Vec::new();
    // Per watcher: distinct puts received (for `complete_after`).
    let mut distinct: Vec<usize> = Vec::new();
    let keys = cfg.keys.len();
    loop {
        let msg = tokio::select! {
            m = stream.message() => m.map_err(|e| format!("watch stream: {e}"))?,
            _ = stop.changed() => return Ok(()),
            _ = actix_rt::time::sleep_until(cfg.setup_deadline.into()), if res.counts.len() < watchers => {
                return Err(format!("only {} of {} watchers created in time", res.counts.len(), watchers));
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
            res.counts.push(vec![0u8; cfg.slots()]);
            res.out_of_order.push(0);
            res.foreign.push(0);
            last_rev.push(0);
            distinct.push(0);
            shared.created.fetch_add(1, Ordering::Relaxed);
        }
        if resp.canceled() {
            res.canceled += 1;
            res.error.get_or_insert_with(|| format!("watch {} canceled: {:?}", resp.watch_id(), resp.cancel_reason()));
        }
        let events = resp.events();
        if events.is_empty() {
            continue;
        }
        shared.events.fetch_add(events.len() as u64, Ordering::Relaxed);
        shared.responses.fetch_add(1, Ordering::Relaxed);
        shared.stamp(&shared.last_event, Instant::now());
        let Some(&w) = ids.get(&resp.watch_id()) else {
            res.unexpected += events.len() as u64;
            res.unattributed += events.len() as u64;
            continue;
        };
        let mut lat = shared.lat.lock().unwrap_or_else(|e| e.into_inner());
        for ev in events {
            let Some(kv) = ev.kv().filter(|kv| ev.event_type() == EventType::Put && cfg.matches(first + w, kv.key()))
            else {
                res.unexpected += 1;
                res.foreign[w] += 1;
                continue;
            };
            if kv.mod_revision() <= last_rev[w] {
                res.out_of_order[w] += 1;
            }
            last_rev[w] = last_rev[w].max(kv.mod_revision());
            // A sequence number of another key's puts is as wrong as another key.
            match parse_seq(kv.value()).filter(|&s| s < cfg.max_seq && s % keys == (first + w) % keys) {
                Some(seq) => {
                    let c = &mut res.counts[w][seq / keys];
                    if *c == 0 {
                        distinct[w] += 1;
                        if distinct[w] == cfg.complete_after {
                            shared.caught_up.fetch_add(1, Ordering::Relaxed);
                            shared.stamp(&shared.last_caught_up, Instant::now());
                            shared.progress.notify_one();
                        }
                    }
                    *c = c.saturating_add(1);
                    let sent = shared.sent_us[seq].load(Ordering::Acquire);
                    if sent > 0 {
                        lat.record(now_us.saturating_sub(sent));
                    }
                }
                None => {
                    res.unexpected += 1;
                    res.foreign[w] += 1;
                }
            }
        }
    }
}
