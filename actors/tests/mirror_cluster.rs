//! Mirror mode against a real 3-member etcd 3.4.23 cluster (`watchkv --upstream URL,URL,URL`):
//! two mirrors, their upstream lists in different orders, serve watchers of every kind (the
//! whole keyspace, a prefix, one key, with `prev_kv`, from a past revision) while clients write
//! through etcd's members directly and through the mirrors (forwarded puts, deletes, txns), and
//! while the cluster fails: the member a mirror's upstream watch is on is SIGKILLed, later the
//! leader; one mirror is SIGKILLed and restarted over its own data directory, its watchers
//! resuming from what they last saw; a watcher moves from one mirror to the other with
//! `start_revision` = last seen + 1. At the end every watcher's stream passes the
//! watch-guarantee checker against upstream's own history (read back from etcd with a watch
//! from its first revision), each watcher got exactly its key or range's events once and in
//! order (across its moves), with the right `prev_kv`; every acknowledged write is in
//! upstream's history; forwarded writes were read back at once on their mirror; reads on a
//! mirror right after a write made on etcd directly saw it; a lease renewed through a mirror
//! (gateway, and gRPC keep-alive streams) while a member is down never fails on it; and
//! `HashKV` at a common revision is the same on both mirrors and every member.

mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt as _;
use tonic::transport::{Channel, Endpoint};
use watchkv::watch::response::WatchResponse as CheckedResponse;
use watchkv::{Event, EventKind, KeyValue};
use watchkv_actors::api::pb::etcdserverpb::kv_client::KvClient;
use watchkv_actors::api::pb::etcdserverpb::lease_client::LeaseClient;
use watchkv_actors::api::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use watchkv_actors::api::pb::etcdserverpb::watch_client::WatchClient;
use watchkv_actors::api::pb::etcdserverpb::{
    compare, request_op, watch_request, CompactionRequest, Compare, DeleteRangeRequest, HashKvRequest,
    LeaseKeepAliveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use watchkv_actors::api::pb::mvccpb;
use watchkv_actors::testing::checker::assert_stream_ok;
use watchkv_actors::testing::History;
use watchkv_actors::WatchCreate;
use wire::cluster::{followed_member, start_etcd_cluster, start_mirror, EtcdCluster};
use wire::{wait_for, DEADLINE};

/// What one recorded watch stream received, in order.
type Log = Arc<Mutex<Vec<WatchResponse>>>;

/// One gRPC watch stream on a mirror, its responses recorded by a task.
struct Stream {
    label: String,
    creates: Vec<WatchCreateRequest>,
    log: Log,
    /// The client's side; dropping it ends the stream.
    requests: Option<mpsc::UnboundedSender<WatchRequest>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    fn responses(&self) -> Vec<WatchResponse> {
        self.log.lock().expect("log").clone()
    }

    /// The watch id of the `n`-th create (the n-th `created` response answers it).
    fn id(&self, n: usize) -> i64 {
        let responses = self.responses();
        let created: Vec<&WatchResponse> = responses.iter().filter(|r| r.created).collect();
        created.get(n).unwrap_or_else(|| panic!("{}: create {n} not answered", self.label)).watch_id
    }

    /// The `n`-th watcher's events, in the order received.
    fn events(&self, n: usize) -> Vec<mvccpb::Event> {
        let id = self.id(n);
        self.responses().iter().filter(|r| r.watch_id == id && !r.created).flat_map(|r| r.events.clone()).collect()
    }

    /// The header revision of the `n`-th watcher's `created` response.
    fn created_revision(&self, n: usize) -> i64 {
        let responses = self.responses();
        let created: Vec<&WatchResponse> = responses.iter().filter(|r| r.created).collect();
        created[n].header.as_ref().map_or(0, |h| h.revision)
    }

    /// Where the `n`-th watcher's client resumes: after its last event, or where it started.
    fn resume_from(&self, n: usize) -> i64 {
        match self.events(n).last() {
            Some(e) => e.kv.as_ref().map_or(0, |kv| kv.mod_revision) + 1,
            None if self.creates[n].start_revision != 0 => self.creates[n].start_revision,
            None => self.created_revision(n) + 1,
        }
    }

    /// Ends the client's side and stops recording.
    fn close(&mut self) {
        self.requests = None;
        self.task.abort();
    }
}

/// One watcher as its client sees it: the pieces (stream, create index) it was made of as it
/// moved or resumed, each from the revision after the last one it saw.
struct Watcher {
    name: &'static str,
    pieces: Vec<(usize, usize)>,
}

/// A change a write was acknowledged for: `(revision, key, value)`, `None` for a delete.
type Acked = (i64, Vec<u8>, Option<Vec<u8>>);

/// Where a write goes.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// Straight to an etcd member.
    Member(usize),
    /// Through a mirror (forwarded upstream).
    Mirror(usize),
}

