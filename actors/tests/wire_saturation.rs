//! etcd's watch guarantees at saturation, over the wire, for both transports: gRPC `Watch`
//! streams on the shared client port and HTTP/JSON `/v3/watch` streams of the gateway.
//!
//! Each test opens many streams with several watchers each (single keys, prefixes, intervals,
//! from-key ranges, filters, `prev_kv`) and one never-slow reference watcher on every key from
//! revision 1, whose events are the store's history. Concurrent writers then keep many puts,
//! deletes and multi-key txns in flight, so that group commits hold many revisions. Meanwhile a
//! third of the streams read slowly: some stop reading until the writers are done (their
//! buffers fill and their watchers become victims), some sleep between responses, some stop for
//! a while in the middle.
//!
//! When every watcher has seen its last matching revision, every stream's responses, converted
//! back from the wire, go through the watch-guarantee checker (`watchkv_actors::testing`):
//! every matching revision exactly once and in order (Ordered, Unique, Reliable), never a
//! revision split across two responses (Atomic), filters, `prev_kv`, `IsCreate`. On top of it
//! the test asserts what saturation must have caused: watchers were parked as victims, and
//! responses carried several revisions at once (coalescing).

mod client_port;
mod gateway_common;

use std::collections::HashMap;
use std::future::ready;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_server::ServerHandle;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::future::join_all;
use futures::stream::{self, LocalBoxStream, StreamExt};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use tokio::sync::watch;
use tonic::transport::Channel;
use watchkv::watch::response::{Events, WatchResponse};
use watchkv::watch::watcher::Filters;
use watchkv::{Event, EventKind, KeyRange, KeyValue};
use watchkv_actors::gateway::Gateway;
use watchkv_actors::grpc::pb::etcdserverpb as pb;
use watchkv_actors::grpc::pb::mvccpb;
use watchkv_actors::testing::checker::{check_stream_reports, End};
use watchkv_actors::testing::History;
use watchkv_actors::{Handle, WatchCreate};

use gateway_common::{Gw, TimedOut};

/// How long a wait for something the test expects may last: generous, as the machine may have
/// two cores busy with other work, and a wait that succeeds returns at once.
const DEADLINE: Duration = Duration::from_secs(60);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(10);

/// Concurrent writers, and the operations each keeps in flight.
const WRITERS: usize = 4;
const IN_FLIGHT: usize = 16;

/// Each writer writes its own keys `sat/{writer}/{0..KEYS}` (and `zz/{writer}` in txns).
const KEYS: usize = 8;

/// A dawdling reader sleeps this long before each response it reads.
const DAWDLE: Duration = Duration::from_millis(2);

/// A reader that pauses midway stops reading this long after this many event responses.
const PAUSE: Duration = Duration::from_millis(300);
const PAUSE_AFTER: usize = 50;

/// How much the writers write.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// Operations per writer at least.
    min_ops: usize,
    /// Operations per writer after the first parked victim was seen: writes the victims miss
    /// while parked, so that their catch-up must carry several revisions.
    ops_after_victims: usize,
    /// Operations per writer at most: writers go on past `min_ops` until a victim has been
    /// seen (a stalled reader's buffers, however large the socket's, fill up eventually).
    max_ops: usize,
    /// Bytes per value.
    value_len: usize,
}

/// How many streams, and watchers on each.
#[derive(Debug, Clone, Copy)]
struct Shape {
    streams: usize,
    watchers_per_stream: usize,
}

#[actix_rt::test]
async fn grpc_streams_keep_every_watch_guarantee_at_saturation() {
    let server = GrpcServer::start().await;
    let shape = Shape { streams: 20, watchers_per_stream: 10 };
    let load = Load { min_ops: 500, ops_after_victims: 150, max_ops: 5000, value_len: 128 };
    saturate(&server, shape, load).await;
    server.stop().await;
}

