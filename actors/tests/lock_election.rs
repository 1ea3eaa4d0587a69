//! The Lock and Election services through the `etcd-client` crate (`lock`, `unlock`,
//! `campaign`, `proclaim`, `leader`, `observe`, `resign`) and through the gateway's routes,
//! against the `watchkv` binary and, step for step, against real etcd 3.4: the same
//! transcript of keys, values, revisions and errors from both. A second locker or candidate
//! waits until the first lets go (unlock, resign, or its lease revoked); a waiter whose client
//! goes away leaves no key behind.

mod wire;

use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, Error, GetOptions, LeaseGrantOptions, LockOptions, ObserveStream, ProclaimOptions,
    ResignOptions, SortOrder, SortTarget,
};
use serde_json::{json, Value};
use wire::{b64, drop_identity, int, post, start_etcd, start_watchkv, unb64, DEADLINE};

async fn connect(port: u16) -> Client {
    let opts = ConnectOptions::new().with_connect_timeout(DEADLINE).with_timeout(DEADLINE);
    Client::connect([format!("127.0.0.1:{port}")], Some(opts)).await.expect("connect etcd-client")
}

/// `code: message` of a failed call.
fn status(e: &Error) -> String {
    match e {
        Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// Waits until `prefix` holds `n` keys.
async fn wait_for_keys(c: &mut Client, prefix: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let resp = c.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.expect("count");
        if resp.count() == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{prefix} never held {n} keys (holds {})", resp.count());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The result of a spawned call, within the deadline.
async fn finish<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(DEADLINE, task).await.expect("the call ends within the deadline").expect("task")
}

/// The next proclamation on `observe`: `value @ header revision`.
async fn next_leader(observe: &mut ObserveStream) -> String {
    let resp = tokio::time::timeout(DEADLINE, observe.message())
        .await
        .expect("an observe response within the deadline")
        .expect("observe stream error")
        .expect("observe stream ended");
    let kv = resp.kv().expect("kv");
    format!("observe {} @ {} (key {})", kv.value_str().expect("utf-8"), resp.header().expect("header").revision(), {
        kv.key_str().expect("utf-8")
    })
}

fn lock_opts(lease: i64) -> Option<LockOptions> {
    Some(LockOptions::new().with_lease(lease))
}

/// Lock and unlock over gRPC; returns the transcript. With `early` (watchkv), also checks that
/// a waiter whose lease is revoked fails before the holder lets go (etcd 3.5 notices only
/// afterwards, etcd 3.4 not at all).
async fn lock_steps(port: u16, early: bool) -> Vec<String> {
    let mut t = Vec::new();
    let mut c = connect(port).await;
    let [a, b, d, e, f, g, h, i] = [0x1a01_i64, 0x1a02, 0x1a04, 0x1a05, 0x1a06, 0x1a07, 0x1a08, 0x1a09];
    for id in [a, b, d, e, f, g, h, i] {
        c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(id))).await.expect("grant");
    }

    // A holds; B waits until A unlocks.
    let locked_a = c.lock("L", lock_opts(a)).await.expect("lock A");
    assert_eq!(locked_a.key(), b"L/1a01");
    t.push(format!(
        "lock A {} @ {}",
        String::from_utf8_lossy(locked_a.key()),
        locked_a.header().expect("h").revision()
    ));
    let mut cb = c.clone();
    let b_task = tokio::spawn(async move { cb.lock("L", lock_opts(b)).await });
    wait_for_keys(&mut c, "L/", 2).await;
    assert!(!b_task.is_finished(), "B must wait while A holds the lock");
    let unlocked = c.unlock(locked_a.key()).await.expect("unlock A");
    t.push(format!("unlock A @ {}", unlocked.header().expect("h").revision()));
    let locked_b = finish(b_task).await.expect("lock B");
    assert_eq!(locked_b.key(), b"L/1a02");
    t.push(format!(
        "lock B {} @ {}",
        String::from_utf8_lossy(locked_b.key()),
        locked_b.header().expect("h").revision()
    ));

    // The same lease locking again is the same acquisition.
    let again = c.lock("L", lock_opts(b)).await.expect("lock B again");
    t.push(format!(
        "lock B again {} @ {}",
        String::from_utf8_lossy(again.key()),
        again.header().expect("h").revision()
    ));

    // D waits; B's lease revoked releases the lock to D.
    let mut cd = c.clone();
    let d_task = tokio::spawn(async move { cd.lock("L", lock_opts(d)).await });
    wait_for_keys(&mut c, "L/", 2).await;
    assert!(!d_task.is_finished(), "D must wait while B holds the lock");
    let revoked = c.lease_revoke(b).await.expect("revoke B");
    t.push(format!("revoke B @ {}", revoked.header().expect("h").revision()));
    let locked_d = finish(d_task).await.expect("lock D");
    t.push(format!(
        "lock D {} @ {}",
        String::from_utf8_lossy(locked_d.key()),
        locked_d.header().expect("h").revision()
    ));

    // E waits behind D; E's lease revoked: its lock fails.
    let mut ce = c.clone();
    let e_task = tokio::spawn(async move { ce.lock("L", lock_opts(e)).await });
    wait_for_keys(&mut c, "L/", 2).await;
    c.lease_revoke(e).await.expect("revoke E");
    if early {
        let err = finish(e_task).await.expect_err("E's lease is gone");
        assert_eq!(status(&err), "Unknown: mutex: session is expired");
        c.unlock(locked_d.key()).await.expect("unlock D");
    } else {
        // etcd 3.5 answers `mutex: session is expired` once D lets go; etcd 3.4 answers as if
        // E held the lock (its mutex does not look for its key again).
        c.unlock(locked_d.key()).await.expect("unlock D");
        let _ = finish(e_task).await;
    }

    // A lease that does not exist.
    match c.lock("L", lock_opts(0x7777)).await {
        Ok(r) => t.push(format!(
            "lock with a missing lease: locked {:?} @ {}",
            String::from_utf8_lossy(r.key()),
            r.header().expect("h").revision()
        )),
        Err(err) => t.push(format!("lock with a missing lease: {}", status(&err))),
    }

    // F waits behind A and goes away: its key goes too.
    let locked_a = c.lock("L", lock_opts(a)).await.expect("lock A");
    let mut cf = c.clone();
    let f_task = tokio::spawn(async move { cf.lock("L", lock_opts(f)).await });
    wait_for_keys(&mut c, "L/", 2).await;
    f_task.abort();
    wait_for_keys(&mut c, "L/", 1).await;
    let left = c.get("L/", Some(GetOptions::new().with_prefix())).await.expect("get");
    t.push(format!("after F left: {:?}", left.kvs().iter().map(|kv| kv.key_str().unwrap_or("?")).collect::<Vec<_>>()));

    // G, H and I queue behind A, each waiting for the key before it; H's lease revoked and G
    // gone, I waits for A's key and gets the lock when A unlocks.
    let mut waiting = Vec::new();
    for (n, id) in [g, h, i].into_iter().enumerate() {
        let mut cw = c.clone();
        waiting.push(tokio::spawn(async move { cw.lock("L", lock_opts(id)).await }));
        wait_for_keys(&mut c, "L/", n as i64 + 2).await;
    }
    let i_task = waiting.pop().expect("I");
    let h_task = waiting.pop().expect("H");
    let g_task = waiting.pop().expect("G");
    c.lease_revoke(h).await.expect("revoke H");
    wait_for_keys(&mut c, "L/", 3).await;
    g_task.abort();
    wait_for_keys(&mut c, "L/", 2).await;
    assert!(!i_task.is_finished(), "I must wait while A holds the lock");
    let unlocked = c.unlock(locked_a.key()).await.expect("unlock A");
    t.push(format!("unlock A @ {}", unlocked.header().expect("h").revision()));
    let locked_i = finish(i_task).await.expect("lock I");
    t.push(format!(
        "lock I {} @ {}",
        String::from_utf8_lossy(locked_i.key()),
        locked_i.header().expect("h").revision()
    ));
    c.unlock(locked_i.key()).await.expect("unlock I");
    // H's wait ends when its key goes, with an error or (etcd 3.4) as if it held the lock.
    let _ = finish(h_task).await;
    t
}