/// One write of a batch.
enum Op {
    Put(String),
    Delete(String),
    /// A txn that puts `p/two` and `q/t` and deletes a key, in one revision.
    Txn(String),
}

/// The client side: a runtime, channels to every member and mirror, what was acknowledged.
struct Clients {
    rt: tokio::runtime::Runtime,
    members: Vec<Channel>,
    mirrors: Vec<Channel>,
    acked: Vec<Acked>,
    /// Keys written and not deleted yet, oldest first: what the next deletes take.
    live: VecDeque<String>,
    /// Numbers each written value and new key.
    counter: u64,
    streams: Vec<Stream>,
    /// Calls that failed and were made again, with their errors (reported, not fatal).
    retried: Vec<String>,
}

fn lazy(rt: &tokio::runtime::Runtime, port: u16) -> Channel {
    let _guard = rt.enter();
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .timeout(DEADLINE)
        .connect_lazy()
}

fn revision(header: Option<&watchkv_actors::api::pb::etcdserverpb::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

impl Clients {
    fn new(cluster: &EtcdCluster, mirror_ports: &[u16]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let members = cluster.members.iter().map(|m| lazy(&rt, m.client_port)).collect();
        let mirrors = mirror_ports.iter().map(|&p| lazy(&rt, p)).collect();
        Self {
            rt,
            members,
            mirrors,
            acked: Vec::new(),
            live: VecDeque::new(),
            counter: 0,
            streams: Vec::new(),
            retried: Vec::new(),
        }
    }

    fn channel(&self, via: Via) -> Channel {
        match via {
            Via::Member(i) => self.members[i].clone(),
            Via::Mirror(i) => self.mirrors[i].clone(),
        }
    }

    /// Makes `call` until it succeeds, for up to the deadline, as long as it fails with one of
    /// etcd's own errors (`etcdserver: …`: a member refuses while the cluster elects a leader,
    /// and a mirror passes upstream's answer on); any other failure fails the test. A write
    /// made again after an error may have been carried out twice; only acknowledged ones are
    /// checked, against the history upstream kept.
    fn retrying<T>(&mut self, what: &str, mut call: impl AsyncFnMut() -> Result<T, tonic::Status>) -> T {
        let start = Instant::now();
        loop {
            match self.rt.block_on(call()) {
                Ok(v) => return v,
                Err(status) => {
                    assert!(status.message().starts_with("etcdserver: "), "{what}: {status:?}");
                    assert!(start.elapsed() < DEADLINE * 2, "{what}: still failing: {status:?}");
                    self.retried.push(format!("{what}: {:?}: {}", status.code(), status.message()));
                    // A pause before asking again, not a synchronisation.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// `key`'s value and mod revision on `mirror`, read locally (`serializable`) or after the
    /// mirror learned upstream's revision (linearizable).
    fn read(&mut self, mirror: usize, key: &str, serializable: bool) -> Option<(Vec<u8>, i64)> {
        let channel = self.mirrors[mirror].clone();
        let request = RangeRequest { key: key.into(), serializable, ..RangeRequest::default() };
        let what =
            format!("range {key} on mirror {mirror} (serializable {serializable}, after write {})", self.counter);
        let resp = self.retrying(&what, async || KvClient::new(channel.clone()).range(request.clone()).await);
        resp.into_inner().kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision))
    }

    fn next_value(&mut self, tag: &str) -> String {
        self.counter += 1;
        format!("{tag}-{}", self.counter)
    }

    /// Makes one write through `via` and checks that reads on the mirrors see it at once:
    /// read-your-writes (serializable) on the mirror that forwarded it, a linearizable read on
    /// each of `readers` for a write made on etcd directly.
    fn write(&mut self, via: Via, op: &Op, tag: &str, readers: &[usize]) -> i64 {
        let channel = self.channel(via);
        let what = format!("{tag} via {via:?}");
        let value = self.next_value(tag);
        let (rev, changes): (i64, Vec<(String, Option<String>)>) = match op {
            Op::Put(key) => {
                let req = PutRequest { key: key.clone().into(), value: value.clone().into(), ..PutRequest::default() };
                let resp = self.retrying(&what, async || KvClient::new(channel.clone()).put(req.clone()).await);
                (revision(resp.get_ref().header.as_ref()), vec![(key.clone(), Some(value))])
            }
            Op::Delete(key) => {
                let req = DeleteRangeRequest { key: key.clone().into(), ..DeleteRangeRequest::default() };
                let resp =
                    self.retrying(&what, async || KvClient::new(channel.clone()).delete_range(req.clone()).await);
                let resp = resp.into_inner();
                // A delete made again after an error may find the key gone already.
                let changes = if resp.deleted == 1 { vec![(key.clone(), None)] } else { Vec::new() };
                (revision(resp.header.as_ref()), changes)
            }
            Op::Txn(delete) => {
                let put = |key: &str| RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: key.into(),
                        value: value.clone().into(),
                        ..PutRequest::default()
                    })),
                };
                let req = TxnRequest {
                    compare: vec![Compare {
                        key: "p/one".into(),
                        result: compare::CompareResult::Greater as i32,
                        target: compare::CompareTarget::Version as i32,
                        target_union: Some(compare::TargetUnion::Version(0)),
                        ..Compare::default()
                    }],
                    success: vec![
                        put("p/two"),
                        put("q/t"),
                        RequestOp {
                            request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                                key: delete.clone().into(),
                                ..DeleteRangeRequest::default()
                            })),
                        },
                    ],
                    failure: vec![],
                };
                let resp = self.retrying(&what, async || KvClient::new(channel.clone()).txn(req.clone()).await);
                let resp = resp.into_inner();
                assert!(resp.succeeded, "{what}: p/one exists");
                let deleted = match resp.responses.get(2).and_then(|r| r.response.as_ref()) {
                    Some(watchkv_actors::api::pb::etcdserverpb::response_op::Response::ResponseDeleteRange(d)) => {
                        d.deleted
                    }
                    other => panic!("{what}: the txn's third response is not a delete: {other:?}"),
                };
                let mut changes = vec![("p/two".to_owned(), Some(value.clone())), ("q/t".to_owned(), Some(value))];
                if deleted == 1 {
                    changes.push((delete.clone(), None));
                }
                (revision(resp.header.as_ref()), changes)
            }
        };
        assert!(rev > 0, "{what}: no header revision");
        for (key, value) in &changes {
            self.acked.push((rev, key.clone().into_bytes(), value.clone().map(String::into_bytes)));
        }
        // The reads that must see the write at once.
        let (mirrors, serializable) = match via {
            Via::Mirror(m) => (vec![m], true),
            Via::Member(_) => (readers.to_vec(), false),
        };
        for mirror in mirrors {
            for (key, value) in &changes {
                let seen = self.read(mirror, key, serializable);
                let want = value.as_ref().map(|v| (v.clone().into_bytes(), rev));
                assert_eq!(
                    seen,
                    want,
                    "{what}: {} on mirror {mirror} right after the write at {rev}",
                    if serializable { "read-your-writes" } else { "a linearizable read" }
                );
            }
        }
        rev
    }

    /// `n` writes of every kind, round-robin over `vias`, each write made on etcd directly read
    /// back linearizably on every mirror among `vias`; returns the last revision.
    fn batch(&mut self, tag: &str, vias: &[Via], n: usize) -> i64 {
        let readers: Vec<usize> =
            vias.iter().filter_map(|v| if let Via::Mirror(m) = v { Some(*m) } else { None }).collect();
        let mut last = 0;
        for j in 0..n {
            let via = vias[j % vias.len()];
            let op = match j % 5 {
                0 => Op::Put("p/one".into()),
                1 | 2 => {
                    let key = if j % 5 == 1 { format!("q/{}", self.counter) } else { format!("p/k{}", self.counter) };
                    self.live.push_back(key.clone());
                    Op::Put(key)
                }
                3 => Op::Delete(self.live.pop_front().expect("a key to delete")),
                _ => Op::Txn(self.live.pop_front().expect("a key to delete")),
            };
            last = self.write(via, &op, tag, &readers);
        }
        last
    }

    /// Opens a watch stream on mirror `mirror` with `creates`, and waits for every `created`.
    fn watch(&mut self, label: &str, mirror: usize, creates: Vec<WatchCreateRequest>) -> usize {
        let log: Log = Arc::default();
        let (tx, rx) = mpsc::unbounded();
        for create in &creates {
            let request =
                WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create.clone())) };
            tx.unbounded_send(request).expect("queue a create");
        }
        let channel = self.mirrors[mirror].clone();
        let recorded = log.clone();
        let task = self.rt.spawn(async move {
            let Ok(response) = WatchClient::new(channel).watch(rx).await else { return };
            let mut responses = response.into_inner();
            // Ends with the stream: the client closed it, or the mirror went away.
            while let Some(Ok(r)) = responses.next().await {
                recorded.lock().expect("log").push(r);
            }
        });
        let stream = Stream { label: label.to_owned(), creates, log, requests: Some(tx), task };
        let want = stream.creates.len();
        wait_for(&format!("{label}: {want} watchers created"), || {
            (stream.responses().iter().filter(|r| r.created).count() == want).then_some(())
        });
        for r in stream.responses().iter().filter(|r| r.created) {
            assert!(!r.canceled, "{label}: a create failed: {r:?}");
        }
        self.streams.push(stream);
        self.streams.len() - 1
    }

    /// Waits until each watcher of `stream` has received the last acknowledged change in its
    /// range at or below `rev`.
    fn wait_stream_at(&self, stream: usize, rev: i64) {
        let s = &self.streams[stream];
        for n in 0..s.creates.len() {
            let create = &s.creates[n];
            let range = watchkv::KeyRange::from_wire(&create.key, &create.range_end);
            let from = if create.start_revision == 0 { s.created_revision(n) + 1 } else { create.start_revision };
            let Some(target) = self
                .acked
                .iter()
                .filter(|(r, key, _)| *r <= rev && *r >= from && range.contains(key))
                .map(|(r, _, _)| *r)
                .max()
            else {
                continue;
            };
            wait_for(&format!("{} watcher {n} at revision {target}", s.label), || {
                s.events(n).iter().any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= target)).then_some(())
            });
        }
    }

    /// The whole history of upstream, from its first revision to `to`, read with a watch on
    /// member `member`.
    fn upstream_history(&self, member: usize, to: i64) -> Vec<mvccpb::Event> {
        let channel = self.members[member].clone();
        let create = WatchCreateRequest { key: vec![0], range_end: vec![0], start_revision: 1, ..Default::default() };
        self.rt.block_on(async move {
            let (tx, rx) = mpsc::unbounded();
            tx.unbounded_send(WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) })
                .expect("queue the create");
            let mut responses = WatchClient::new(channel).watch(rx).await.expect("watch etcd").into_inner();
            let mut events: Vec<mvccpb::Event> = Vec::new();
            while events.last().and_then(|e| e.kv.as_ref()).map_or(0, |kv| kv.mod_revision) < to {
                let r = tokio::time::timeout(DEADLINE, responses.message())
                    .await
                    .expect("etcd's history in time")
                    .expect("etcd's watch")
                    .expect("etcd's watch open");
                assert!(!r.canceled, "etcd's history watch cancelled: {r:?}");
                events.extend(r.events);
            }
            drop(tx);
            events
        })
    }

    /// `(hash, compact revision)` of `HashKV` at `rev` on `channel`.
    fn hash_kv(&self, channel: &Channel, rev: i64) -> (u32, i64) {
        let resp = self
            .rt
            .block_on(MaintenanceClient::new(channel.clone()).hash_kv(HashKvRequest { revision: rev }))
            .expect("HashKV")
            .into_inner();
        (resp.hash, resp.compact_revision)
    }
}