#[actix_rt::test]
async fn gateway_streams_keep_every_watch_guarantee_at_saturation() {
    let gw = Gw::start().await;
    let shape = Shape { streams: 10, watchers_per_stream: 5 };
    // Larger values: without HTTP/2's flow control, a stalled HTTP/1.1 client pushes back on
    // the server only once the kernel's socket buffers (a few MB on loopback) are full.
    let load = Load { min_ops: 500, ops_after_victims: 150, max_ops: 5000, value_len: 512 };
    saturate(&GatewayServer(&gw), shape, load).await;
    gw.finish().await;
}

// ----- the scenario, for either transport -----

/// A server as the scenario drives it.
trait Transport {
    fn name(&self) -> &'static str;
    fn handle(&self) -> &Handle;
    /// Opens a watch stream sending `creates`; its responses converted back from the wire.
    /// A `slow` stream's reader may stop reading: its transport should push back on the
    /// server soon after.
    async fn open(&self, creates: &[WatchCreate], slow: bool)
        -> LocalBoxStream<'static, Result<WatchResponse, String>>;
    /// Performs one write; returns the revision of its response header.
    async fn write(&self, op: WriteOp) -> i64;
}

/// How a stream's client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// As fast as it can.
    Eager,
    /// Stops reading after its `created` responses until the writers are done: its buffers
    /// fill and its watchers are parked as victims.
    StallWhileWriting,
    /// Sleeps [`DAWDLE`] before each response.
    Dawdle,
    /// Stops for [`PAUSE`] after [`PAUSE_AFTER`] event responses.
    PauseMidway,
}

/// About a third of the streams are slow, in turns of each kind.
fn pace(stream: usize) -> Pace {
    match (stream % 3, (stream / 3) % 3) {
        (0, 0) => Pace::StallWhileWriting,
        (0, 1) => Pace::Dawdle,
        (0, _) => Pace::PauseMidway,
        _ => Pace::Eager,
    }
}

/// One stream under test.
struct Watched {
    name: String,
    pace: Pace,
    creates: Vec<WatchCreate>,
    log: Arc<Mutex<StreamLog>>,
    reader: tokio::task::JoinHandle<()>,
}

/// What a stream's reader has received so far.
#[derive(Default)]
struct StreamLog {
    responses: Vec<WatchResponse>,
    /// The watch id of the n-th create (the n-th `created` response answers it).
    ids: Vec<i64>,
    /// The highest event revision received, per watch id.
    last_rev: HashMap<i64, i64>,
    /// Why the reader stopped (the stream failed or ended).
    failure: Option<String>,
}

impl Watched {
    fn log(&self) -> std::sync::MutexGuard<'_, StreamLog> {
        self.log.lock().expect("stream log")
    }

    /// Fails the test at once if the stream's reader has stopped.
    fn check_alive(&self) {
        if let Some(why) = &self.log().failure {
            panic!("{}: {why}", self.name);
        }
    }
}