/// Campaign, proclaim, leader, observe and resign over gRPC; returns the transcript.
async fn election_steps(port: u16) -> Vec<String> {
    let mut t = Vec::new();
    let mut c = connect(port).await;
    let [p, q] = [0x2e01_i64, 0x2e02];
    for id in [p, q] {
        c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(id))).await.expect("grant");
    }
    let err = c.leader("E").await.expect_err("no candidate yet");
    t.push(format!("leader of an empty election: {}", status(&err)));
    // etcd sends an Observe stream's headers with its first response, and the crate's
    // `observe` waits for them: it returns once there is a leader.
    let mut co = c.clone();
    let observe_task = tokio::spawn(async move { co.observe("E").await });

    let won = c.campaign("E", "p1", p).await.expect("campaign P");
    let leader_p = won.leader().expect("leader key").clone();
    assert_eq!((leader_p.key(), leader_p.lease()), (&b"E/2e01"[..], p));
    t.push(format!(
        "campaign P: name {} key {} rev {} lease {:x} @ {}",
        leader_p.name_str().unwrap_or("?"),
        leader_p.key_str().unwrap_or("?"),
        leader_p.rev(),
        leader_p.lease(),
        won.header().expect("h").revision()
    ));
    let mut observe = finish(observe_task).await.expect("observe");
    t.push(next_leader(&mut observe).await);

    let proclaimed =
        c.proclaim("p2", Some(ProclaimOptions::new().with_leader(leader_p.clone()))).await.expect("proclaim p2");
    t.push(format!("proclaim p2 @ {}", proclaimed.header().expect("h").revision()));
    t.push(next_leader(&mut observe).await);
    let leader = c.leader("E").await.expect("leader");
    let kv = leader.kv().expect("kv");
    t.push(format!("leader {} = {} @ {}", kv.key_str().unwrap_or("?"), kv.value_str().unwrap_or("?"), {
        leader.header().expect("h").revision()
    }));

    // Q waits until P resigns.
    let mut cq = c.clone();
    let q_task = tokio::spawn(async move { cq.campaign("E", "q1", q).await });
    wait_for_keys(&mut c, "E/", 2).await;
    assert!(!q_task.is_finished(), "Q must wait while P leads");
    let resigned = c.resign(Some(ResignOptions::new().with_leader(leader_p.clone()))).await.expect("resign P");
    t.push(format!("resign P @ {}", resigned.header().expect("h").revision()));
    let won_q = finish(q_task).await.expect("campaign Q");
    let leader_q = won_q.leader().expect("leader key").clone();
    t.push(format!(
        "campaign Q: key {} rev {} @ {}",
        leader_q.key_str().unwrap_or("?"),
        leader_q.rev(),
        won_q.header().expect("h").revision()
    ));
    t.push(next_leader(&mut observe).await);

    // P's leadership is gone.
    let err = c.proclaim("p3", Some(ProclaimOptions::new().with_leader(leader_p))).await.expect_err("not leader");
    t.push(format!("proclaim as P: {}", status(&err)));
    let err = c.campaign("E", "x", 0x7777).await.expect_err("no such lease");
    t.push(format!("campaign with a missing lease: {}", status(&err)));
    let err = c.proclaim("p4", None).await.expect_err("no leader key");
    t.push(format!("proclaim without a leader: {}", status(&err)));

    // Q's lease revoked: no leader left.
    c.lease_revoke(q).await.expect("revoke Q");
    let err = c.leader("E").await.expect_err("no leader");
    t.push(format!("leader after Q's lease: {}", status(&err)));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_over_grpc_match_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (wk_data, etcd_data) = (dir.path().join("watchkv"), dir.path().join("etcd"));
    let port = wire::free_port();
    let _watchkv = tokio::task::spawn_blocking(move || start_watchkv(&wk_data, port, &[])).await.expect("start");
    let _etcd = tokio::task::spawn_blocking(move || start_etcd(&etcd_data)).await.expect("start etcd");
    let etcd_port = _etcd.port;

    let ours = lock_steps(port, true).await;
    let theirs = lock_steps(etcd_port, false).await;
    assert_eq!(ours, theirs, "lock transcript: watchkv, then etcd");
    let ours = election_steps(port).await;
    let theirs = election_steps(etcd_port).await;
    assert_eq!(ours, theirs, "election transcript: watchkv, then etcd");
}