fn create(key: &str, range_end: &str, start: i64, prev_kv: bool) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        range_end: range_end.into(),
        start_revision: start,
        prev_kv,
        ..WatchCreateRequest::default()
    }
}

/// The four kinds of watcher: everything, the prefix `p/` with `prev_kv`, the key `p/one`, and
/// everything with `prev_kv` from `past`.
fn every_kind(past: i64) -> Vec<WatchCreateRequest> {
    vec![
        create("\0", "\0", 0, false),
        create("p/", "p0", 0, true),
        create("p/one", "", 0, false),
        create("\0", "\0", past, true),
    ]
}

fn key_value(kv: &mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.clone(),
        lease: kv.lease,
    }
}

fn event(e: &mvccpb::Event) -> Event {
    let kind = if e.r#type == mvccpb::event::EventType::Delete as i32 { EventKind::Delete } else { EventKind::Put };
    Event::new(kind, key_value(e.kv.as_ref().expect("an event's kv")), e.prev_kv.as_ref().map(key_value))
}

fn watch_create(c: &WatchCreateRequest) -> WatchCreate {
    WatchCreate {
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        start_revision: c.start_revision,
        prev_kv: c.prev_kv,
        ..WatchCreate::default()
    }
}

/// Checks one recorded stream with the watch-guarantee checker.
fn check_stream(history: &History, stream: &Stream) {
    let creates: Vec<WatchCreate> = stream.creates.iter().map(watch_create).collect();
    let mut prev_kv_of: BTreeMap<i64, bool> = BTreeMap::new();
    let mut n = 0;
    let responses: Vec<CheckedResponse> = stream
        .responses()
        .iter()
        .map(|r| {
            if r.created {
                prev_kv_of.insert(r.watch_id, stream.creates[n].prev_kv);
                n += 1;
            }
            CheckedResponse {
                watch_id: r.watch_id,
                revision: revision(r.header.as_ref()),
                created: r.created,
                canceled: r.canceled,
                compact_revision: r.compact_revision,
                cancel_reason: r.cancel_reason.clone(),
                fragment: r.fragment,
                events: r.events.iter().map(|e| Arc::new(event(e))).collect(),
                prev_kv: prev_kv_of.get(&r.watch_id).copied().unwrap_or(false),
            }
        })
        .collect();
    let reports = assert_stream_ok(history, &creates, &responses);
    assert_eq!(reports.len(), creates.len(), "{}: every create answered", stream.label);
}