async fn saturate(t: &impl Transport, shape: Shape, load: Load) {
    let (writes_done_tx, writes_done) = watch::channel(false);

    // The reference: every key from revision 1, never slow. Its events are the history.
    let reference_create = WatchCreate::new(&KeyRange::all(), 1);
    let reference = open(t, "reference", vec![reference_create], Pace::Eager, writes_done.clone()).await;
    let mut streams = Vec::with_capacity(shape.streams);
    for s in 0..shape.streams {
        let pace = pace(s);
        let name = format!("{} stream {s} ({pace:?})", t.name());
        streams.push(open(t, &name, watcher_specs(s, shape.watchers_per_stream), pace, writes_done.clone()).await);
    }
    // Every watcher exists before the first write, so each is owed every matching event.
    wait_for("every watcher created", || {
        for w in streams.iter().chain([&reference]) {
            w.check_alive();
            let created = w.log().ids.len();
            if created < w.creates.len() {
                return Err(format!("{}: {created} of {} created", w.name, w.creates.len()));
            }
        }
        Ok(())
    })
    .await;

    let victims = VictimMonitor::start(t.handle().clone());
    let writing = Instant::now();
    let written = run_writers(t, load, &victims.most_parked).await;
    writes_done_tx.send_replace(true);
    let writes_took = writing.elapsed();
    let most_parked = victims.stop();
    let current = t.handle().stats().await.expect("stats").store.current_rev;
    assert_eq!(written.last_revision, current, "the last write's revision is the store's");
    assert!(
        most_parked > 0,
        "no watcher was ever parked as a victim after {} operations: the slow readers never filled their buffers",
        written.ops
    );

    // The history: every revision the writers made, from the reference watcher.
    wait_for("the reference watcher to reach the last revision", || {
        reference.check_alive();
        let last = reference.log().last_rev.values().copied().max().unwrap_or(0);
        if last < written.last_revision {
            return Err(format!("at {last} of {}", written.last_revision));
        }
        Ok(())
    })
    .await;
    let history = History::from_responses(&reference.log().responses).expect("the reference saw a possible history");
    assert_eq!((history.first_revision(), history.last_revision()), (2, written.last_revision));
    history.check_contiguous(2, written.last_revision).expect("every revision has events");

    // Every watcher is owed the last revision that matches it: wait until it has it (the
    // slow readers catch up once the writers are done).
    let owed: Vec<Vec<i64>> =
        streams.iter().map(|w| w.creates.iter().map(|c| last_matching(&history, c)).collect()).collect();
    wait_for("every watcher to reach its last matching revision", || {
        for (w, owed) in streams.iter().zip(&owed) {
            w.check_alive();
            let log = w.log();
            for (&want, id) in owed.iter().zip(&log.ids) {
                let got = log.last_rev.get(id).copied().unwrap_or(0);
                if got < want {
                    return Err(format!("{} watch id {id}: at revision {got}, owed {want}", w.name));
                }
            }
        }
        Ok(())
    })
    .await;
    let caught_up_took = writing.elapsed() - writes_took;

    // Stop reading: what each stream has is what the checks see.
    let mut summary = Summary::default();
    for w in streams.iter().chain([&reference]) {
        w.reader.abort();
        check_stream(&history, w, &mut summary);
    }
    println!(
        "{}: {} streams x {} watchers, {} writes up to revision {} in {:.1?}, all caught up {:.1?} later; \
         {} responses, {} events; {} responses with several revisions (most {}); \
         at most {most_parked} victims parked at once",
        t.name(),
        shape.streams,
        shape.watchers_per_stream,
        written.ops,
        written.last_revision,
        writes_took,
        caught_up_took,
        summary.responses,
        summary.events,
        summary.multi_revision,
        summary.most_revisions,
    );
    // Saturation must have coalesced revisions: group commits of many revisions, and victims'
    // parked and missed revisions, reach a watcher as one response.
    assert!(summary.multi_revision > 0, "no response carried more than one revision: {summary:?}");
    // And the stalled streams must have caught up in coalesced responses: a watcher parked
    // while writes went on is replayed the revisions it missed together.
    assert!(summary.stalled_multi_revision > 0, "no stalled stream got a multi-revision response: {summary:?}");
}

async fn open(
    t: &impl Transport,
    name: &str,
    creates: Vec<WatchCreate>,
    pace: Pace,
    writes_done: watch::Receiver<bool>,
) -> Watched {
    let responses = t.open(&creates, pace != Pace::Eager).await;
    let log = Arc::new(Mutex::new(StreamLog::default()));
    let reader = actix_rt::spawn(read(responses, pace, creates.clone(), Arc::clone(&log), writes_done));
    Watched { name: name.to_string(), pace, creates, log, reader }
}