/// watchkv only: a waiting candidate whose lease is revoked fails at once with `election: not
/// leader` (etcd would wait for the leader to go and then answer as if elected), and a waiting
/// candidate whose client goes away resigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_candidate_fails_when_its_lease_goes_and_resigns_when_its_client_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let port = wire::free_port();
    let _server = tokio::task::spawn_blocking(move || start_watchkv(&data, port, &[])).await.expect("start");
    let mut c = connect(port).await;
    let [p, q, r] = [0x3e01_i64, 0x3e02, 0x3e03];
    for id in [p, q, r] {
        c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(id))).await.expect("grant");
    }
    c.campaign("C", "p", p).await.expect("campaign P");
    let mut cq = c.clone();
    let q_task = tokio::spawn(async move { cq.campaign("C", "q", q).await });
    wait_for_keys(&mut c, "C/", 2).await;
    c.lease_revoke(q).await.expect("revoke Q");
    let err = finish(q_task).await.expect_err("Q's lease is gone");
    assert_eq!(status(&err), "Unknown: election: not leader");

    let mut cr = c.clone();
    let r_task = tokio::spawn(async move { cr.campaign("C", "r", r).await });
    wait_for_keys(&mut c, "C/", 2).await;
    r_task.abort();
    wait_for_keys(&mut c, "C/", 1).await;
    let leader = c.leader("C").await.expect("leader");
    assert_eq!(leader.kv().expect("kv").value(), b"p");

    // Lease 0: the server grants a 60 s lease for the key.
    let won = c.campaign("Z", "z", 0).await.expect("campaign with lease 0");
    let lease = won.leader().expect("leader").lease();
    let ttl = c.lease_time_to_live(lease, None).await.expect("ttl");
    assert!(ttl.granted_ttl() == 60 && ttl.ttl() > 0, "{ttl:?}");
}

