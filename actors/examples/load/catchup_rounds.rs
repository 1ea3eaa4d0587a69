//! grpc-catchup's catch-up rounds, run back to back while the writer puts: a round opens
//! `--catchup-watchers` watchers (`--watchers-per-stream` per stream, the streams spread over the
//! scenario's `--grpc-connections` connections, which every round reuses) on the catch-up prefix
//! from the first revision of its history, waits until every watcher has received all
//! `--catchup-revisions` puts, then stops its streams (dropping them cancels them on the server)
//! right after the next round has opened; each round's watchers are checked for exactly-once in
//! order on their own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::task::JoinHandle;
use etcd_client::Client;

use crate::args::Args;
use crate::catchup::PREFIX;
use crate::grpc_watch::{grpc_watch_stream, Shared, StreamResult, WatchCfg};
use crate::tally::Tally;

/// Every round's figures, summed or listed.
#[derive(Debug, Default, Clone)]
pub struct Rounds {
    /// Per round: when it opened and when its last watcher caught up (or it was given up),
    /// since the start of the writer's puts, and whether every watcher caught up.
    pub spans: Vec<(Duration, Duration, bool)>,
    /// Rounds whose every wanted watcher got exactly the history, once each, in order.
    pub exact_rounds: u64,
    pub watchers_created: u64,
    pub events_received: u64,
    pub failed_streams: u64,
    /// Every round's watchers' findings, summed.
    pub tally: Tally,
}

impl Rounds {
    /// Catch-up times of the completed rounds, in seconds, sorted.
    pub fn round_secs(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.spans.iter().filter(|s| s.2).map(|s| (s.1 - s.0).as_secs_f64()).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median catch-up time of the completed rounds (the mean of the middle two for an even
    /// count), and the longest, in seconds.
    pub fn median_max_secs(&self) -> Option<(f64, f64)> {
        let v = self.round_secs();
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some((v[n / 2], v[n - 1])),
            _ => Some(((v[n / 2 - 1] + v[n / 2]) / 2.0, v[n - 1])),
        }
    }

    pub fn completed(&self) -> u64 {
        self.spans.iter().filter(|s| s.2).count() as u64
    }

    /// Whether a put begun at `at` (since the writer's start) began while a round was open.
    pub fn during(&self, at: Duration) -> bool {
        self.spans.iter().any(|&(a, b, _)| a <= at && at < b)
    }
}

/// One round's open watch streams.
pub struct OpenRound {
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    streams: Vec<JoinHandle<StreamResult>>,
}

impl OpenRound {
    fn open(args: &Args, clients: &[Client], start_revision: i64) -> Self {
        let (want, per_stream) = (args.catchup_watchers, args.watchers_per_stream);
        let now = Instant::now();
        let cfg = Arc::new(WatchCfg {
            keys: vec![PREFIX.as_bytes().to_vec()],
            prefix: true,
            start_revision,
            max_seq: args.catchup_revisions,
            complete_after: args.catchup_revisions,
            epoch: now,
            setup_deadline: now + Duration::from_secs(30),
        });
        let shared = Arc::new(Shared::new(args.catchup_revisions, now));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let streams = (0..want.div_ceil(per_stream))
            .map(|s| {
                let client = clients[s % clients.len()].clone();
                let watchers = per_stream.min(want - s * per_stream);
                actix_rt::spawn(grpc_watch_stream(client, cfg.clone(), shared.clone(), watchers, 0, stop_rx.clone()))
            })
            .collect();
        Self { shared, stop, streams }
    }

    /// Waits until all `want` watchers have caught up (true), a stream failed or `limit` passed.
    async fn wait(&self, want: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.shared.caught_up() >= want {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.shared.failed_streams() > 0 || left.is_zero() {
                return false;
            }
            let _ = actix_rt::time::timeout(left, self.shared.progress.notified()).await;
        }
    }

    /// Stops the round's streams (if not yet) and adds their findings to `out`.
    pub async fn close(self, args: &Args, out: &mut Rounds) {
        let _ = self.stop.send(true);
        let acked = vec![true; args.catchup_revisions];
        let mut tally = Tally::default();
        for s in self.streams {
            if let Ok(Ok(r)) = actix_rt::time::timeout(Duration::from_secs(5), s).await {
                tally.add(r, &acked, 1);
            }
        }
        let (created, want) = (self.shared.created(), args.catchup_watchers as u64);
        if want > 0 && created == want && tally.watchers_exact == want {
            out.exact_rounds += 1;
        }
        out.watchers_created += created;
        out.events_received += self.shared.events();
        out.failed_streams += self.shared.failed_streams();
        let t = &mut out.tally;
        t.watchers_exact += tally.watchers_exact;
        t.missing += tally.missing;
        t.duplicates += tally.duplicates;
        t.out_of_order += tally.out_of_order;
        t.unexpected += tally.unexpected;
        t.canceled += tally.canceled;
        if t.first_error.is_none() {
            t.first_error = tally.first_error;
        }
    }
}

/// Rounds back to back from `t0` until `writer_done` (set from the writer's thread) is set at the
/// end of a round (or a round fails). Returns the figures of every round but the last and the
/// last round, still open (its watchers caught up), for the caller to close after its
/// measurements.
pub async fn run_rounds(
    args: &Args,
    clients: &[Client],
    start_revision: i64,
    t0: Instant,
    writer_done: &AtomicBool,
) -> (Rounds, OpenRound) {
    let mut out = Rounds::default();
    let limit = Duration::from_secs(args.drain_timeout_secs);
    let mut opened = t0.elapsed();
    let mut round = OpenRound::open(args, clients, start_revision);
    loop {
        let ok = round.wait(args.catchup_watchers as u64, limit).await;
        let end = round.shared.last_caught_up().filter(|_| ok).unwrap_or_else(Instant::now);
        out.spans.push((opened, end.saturating_duration_since(t0), ok));
        if !ok || writer_done.load(Ordering::Acquire) {
            return (out, round);
        }
        // The next round opens before this one's streams are closed, so that the catch-up work
        // never pauses.
        let _ = round.stop.send(true);
        opened = t0.elapsed();
        let next = OpenRound::open(args, clients, start_revision);
        round.close(args, &mut out).await;
        round = next;
    }
}