/// Reads a stream at its pace into its log, until the stream fails or the task is aborted.
async fn read(
    mut responses: LocalBoxStream<'static, Result<WatchResponse, String>>,
    pace: Pace,
    creates: Vec<WatchCreate>,
    log: Arc<Mutex<StreamLog>>,
    mut writes_done: watch::Receiver<bool>,
) {
    let mut event_responses = 0;
    let mut paused = false;
    loop {
        // The pace applies once the watchers exist: the test waits for every `created`.
        let all_created = log.lock().expect("stream log").ids.len() == creates.len();
        match pace {
            Pace::StallWhileWriting if all_created => {
                let _ = writes_done.wait_for(|done| *done).await;
            }
            Pace::Dawdle if all_created => actix_rt::time::sleep(DAWDLE).await,
            Pace::PauseMidway if all_created && !paused && event_responses >= PAUSE_AFTER => {
                paused = true;
                actix_rt::time::sleep(PAUSE).await;
            }
            _ => {}
        }
        let next = responses.next().await;
        let mut received = log.lock().expect("stream log");
        match next {
            Some(Ok(mut r)) => {
                if r.created {
                    received.ids.push(r.watch_id);
                } else if !r.events.is_empty() {
                    event_responses += 1;
                    // The wire has no flag for it: a response carries `prev_kv` if its
                    // watcher asked for it (the checks look at the events themselves).
                    if let Some(n) = received.ids.iter().position(|id| *id == r.watch_id) {
                        r.prev_kv = creates[n].prev_kv;
                    }
                    let last = r.events.iter().map(|e| e.kv.mod_revision).max().unwrap_or(0);
                    let seen = received.last_rev.entry(r.watch_id).or_default();
                    *seen = (*seen).max(last);
                }
                received.responses.push(r);
            }
            Some(Err(e)) => {
                received.failure = Some(format!("the stream failed: {e}"));
                return;
            }
            None => {
                received.failure = Some("the stream ended".into());
                return;
            }
        }
    }
}

/// Polls `check` until it holds; fails after [`DEADLINE`] with its last answer.
async fn wait_for(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(why) => assert!(start.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}: {why}"),
        }
        actix_rt::time::sleep(POLL).await;
    }
}

// ----- watchers and writes -----

/// The watchers of stream `s`: a prefix over every writer's keys with `prev_kv` (so that every
/// stream has plenty to receive), then a mix that differs from stream to stream.
fn watcher_specs(s: usize, n: usize) -> Vec<WatchCreate> {
    let create = |range: KeyRange, prev_kv: bool, filters: Filters| WatchCreate {
        prev_kv,
        filters,
        ..WatchCreate::new(&range, 0)
    };
    let none = Filters::default();
    let no_put = Filters { no_put: true, no_delete: false };
    let no_delete = Filters { no_put: false, no_delete: true };
    let mix = [
        create(KeyRange::single(format!("sat/{}/{}", s % WRITERS, s % KEYS)), false, none),
        create(KeyRange::prefix(format!("sat/{}/", s % WRITERS)), false, none),
        create(KeyRange::all(), false, none),
        create(KeyRange::interval("sat/0/4", "sat/2/2"), false, none),
        // From `sat/3/` on: the last writer's keys and every `zz/` key of the txns.
        create(KeyRange::from_wire(b"sat/3/", b"\0"), true, none),
        create(KeyRange::single(format!("sat/{}/3", (s + 1) % WRITERS)), true, none),
        create(KeyRange::prefix("sat/"), false, no_delete),
        // Deletes only.
        create(KeyRange::prefix(format!("sat/{}/", (s + 2) % WRITERS)), true, no_put),
        create(KeyRange::single(format!("zz/{}", s % WRITERS)), true, none),
        create(KeyRange::all(), true, none),
    ];
    let mut specs = vec![create(KeyRange::prefix("sat/"), true, none)];
    specs.extend((0..n - 1).map(|j| mix[(s + j) % mix.len()].clone()));
    specs
}

/// One write.
#[derive(Debug, Clone)]
enum WriteOp {
    Put(String, String),
    /// Puts of several keys in one revision.
    Txn(Vec<(String, String)>),
    Delete(String),
}

/// Writer `w`'s operation `i`: mostly puts of its own keys, every tenth a delete, every tenth
/// a txn that also writes a key of the next writer and a `zz/` key.
fn write_op(w: usize, i: usize, value_len: usize) -> WriteOp {
    let value = |tag: &str| {
        let mut v = format!("w{w}-i{i}-{tag}-");
        let pad = value_len.saturating_sub(v.len());
        v.extend(std::iter::repeat_n('.', pad));
        v
    };
    let key = |w: usize, k: usize| format!("sat/{w}/{}", k % KEYS);
    match i % 10 {
        9 => WriteOp::Delete(key(w, i / 10)),
        4 => WriteOp::Txn(vec![
            (key(w, i), value("a")),
            (key((w + 1) % WRITERS, i + 3), value("b")),
            (format!("zz/{w}"), value("c")),
        ]),
        _ => WriteOp::Put(key(w, i), value("p")),
    }
}

