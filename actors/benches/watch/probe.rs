//! Writers that measure put latency from a thread of their own (standing for an HTTP worker),
//! and the single timed fan-out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::ArbiterHandle;
use futures::channel::oneshot;
use watchkv::PutRequest;
use watchkv_actors::Handle;

use crate::harness::{Bench, VALUE};
use crate::sinks::Progress;

/// Most time one repeated one-shot measurement may take (it stops after at least 20 samples).
pub const ONE_SHOT_BUDGET: Duration = Duration::from_secs(4);

/// What a probe writer does.
pub struct Probe {
    /// Key prefix; put `i` goes to `{prefix}/{i % 100}`, or to `prefix` itself when `one_key`.
    pub prefix: String,
    pub one_key: bool,
    /// Puts to make (ignored while `stop` is given: then until it is raised).
    pub n: usize,
    /// Sleep between puts.
    pub pace: Option<Duration>,
    pub stop: Option<Arc<AtomicBool>>,
    /// After each put, wait until the sinks have counted this many more events.
    pub fanout: Option<(Arc<Progress>, u64)>,
    /// Stop early once this much time has passed (after at least 20 puts).
    pub budget: Option<Duration>,
}

impl Probe {
    /// `n` sequential puts over the 100 keys under `prefix`, back to back, with no time limit.
    pub fn spread(prefix: impl Into<String>, n: usize) -> Self {
        Self { prefix: prefix.into(), one_key: false, n, pace: None, stop: None, fanout: None, budget: None }
    }

    /// `n` sequential puts to the one key `key`, back to back, for at most [`ONE_SHOT_BUDGET`].
    pub fn one_key(key: impl Into<String>, n: usize) -> Self {
        Self { one_key: true, budget: Some(ONE_SHOT_BUDGET), ..Self::spread(key, n) }
    }
}

impl Bench {
    /// Runs `p` on `arbiter` (see [`spawn_probe`]) and waits for the latency of each put.
    pub fn probe(&self, arbiter: &ArbiterHandle, p: Probe) -> Vec<Duration> {
        self.block_on(spawn_probe(&self.handle, arbiter, p)).expect("probe")
    }
}

/// Runs a sequential writer on `arbiter` (its own thread, standing for an HTTP worker) and
/// returns the latency of each put.
pub fn spawn_probe(handle: &Handle, arbiter: &ArbiterHandle, p: Probe) -> oneshot::Receiver<Vec<Duration>> {
    let (tx, rx) = oneshot::channel();
    let handle = handle.clone();
    arbiter.spawn(async move {
        let mut lat = Vec::with_capacity(p.n);
        let mut i = 0usize;
        let started = Instant::now();
        loop {
            match &p.stop {
                Some(stop) if stop.load(Ordering::Acquire) => break,
                None if i >= p.n => break,
                _ => {}
            }
            if p.budget.is_some_and(|b| i >= 20 && started.elapsed() > b) {
                break;
            }
            let key = if p.one_key { p.prefix.clone() } else { format!("{}/{:02}", p.prefix, i % 100) };
            let target = p.fanout.as_ref().map(|(progress, k)| progress.events() + k);
            let t = Instant::now();
            handle.put(PutRequest::new(key, VALUE)).await.expect("probe put");
            lat.push(t.elapsed());
            if let (Some((progress, _)), Some(target)) = (&p.fanout, target) {
                progress.wait_events(target).await;
            }
            i += 1;
            if let Some(pace) = p.pace {
                actix_rt::time::sleep(pace).await;
            }
        }
        let _ = tx.send(lat);
    });
    rx
}

/// `tasks` concurrent sequential writers on `arbiter`; returns the time until all are done.
pub fn spawn_pipelined(
    handle: &Handle,
    arbiter: &ArbiterHandle,
    prefix: &str,
    tasks: usize,
    per_task: usize,
) -> oneshot::Receiver<Duration> {
    let (tx, rx) = oneshot::channel();
    let handle = handle.clone();
    let prefix = prefix.to_owned();
    arbiter.spawn(async move {
        let t = Instant::now();
        let writers = (0..tasks).map(|k| {
            let (handle, prefix) = (handle.clone(), prefix.clone());
            async move {
                for i in 0..per_task {
                    let key = format!("{prefix}/{:02}", (k * per_task + i) % 100);
                    handle.put(PutRequest::new(key, VALUE)).await.expect("pipelined put");
                }
            }
        });
        futures::future::join_all(writers).await;
        let _ = tx.send(t.elapsed());
    });
    rx
}

/// One put on the system's thread; returns (put latency, time until the sinks counted `expect`
/// more events).
pub async fn fan_once(handle: &Handle, progress: &Progress, key: &[u8], expect: u64) -> (Duration, Duration) {
    let target = progress.events() + expect;
    progress.events_target.store(target, Ordering::Release);
    let t = Instant::now();
    handle.put(PutRequest::new(key, VALUE)).await.expect("put");
    let put = t.elapsed();
    progress.wait_events(target).await;
    (put, t.elapsed())
}