/// watchkv's `watchkv_events_sent_total` from `/metrics`.
fn events_sent(port: u16) -> u64 {
    let (code, text) = wire::http_get(port, "/metrics");
    assert_eq!(code, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix("watchkv_events_sent_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no watchkv_events_sent_total in:\n{text}"))
}

/// watchkv only: waiters queued on one lock acquire one at a time, in the order they queued, and
/// each watches only the key it waits for (and its own): queueing and handing the lock through
/// N waiters delivers O(N) events, where a watch on the whole prefix would deliver every other
/// waiter's put and delete to each, about N² of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_waiters_acquire_in_order_and_watch_only_the_key_before_them() {
    const WAITERS: usize = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let port = wire::free_port();
    let _server = tokio::task::spawn_blocking(move || start_watchkv(&data, port, &[])).await.expect("start");
    let mut c = connect(port).await;
    let mut leases = Vec::new();
    for _ in 0..=WAITERS {
        leases.push(c.lease_grant(60, None).await.expect("grant").id());
    }
    let holder = c.lock("Q", lock_opts(leases[0])).await.expect("lock the holder");
    let sent_before = events_sent(port);

    let acquired = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for &lease in &leases[1..] {
        let (mut cw, acquired) = (c.clone(), acquired.clone());
        tasks.push(tokio::spawn(async move {
            let key = cw.lock("Q", lock_opts(lease)).await.expect("lock a waiter").key().to_vec();
            // The only holder: the lock's first key is this waiter's.
            let first = cw
                .get("Q/", Some(GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend)))
                .await
                .expect("get");
            assert_eq!(first.kvs().first().map(|kv| kv.key().to_vec()), Some(key.clone()), "acquired while not first");
            acquired.lock().expect("lock").push(key.clone());
            cw.unlock(key).await.expect("unlock a waiter");
        }));
    }
    wait_for_keys(&mut c, "Q/", WAITERS as i64 + 1).await;
    let queue = c
        .get(
            "Q/",
            Some(GetOptions::new().with_prefix().with_keys_only().with_sort(SortTarget::Create, SortOrder::Ascend)),
        )
        .await
        .expect("get");
    let queue: Vec<Vec<u8>> = queue.kvs().iter().skip(1).map(|kv| kv.key().to_vec()).collect();
    c.unlock(holder.key()).await.expect("unlock the holder");
    for task in tasks {
        finish(task).await;
    }
    assert_eq!(*acquired.lock().expect("lock"), queue, "the waiters acquired in the order they queued");
    // Each waiter is sent the delete of the key before it, at times of a key that went while it
    // read (3 per waiter leaves room for those); a prefix watch would send about N² = 1600.
    let sent = events_sent(port) - sent_before;
    assert!(sent <= 3 * WAITERS as u64, "{sent} events sent to {WAITERS} waiters");
}

// ----- the gateway -----