/// What the writers did.
struct Written {
    ops: usize,
    /// The highest revision of any write's response: the store's last revision.
    last_revision: i64,
}

/// Runs [`WRITERS`] writers, each keeping [`IN_FLIGHT`] operations in flight, for as long as
/// `load` says (`most_parked` tells whether a victim has been seen).
async fn run_writers(t: &impl Transport, load: Load, most_parked: &Arc<AtomicUsize>) -> Written {
    let writers = (0..WRITERS).map(|w| {
        let most_parked = Arc::clone(most_parked);
        let mut victim_seen_at: Option<usize> = None;
        stream::iter(0..load.max_ops)
            .take_while(move |&i| {
                if victim_seen_at.is_none() && most_parked.load(Ordering::Relaxed) > 0 {
                    victim_seen_at = Some(i);
                }
                ready(i < load.min_ops || victim_seen_at.is_none_or(|seen| i < seen + load.ops_after_victims))
            })
            .map(move |i| t.write(write_op(w, i, load.value_len)))
            .buffer_unordered(IN_FLIGHT)
            .fold((0, 0), |(ops, last), rev| ready((ops + 1, rev.max(last))))
    });
    let done = join_all(writers).await;
    Written { ops: done.iter().map(|d| d.0).sum(), last_revision: done.iter().map(|d| d.1).max().unwrap_or(0) }
}