/// An event as compared: `(revision, kind, key, value, create revision, version, prev value)`.
type Seen = (i64, EventKind, Vec<u8>, Vec<u8>, i64, i64, Option<Vec<u8>>);

fn seen(e: &Event, prev_kv: bool) -> Seen {
    let prev = if prev_kv { e.prev_kv.as_ref().map(|p| p.value.clone()) } else { None };
    (e.kv.mod_revision, e.kind, e.kv.key.clone(), e.kv.value.clone(), e.kv.create_revision, e.kv.version, prev)
}

/// Checks that `watcher`, across its pieces, got exactly upstream's events for its range from
/// its first revision up to `to`, each once, in order, with `prev_kv` (the key's previous
/// state, for every event that is not a create) when it asked.
fn check_watcher(history: &History, streams: &[Stream], watcher: &Watcher, to: i64) {
    let (first_stream, first_n) = watcher.pieces[0];
    let first = &streams[first_stream];
    let create = watch_create(&first.creates[first_n]);
    let from = if create.start_revision == 0 { first.created_revision(first_n) + 1 } else { create.start_revision };
    let range = watchkv::KeyRange::from_wire(&create.key, &create.range_end);
    let want: Vec<Seen> = history
        .events()
        .iter()
        .filter(|e| e.kv.mod_revision >= from && e.kv.mod_revision <= to && range.contains(&e.kv.key))
        .map(|e| {
            let prev = (create.prev_kv && !e.is_create())
                .then(|| history.state_before(&e.kv.key, e.kv.mod_revision).map(|p| p.value.clone()))
                .flatten();
            let mut s = seen(e, false);
            s.6 = prev;
            s
        })
        .collect();
    let mut got: Vec<Seen> = Vec::new();
    for (i, &(s, n)) in watcher.pieces.iter().enumerate() {
        let stream = &streams[s];
        if i > 0 {
            let resumed = stream.creates[n].start_revision;
            assert_eq!(
                resumed,
                got.last().map_or(from, |e| e.0 + 1),
                "{}: piece {i} resumes after the last seen",
                watcher.name
            );
        }
        got.extend(stream.events(n).iter().map(|e| seen(&event(e), create.prev_kv)).filter(|e| e.0 <= to));
    }
    assert!(!want.is_empty(), "{}: a watcher with nothing to check", watcher.name);
    assert_eq!(got, want, "{}: exactly upstream's events from {from} to {to}", watcher.name);
}