fn grant(port: u16, id: i64) {
    let r = post(port, "/v3/lease/grant", &json!({"TTL": "60", "ID": id.to_string()}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// `status body` with the identity fields dropped.
fn answer(r: &wire::Reply) -> String {
    let mut v = r.json();
    drop_identity(&mut v);
    // etcd 3.4's gateway repeats an error's message as "error" (docs/etcd-semantics.md).
    if let Some(m) = v.as_object_mut() {
        m.remove("error");
    }
    format!("{} {v}", r.status)
}

fn count(port: u16, prefix: &str) -> i64 {
    let end = {
        let mut e = prefix.as_bytes().to_vec();
        *e.last_mut().expect("non-empty") += 1;
        e
    };
    int(
        &post(port, "/v3/kv/range", &json!({"key": b64(prefix), "range_end": b64(end), "count_only": true})).json(),
        "count",
    )
}

fn wait_for_count(port: u16, prefix: &str, n: i64) {
    let start = std::time::Instant::now();
    while count(port, prefix) != n {
        assert!(start.elapsed() < DEADLINE, "{prefix} never held {n} keys");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn next_line(lines: &std::sync::mpsc::Receiver<Value>) -> String {
    let mut v = lines.recv_timeout(DEADLINE).expect("an observe line within the deadline");
    drop_identity(&mut v);
    v.to_string()
}

/// The gateway's lock and election routes; returns the transcript.
fn gateway_steps(port: u16) -> Vec<String> {
    let mut t = Vec::new();
    let [a, b] = [0x4a01_i64, 0x4a02];
    grant(port, a);
    grant(port, b);
    let r = post(port, "/v3/lock/lock", &json!({"name": b64("GL"), "lease": a.to_string()}));
    let key_a = wire::bytes_field(&r.json(), "key");
    assert_eq!(key_a, b"GL/4a01");
    t.push(format!("lock A: {}", answer(&r)));
    let waiter = std::thread::spawn(move || post(port, "/v3/lock/lock", &json!({"name": b64("GL"), "lease": b})));
    wait_for_count(port, "GL/", 2);
    assert!(!waiter.is_finished(), "B must wait while A holds the lock");
    t.push(format!("unlock A: {}", answer(&post(port, "/v3/lock/unlock", &json!({"key": b64(&key_a)})))));
    t.push(format!("lock B: {}", answer(&waiter.join().expect("lock B"))));
    t.push(format!(
        "lock, missing lease: {}",
        answer(&post(port, "/v3/lock/lock", &json!({"name": b64("GL"), "lease": "30583"})))
    ));

    let (observer, lines) =
        wire::post_stream(port, "/v3/election/observe", &json!({"name": b64("GE")})).expect("observe");
    let r =
        post(port, "/v3/election/campaign", &json!({"name": b64("GE"), "lease": a.to_string(), "value": b64("v1")}));
    t.push(format!("campaign: {}", answer(&r)));
    let leader = r.json()["leader"].clone();
    assert_eq!(unb64(leader["key"].as_str().expect("key")), b"GE/4a01");
    t.push(next_line(&lines));
    let r = post(port, "/v3/election/proclaim", &json!({"leader": leader, "value": b64("v2")}));
    t.push(format!("proclaim: {}", answer(&r)));
    t.push(next_line(&lines));
    t.push(format!("leader: {}", answer(&post(port, "/v3/election/leader", &json!({"name": b64("GE")})))));
    t.push(format!("resign: {}", answer(&post(port, "/v3/election/resign", &json!({"leader": leader})))));
    t.push(format!("leader: {}", answer(&post(port, "/v3/election/leader", &json!({"name": b64("GE")})))));
    t.push(format!(
        "proclaim: {}",
        answer(&post(port, "/v3/election/proclaim", &json!({"leader": leader, "value": b64("v3")})))
    ));
    let _ = observer.shutdown(std::net::Shutdown::Both);
    t
}

#[test]
fn lock_and_election_over_the_gateway_match_etcd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = wire::free_port();
    let _watchkv = start_watchkv(&dir.path().join("watchkv"), port, &[]);
    let etcd = start_etcd(&dir.path().join("etcd"));
    let ours = gateway_steps(port);
    let theirs = gateway_steps(etcd.port);
    assert_eq!(ours, theirs, "gateway transcript: watchkv, then etcd");
}