/// Watches the victim actor: the most watchers it held parked at once.
struct VictimMonitor {
    most_parked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl VictimMonitor {
    fn start(handle: Handle) -> Self {
        let most_parked = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&most_parked);
        let task = actix_rt::spawn(async move {
            while let Ok(stats) = handle.stats().await {
                seen.fetch_max(stats.victims.victims, Ordering::Relaxed);
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self { most_parked, task }
    }

    fn stop(self) -> usize {
        self.task.abort();
        self.most_parked.load(Ordering::Relaxed)
    }
}

// ----- the checks -----

/// What the checks counted over every stream.
#[derive(Debug, Default)]
struct Summary {
    responses: usize,
    events: usize,
    /// Responses whose events span more than one revision.
    multi_revision: usize,
    /// The same, on streams that stalled while the writers wrote.
    stalled_multi_revision: usize,
    /// The most revisions in one response.
    most_revisions: usize,
}

/// The history's events that `create` matches (it was created before the first write).
fn matching<'h>(history: &'h History, create: &'h WatchCreate) -> impl Iterator<Item = &'h Arc<Event>> + 'h {
    let range = KeyRange::from_wire(&create.key, &create.range_end);
    history.events().iter().filter(move |e| range.contains(&e.kv.key) && create.filters.accepts(e))
}

/// The last revision `create` is owed (0: none).
fn last_matching(history: &History, create: &WatchCreate) -> i64 {
    matching(history, create).map(|e| e.kv.mod_revision).max().unwrap_or(0)
}

/// Runs the watch-guarantee checker over one stream, and checks on top of it that each of its
/// watchers got everything it is owed, in whole revisions, with `prev_kv` exactly when asked.
fn check_stream(history: &History, w: &Watched, summary: &mut Summary) {
    let log = w.log();
    let reports = check_stream_reports(history, &w.creates, &log.responses)
        .unwrap_or_else(|e| panic!("{}: watch guarantee broken: {e}", w.name));
    assert_eq!(reports.len(), w.creates.len(), "{}: every create answered", w.name);
    for (create, report) in w.creates.iter().zip(&reports) {
        let owed: Vec<i64> = matching(history, create).map(|e| e.kv.mod_revision).collect();
        assert_eq!(report.end, End::Active, "{}: watch id {} ended", w.name, report.id);
        assert_eq!(
            (report.events, report.last_event),
            (owed.len(), owed.last().copied().unwrap_or(0)),
            "{}: watch id {} ({create:?}) got (events, last revision), owed",
            w.name,
            report.id
        );
    }

    let stalled = w.pace == Pace::StallWhileWriting;
    let mut last_of: HashMap<i64, i64> = HashMap::new();
    for (i, r) in log.responses.iter().enumerate().filter(|(_, r)| !r.events.is_empty()) {
        summary.responses += 1;
        summary.events += r.events.len();
        let first = r.events[0].kv.mod_revision;
        let last = r.events[r.events.len() - 1].kv.mod_revision;
        // Atomic: a watcher's next response starts past the revision its previous one ended at.
        if let Some(prev) = last_of.insert(r.watch_id, last) {
            assert!(
                first > prev,
                "{}: response {i} for watch id {} starts at revision {first}, its previous one ended at {prev}",
                w.name,
                r.watch_id
            );
        }
        let mut revisions: Vec<i64> = r.events.iter().map(|e| e.kv.mod_revision).collect();
        revisions.dedup();
        summary.most_revisions = summary.most_revisions.max(revisions.len());
        if revisions.len() > 1 {
            summary.multi_revision += 1;
            summary.stalled_multi_revision += usize::from(stalled);
        }
        // prev_kv: on every event that has a previous value (nothing is compacted here) if
        // the watcher asked for it, on none otherwise.
        for e in &r.events {
            let want = r.prev_kv && !e.is_create();
            assert_eq!(
                e.prev_kv.is_some(),
                want,
                "{}: response {i} for watch id {} (prev_kv {}): event {:?}@{} prev_kv {:?}",
                w.name,
                r.watch_id,
                r.prev_kv,
                String::from_utf8_lossy(&e.kv.key),
                e.kv.mod_revision,
                e.prev_kv
            );
        }
    }
}

// ----- gRPC -----

/// A store and the shared client port on `127.0.0.1:0`, as `actors/tests/grpc.rs` serves it.
struct GrpcServer {
    port: u16,
    handle: Handle,
    server: ServerHandle,
    _dir: tempfile::TempDir,
    /// One connection per writer, shared by its operations.
    writers: Vec<pb::kv_client::KvClient<Channel>>,
    next_writer: AtomicUsize,
}

impl GrpcServer {
    async fn start() -> Self {
        gateway_common::install_panic_hook();
        let dir = tempfile::tempdir().expect("temp dir");
        // Buffered durability (no fsync), no lease timer; every watch tunable as etcd's.
        let config = watchkv_actors::testing::config(dir.path(), false);
        let handle = watchkv_actors::start(config).await.expect("start the store");
        let gw = Gateway::new(handle.clone());
        let (port, server_handle) = client_port::serve_client_port(gw);
        let mut writers = Vec::new();
        for _ in 0..WRITERS {
            writers.push(pb::kv_client::KvClient::new(connect(port, None).await));
        }
        Self { port, handle, server: server_handle, _dir: dir, writers, next_writer: AtomicUsize::new(0) }
    }

    async fn stop(self) {
        self.server.stop(false).await;
        self.handle.shutdown().await.expect("shutdown");
        let panics = gateway_common::server_panics();
        assert!(panics.is_empty(), "server threads panicked: {panics:#?}");
    }
}

/// A connection of its own (a stalled stream must not hold up others on a shared one), with
/// an HTTP/2 window of `window` bytes if given (hyper's default is 2 MiB per stream).
async fn connect(port: u16, window: Option<u32>) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect_timeout(DEADLINE)
        .connect()
        .await
        .expect("connect")
}

impl Transport for GrpcServer {
    fn name(&self) -> &'static str {
        "gRPC"
    }

    fn handle(&self) -> &Handle {
        &self.handle
    }