#[test]
fn mirrors_of_a_three_member_cluster_lose_nothing_through_member_leader_and_mirror_failures() {
    let started = Instant::now();
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let mut cluster = start_etcd_cluster(&dir.join("etcd"), 3);
    let urls = cluster.client_urls();
    let mirror_ports = [wire::free_port(), wire::free_port()];
    let mut c = Clients::new(&cluster, &mirror_ports);

    // History before the mirrors exist: single-key writes on every member (the bootstrap's
    // rows then carry upstream's own sub revisions, which HashKV hashes).
    let members = [Via::Member(0), Via::Member(1), Via::Member(2)];
    for (i, key) in ["p/one", "q/a", "p/two", "q/t", "other"].into_iter().enumerate() {
        c.counter += 1;
        let value = format!("pre-{i}");
        let req = PutRequest { key: key.into(), value: value.clone().into(), ..PutRequest::default() };
        let channel = c.channel(members[i % 3]);
        let resp = c.retrying("pre-bootstrap put", async || KvClient::new(channel.clone()).put(req.clone()).await);
        c.acked.push((revision(resp.get_ref().header.as_ref()), key.into(), Some(value.into_bytes())));
    }
    c.live.push_back("q/a".into());

    // Two mirrors, bootstrapped at the same revision, their upstream lists in different orders
    // so that their watches start on different members.
    let mirror_dir = |i: usize| dir.join(format!("mirror{i}"));
    let order_a = vec![urls[0].clone(), urls[1].clone(), urls[2].clone()];
    let order_b = vec![urls[1].clone(), urls[2].clone(), urls[0].clone()];
    let mut mirror_a = start_mirror(&mirror_dir(0), mirror_ports[0], &order_a);
    let mut mirror_b = start_mirror(&mirror_dir(1), mirror_ports[1], &order_b);
    let bootstrap = c.rt.block_on(MaintenanceClient::new(c.mirrors[0].clone()).hash_kv(HashKvRequest { revision: 0 }));
    let bootstrap = bootstrap.expect("HashKV on mirror A").into_inner().compact_revision;
    assert!(bootstrap > 1, "mirror A bootstrapped at upstream's revision, its compact revision");

    let all = [Via::Member(0), Via::Mirror(0), Via::Member(1), Via::Mirror(1), Via::Member(2)];
    c.batch("one", &all, 10);
    let past = c.acked[c.acked.len() - 8].0;
    assert!(past > bootstrap + 1, "a past revision the mirrors hold");

    // Watchers of every kind on both mirrors, and one client that will move from A to B.
    let on_a = c.watch("A", 0, every_kind(past));
    let on_b = c.watch("B", 1, every_kind(past));
    let moving = c.watch("moving on A", 0, vec![create("p/", "p0", 0, true)]);
    let last = c.batch("two", &all, 10);
    c.wait_stream_at(on_a, last);
    c.wait_stream_at(on_b, last);

    // SIGKILL the member mirror A's upstream watch is on; writes go on through the others and
    // through both mirrors.
    let (followed, _) = wait_for("mirror A follows a member", || followed_member(&mirror_a, &urls));
    cluster.kill9(followed);
    let alive: Vec<Via> = all.iter().copied().filter(|v| !matches!(v, Via::Member(m) if *m == followed)).collect();
    let last = c.batch("member down", &alive, 10);
    // A lease renewed through mirror A's gateway, one stream per renewal, while a member is
    // down: each renewal lands on a member that is up, never on the dead one's refused connection.
    let granted = wire::post(mirror_a.port, "/v3/lease/grant", &serde_json::json!({"TTL": "600"})).json();
    let lease = wire::int(&granted, "ID");
    for renewal in 0..20 {
        let alive = wire::post(mirror_a.port, "/v3/lease/keepalive", &serde_json::json!({"ID": lease.to_string()}));
        assert_eq!(alive.status, 200, "renewal {renewal}: {}", String::from_utf8_lossy(&alive.body));
        let answer = alive.json_lines().pop().unwrap_or_default();
        assert!(wire::int(&answer["result"], "TTL") > 0, "renewal {renewal} with member m{followed} down: {answer}");
    }
    // The same over gRPC, a keep-alive stream each time, as a client reconnecting opens them.
    for renewal in 0..20 {
        let mut leases = LeaseClient::new(c.mirrors[0].clone());
        let ttl = c.rt.block_on(async {
            let requests =
                futures::stream::iter([LeaseKeepAliveRequest { id: lease }]).chain(futures::stream::pending());
            let mut answers = leases.lease_keep_alive(requests).await?.into_inner();
            let answer = tokio::time::timeout(DEADLINE, answers.message())
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("no keep-alive answer"))?;
            Ok::<_, tonic::Status>(answer?.map_or(0, |a| a.ttl))
        });
        let ttl = ttl.unwrap_or_else(|e| panic!("keep-alive stream {renewal} with member m{followed} down: {e:?}"));
        assert!(ttl > 0, "keep-alive stream {renewal}: TTL {ttl}");
    }
    let (moved_to, _) = wait_for("mirror A follows another member", || {
        followed_member(&mirror_a, &urls).filter(|&(m, _)| m != followed)
    });
    c.wait_stream_at(on_a, last);
    c.wait_stream_at(on_b, last);

    // The member comes back from its own data directory; then the leader dies.
    cluster.restart(followed);
    let leader = cluster.leader();
    cluster.kill9(leader);
    let _new_leader = cluster.leader();
    let alive: Vec<Via> = all.iter().copied().filter(|v| !matches!(v, Via::Member(m) if *m == leader)).collect();
    let last = c.batch("leader down", &alive, 10);
    c.wait_stream_at(on_a, last);
    c.wait_stream_at(on_b, last);
    cluster.restart(leader);

    // SIGKILL mirror B; upstream goes on; B restarts over its own directory and its watchers'
    // clients resume from what they last saw.
    mirror_b.kill9();
    let without_b = [Via::Member(0), Via::Mirror(0), Via::Member(1), Via::Member(2)];
    c.batch("mirror down", &without_b, 10);
    drop(mirror_b);
    let mut mirror_b = start_mirror(&mirror_dir(1), mirror_ports[1], &order_b);
    let resumed: Vec<WatchCreateRequest> = (0..4)
        .map(|n| {
            let mut again = c.streams[on_b].creates[n].clone();
            again.start_revision = c.streams[on_b].resume_from(n);
            again
        })
        .collect();
    let on_b_again = c.watch("B after its restart", 1, resumed);
    c.batch("mirror back", &all, 10);

    // The moving client leaves A with the last revision it saw and watches B from the next.
    c.streams[moving].close();
    let mut again = c.streams[moving].creates[0].clone();
    again.start_revision = c.streams[moving].resume_from(0);
    c.batch("between mirrors", &all, 5);
    let moved = c.watch("moving on B", 1, vec![again]);

    // A last write every watcher sees; then the checks against upstream's history.
    let fence = c.write(Via::Member(2), &Op::Put("p/one".into()), "fence", &[0, 1]);
    for s in [on_a, on_b_again, moved] {
        c.wait_stream_at(s, fence);
    }
    let events = c.upstream_history(0, fence);
    let history = History::from_events(events.iter().map(event)).expect("upstream's history is a history");
    history.check_contiguous(2, fence).expect("every upstream revision has events");
    for stream in &c.streams {
        check_stream(&history, stream);
    }
    let names = ["everything", "prefix p/ with prev_kv", "key p/one", "everything from a past revision with prev_kv"];
    let mut watchers: Vec<Watcher> = Vec::new();
    for (n, name) in names.into_iter().enumerate() {
        watchers.push(Watcher { name, pieces: vec![(on_a, n)] });
        watchers.push(Watcher { name, pieces: vec![(on_b, n), (on_b_again, n)] });
    }
    watchers.push(Watcher { name: "the client that moved from A to B", pieces: vec![(moving, 0), (moved, 0)] });
    for watcher in &watchers {
        check_watcher(&history, &c.streams, watcher, fence);
    }
    for (rev, key, value) in &c.acked {
        let found = history.events_at(*rev).iter().find(|e| &e.kv.key == key).unwrap_or_else(|| {
            panic!("acknowledged write of {} at {rev} is not in upstream's history", String::from_utf8_lossy(key))
        });
        match value {
            Some(v) => assert_eq!((found.kind, &found.kv.value), (EventKind::Put, v), "the put at {rev}"),
            None => assert_eq!(found.kind, EventKind::Delete, "the delete at {rev}"),
        }
    }

    // HashKV at the fence: upstream compacted at the mirrors' bootstrap revision (below which
    // a mirror holds only what it imported) hashes what the mirrors hash.
    let compacted = c.rt.block_on(
        KvClient::new(c.members[0].clone()).compact(CompactionRequest { revision: bootstrap, physical: true }),
    );
    compacted.expect("compact upstream at the bootstrap revision");
    let (want, _) = c.hash_kv(&c.mirrors[0], fence);
    for (i, channel) in c.mirrors.iter().enumerate() {
        assert_eq!(c.hash_kv(channel, fence), (want, bootstrap), "HashKV on mirror {i}");
    }
    for (i, channel) in c.members.iter().enumerate() {
        let hash = wait_for(&format!("member m{i} compacted"), || {
            Some(c.hash_kv(channel, fence)).filter(|(_, compact)| *compact == bootstrap)
        });
        assert_eq!(hash, (want, bootstrap), "HashKV on member m{i}");
    }

    for mirror in [&mut mirror_a, &mut mirror_b] {
        assert!(mirror.exited().is_none(), "the mirror is still running");
    }
    eprintln!(
        "mirror cluster: A's watch on m{followed} (killed) moved to m{moved_to}; leader m{leader} killed; {fence} \
         revisions, {} acknowledged changes, {} calls made again in {:?}: {:?}",
        c.acked.len(),
        c.retried.len(),
        started.elapsed(),
        c.retried
    );
}