    async fn open(
        &self,
        creates: &[WatchCreate],
        slow: bool,
    ) -> LocalBoxStream<'static, Result<WatchResponse, String>> {
        // A stream that may stop reading gets HTTP/2's initial window (64 KiB): flow control
        // then stops the server's writes soon after the client stops taking responses.
        let channel = connect(self.port, slow.then_some(65_535)).await;
        let mut client = pb::watch_client::WatchClient::new(channel).max_decoding_message_size(usize::MAX);
        let requests: Vec<pb::WatchRequest> = creates.iter().map(grpc_create).collect();
        // The request side stays open: a client that ends it ends the stream.
        let requests = stream::iter(requests).chain(stream::pending());
        let responses = client.watch(requests).await.expect("Watch").into_inner();
        responses.map(|r| r.map_err(|s| s.to_string()).and_then(from_pb)).boxed_local()
    }

    async fn write(&self, op: WriteOp) -> i64 {
        let n = self.next_writer.fetch_add(1, Ordering::Relaxed);
        let mut kv = self.writers[n % self.writers.len()].clone();
        let put = |(k, v): (String, String)| pb::PutRequest { key: k.into(), value: v.into(), ..Default::default() };
        let header = match op {
            WriteOp::Put(k, v) => kv.put(put((k, v))).await.expect("put").into_inner().header,
            WriteOp::Delete(k) => {
                let req = pb::DeleteRangeRequest { key: k.into(), ..Default::default() };
                kv.delete_range(req).await.expect("delete").into_inner().header
            }
            WriteOp::Txn(puts) => {
                let success = puts
                    .into_iter()
                    .map(|p| pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(put(p))) })
                    .collect();
                kv.txn(pb::TxnRequest { success, ..Default::default() }).await.expect("txn").into_inner().header
            }
        };
        header.expect("a response header").revision
    }
}

fn grpc_create(c: &WatchCreate) -> pb::WatchRequest {
    let filters = [(c.filters.no_put, 0), (c.filters.no_delete, 1)];
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: c.key.clone(),
            range_end: c.range_end.clone(),
            start_revision: c.start_revision,
            prev_kv: c.prev_kv,
            filters: filters.into_iter().filter_map(|(on, f)| on.then_some(f)).collect(),
            ..Default::default()
        })),
    }
}

/// A gRPC watch response as the server meant it (the `prev_kv` flag is set by the reader).
fn from_pb(r: pb::WatchResponse) -> Result<WatchResponse, String> {
    let kv = |kv: mvccpb::KeyValue| KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    };
    let events = r
        .events
        .into_iter()
        .map(|e| {
            let kind = match e.r#type {
                0 => EventKind::Put,
                1 => EventKind::Delete,
                other => return Err(format!("event type {other}")),
            };
            let event_kv = e.kv.ok_or("an event without kv")?;
            Ok(Arc::new(Event::new(kind, kv(event_kv), e.prev_kv.map(kv))))
        })
        .collect::<Result<Events, String>>()?;
    Ok(WatchResponse {
        watch_id: r.watch_id,
        revision: r.header.map_or(0, |h| h.revision),
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision,
        cancel_reason: r.cancel_reason,
        fragment: r.fragment,
        events,
        ..WatchResponse::default()
    })
}

// ----- the HTTP/JSON gateway -----

/// The gateway tests' server (`gateway_common::Gw`), driven through `/v3/watch` with their raw
/// HTTP/1.1 client and through unary JSON posts.
struct GatewayServer<'a>(&'a Gw);

impl Transport for GatewayServer<'_> {
    fn name(&self) -> &'static str {
        "gateway"
    }

    fn handle(&self) -> &Handle {
        &self.0.handle
    }

    async fn open(
        &self,
        creates: &[WatchCreate],
        _slow: bool,
    ) -> LocalBoxStream<'static, Result<WatchResponse, String>> {
        let mut raw = self.0.watch(false).await;
        for c in creates {
            raw.send_json(&gateway_create(c)).await;
        }
        // The socket is read only when the reader asks for a response: a reader that stops
        // lets the kernel's buffers fill, and then the server's.
        stream::unfold(Some(raw), |raw| async move {
            let mut raw = raw?;
            loop {
                match raw.line_by(Instant::now() + Duration::from_secs(1)).await {
                    Ok(Some(line)) => return Some((from_json_line(&line), Some(raw))),
                    Ok(None) => return Some((Err("the response ended".to_string()), None)),
                    // Nothing yet: keep waiting (the test's own deadlines bound the wait).
                    Err(TimedOut) => {}
                }
            }
        })
        .boxed_local()
    }

    async fn write(&self, op: WriteOp) -> i64 {
        let b64 = |s: &str| STANDARD.encode(s);
        let put = |(k, v): &(String, String)| json!({"key": b64(k), "value": b64(v)});
        let reply = match &op {
            WriteOp::Put(k, v) => self.0.ok("/v3/kv/put", &put(&(k.clone(), v.clone()))).await,
            WriteOp::Delete(k) => self.0.ok("/v3/kv/deleterange", &json!({"key": b64(k)})).await,
            WriteOp::Txn(puts) => {
                let success: Vec<Value> = puts.iter().map(|p| json!({"request_put": put(p)})).collect();
                self.0.ok("/v3/kv/txn", &json!({"success": success})).await
            }
        };
        gateway_common::rev(&reply["header"])
    }
}

fn gateway_create(c: &WatchCreate) -> Value {
    let filters: Vec<&str> = [(c.filters.no_put, "NOPUT"), (c.filters.no_delete, "NODELETE")]
        .into_iter()
        .filter_map(|(on, f)| on.then_some(f))
        .collect();
    json!({"create_request": {
        "key": STANDARD.encode(&c.key),
        "range_end": STANDARD.encode(&c.range_end),
        "start_revision": c.start_revision.to_string(),
        "prev_kv": c.prev_kv,
        "filters": filters,
    }})
}

/// One `/v3/watch` line, `{"result":{...}}` in grpc-gateway JSON (int64 as strings, bytes in
/// base64, defaults omitted), as a watch response (the `prev_kv` flag is set by the reader).
fn from_json_line(line: &str) -> Result<WatchResponse, String> {
    let shown = || line.chars().take(300).collect::<String>();
    let JsonLine { result: r } = serde_json::from_str(line).map_err(|e| format!("{e}: {}", shown()))?;
    let events = r
        .events
        .into_iter()
        .map(|e| {
            let kind = match e.kind.as_deref() {
                None | Some("PUT") => EventKind::Put,
                Some("DELETE") => EventKind::Delete,
                Some(other) => return Err(format!("event type {other}: {}", shown())),
            };
            Ok(Arc::new(Event::new(kind, e.kv.into(), e.prev_kv.map(KeyValue::from))))
        })
        .collect::<Result<Events, String>>()?;
    Ok(WatchResponse {
        watch_id: r.watch_id,
        revision: r.header.revision,
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision,
        cancel_reason: r.cancel_reason,
        fragment: r.fragment,
        events,
        ..WatchResponse::default()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    result: JsonResponse,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonResponse {
    header: JsonHeader,
    #[serde(deserialize_with = "int64")]
    watch_id: i64,
    created: bool,
    canceled: bool,
    #[serde(deserialize_with = "int64")]
    compact_revision: i64,
    cancel_reason: String,
    fragment: bool,
    events: Vec<JsonEvent>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonHeader {
    #[serde(deserialize_with = "int64")]
    revision: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    kv: JsonKv,
    #[serde(default)]
    prev_kv: Option<JsonKv>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct JsonKv {
    #[serde(deserialize_with = "base64")]
    key: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    create_revision: i64,
    #[serde(deserialize_with = "int64")]
    mod_revision: i64,
    #[serde(deserialize_with = "int64")]
    version: i64,
    #[serde(deserialize_with = "base64")]
    value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    lease: i64,
}

impl From<JsonKv> for KeyValue {
    fn from(kv: JsonKv) -> Self {
        Self {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease,
        }
    }
}

/// An int64 as protojson writes it: a string.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| serde::de::Error::custom(format!("int64 {s:?}")))
}

/// Bytes as protojson writes them: standard base64.
fn base64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    STANDARD.decode(&s).map_err(|e| serde::de::Error::custom(format!("base64 {s:?}: {e}")))
}
