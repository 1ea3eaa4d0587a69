//! Owns the victims: watchers whose stream buffer was full, each with the responses it could
//! not deliver, coalesced into multi-revision responses as etcd's victims get one batch. `VictimActor` retries them every `victim_retry_period` (etcd
//! `syncVictimsLoop` / `moveVictims`, docs/etcd-semantics.md §6.6) and hands delivered ones
//! back to the store, which syncs them or sends them to catch up on what they missed. Beyond
//! etcd, an optional slow-consumer policy cancels a victim that stays stuck (etcd #16839).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use watchkv::watch::response::WatchResponse;
use watchkv::watch::watcher::{StreamId, Watcher, WatcherKey};

use crate::config::{ActorsConfig, SlowConsumerPolicy};
use crate::protocol::{
    CancelWatchers, Counters, Deliver, Delivery, GetVictimStats, ParkVictims, Promote, RegisterStream, RetryStream,
    RetryTick, RevisionClock, StreamInbox, UnregisterStream, Victim, VictimStats,
};

/// The victim actor.
pub struct VictimActor {
    victims: HashMap<StreamId, Vec<Victim>>,
    streams: HashMap<StreamId, StreamInbox>,
    /// The store, where delivered victims go back.
    promote: Recipient<Promote>,
    config: Arc<ActorsConfig>,
    clock: Arc<RevisionClock>,
    counters: Arc<Counters>,
    retry_scheduled: bool,
    delivered: u64,
}

impl VictimActor {
    /// Returns an idle victim actor that hands delivered victims to `promote` (the store).
    #[must_use]
    pub fn new(
        promote: Recipient<Promote>,
        config: Arc<ActorsConfig>,
        clock: Arc<RevisionClock>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            victims: HashMap::new(),
            streams: HashMap::new(),
            promote,
            config,
            clock,
            counters,
            retry_scheduled: false,
            delivered: 0,
        }
    }

    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        if self.retry_scheduled || self.victims.is_empty() || self.config.manual_ticks() {
            return;
        }
        self.retry_scheduled = true;
        ctx.run_later(self.config.watch().victim_retry_period(), |act, ctx| {
            act.retry_scheduled = false;
            act.retry();
            act.schedule_retry(ctx);
        });
    }

    /// etcd `moveVictims`: resend each stream's parked responses in one message.
    fn retry(&mut self) {
        let mut promoted = Vec::new();
        for (stream, victims) in std::mem::take(&mut self.victims) {
            self.retry_stream(stream, victims, &mut promoted);
        }
        if !promoted.is_empty() {
            self.promote.do_send(Promote(promoted));
        }
    }

    /// Resends one stream's parked responses in one message; delivered victims join
    /// `promoted`, the others stay parked.
    fn retry_stream(&mut self, stream: StreamId, victims: Vec<Victim>, promoted: &mut Vec<Watcher>) {
        let victims: Vec<Victim> = victims.into_iter().filter(|v| !v.watcher.is_cancelled()).collect();
        if victims.is_empty() {
            return;
        }
        let Some(recipient) = self.streams.get(&stream) else { return };
        // The responses move into the message and, refused, come back with it: a stream that
        // stays full is retried every period, and a copy of each parked response per retry
        // cost a reference count per event each time.
        let mut victims = victims;
        let counts: Vec<usize> = victims.iter().map(|v| v.responses.len()).collect();
        let entries: Vec<Delivery> = victims
            .iter_mut()
            .flat_map(|v| {
                let key = v.watcher.key;
                std::mem::take(&mut v.responses).into_iter().map(move |response| Delivery { key, response })
            })
            .collect();
        let msg = Deliver::live(entries);
        let (responses, events) = msg.size();
        match recipient.try_deliver(msg) {
            Ok(()) => {
                self.counters.delivered(responses, events);
                self.delivered += victims.len() as u64;
                promoted.extend(victims.into_iter().map(|v| v.watcher));
            }
            Err(SendError::Full(refused)) => {
                restore_responses(&mut victims, &counts, refused.entries);
                let kept = self.apply_policy(recipient.clone(), victims);
                if !kept.is_empty() {
                    self.victims.insert(stream, kept);
                }
            }
            Err(SendError::Closed(_)) => {
                self.streams.remove(&stream);
            }
        }
    }

    /// Cancels the victims the slow-consumer policy gives up on; returns the rest.
    fn apply_policy(&mut self, recipient: StreamInbox, victims: Vec<Victim>) -> Vec<Victim> {
        let SlowConsumerPolicy::CancelAfter { lag_revisions, parked_for } = self.config.slow_consumer() else {
            return victims;
        };
        let current = self.clock.current();
        let now = Instant::now();
        let (cancel, keep): (Vec<Victim>, Vec<Victim>) = victims
            .into_iter()
            .partition(|v| v.lag(current) > lag_revisions || now.duration_since(v.parked_at) > parked_for);
        for v in cancel {
            let lag = v.lag(current);
            let reason = format!(
                "watchkv: slow consumer: {lag} revisions committed while the watcher was undeliverable, for {} ms",
                now.duration_since(v.parked_at).as_millis()
            );
            tracing::warn!(stream = v.watcher.key.stream, watch_id = v.watcher.key.id, lag, "cancelling slow watcher");
            v.watcher.cancel.cancel();
            self.counters.slow_cancels.fetch_add(1, Ordering::Relaxed);
            // The mailbox is full, so this one message goes past its capacity: it is bounded by
            // one per watcher, and it is what frees the parked memory.
            recipient.deliver_notice(Deliver::live(vec![Delivery {
                key: v.watcher.key,
                response: WatchResponse::canceled(v.watcher.key.id, current, reason),
            }]));
        }
        keep
    }
}

/// Gives refused deliveries back to their victims: `entries` are the victims' responses in the
/// order they were taken, `counts[i]` of them victim `i`'s.
fn restore_responses(victims: &mut [Victim], counts: &[usize], entries: Vec<Delivery>) {
    let mut entries = entries.into_iter();
    for (v, &n) in victims.iter_mut().zip(counts) {
        v.responses.extend(entries.by_ref().take(n).map(|d| d.response));
    }
}

impl Actor for VictimActor {
    type Context = Context<Self>;
}

impl Handler<ParkVictims> for VictimActor {
    type Result = ();

    fn handle(&mut self, msg: ParkVictims, ctx: &mut Self::Context) {
        let limits = self.config.watch().batch_limits();
        // Where each parked watcher sits in its stream's list, for the streams this message
        // touches: found by key, not by a pass over a list that may hold 10k of them.
        let mut position: HashMap<StreamId, HashMap<WatcherKey, usize>> = HashMap::new();
        for mut v in msg.0 {
            if v.watcher.is_cancelled() {
                continue;
            }
            let stream = v.watcher.key.stream;
            let list = self.victims.entry(stream).or_default();
            let at = position
                .entry(stream)
                .or_insert_with(|| list.iter().enumerate().map(|(i, o)| (o.watcher.key, i)).collect());
            match at.get(&v.watcher.key).and_then(|&i| list.get_mut(i)) {
                // Already parked (a later delivery failed too): keep the order, newest state.
                Some(o) => {
                    o.responses.extend(v.responses);
                    o.watcher = v.watcher;
                    o.coalesce(limits);
                }
                None => {
                    v.coalesce(limits);
                    at.insert(v.watcher.key, list.len());
                    list.push(v);
                }
            }
        }
        self.schedule_retry(ctx);
    }
}

impl Handler<RetryStream> for VictimActor {
    type Result = ();

    fn handle(&mut self, msg: RetryStream, _: &mut Self::Context) {
        let Some(victims) = self.victims.remove(&msg.0) else { return };
        let mut promoted = Vec::new();
        self.retry_stream(msg.0, victims, &mut promoted);
        if !promoted.is_empty() {
            self.promote.do_send(Promote(promoted));
        }
    }
}

impl Handler<RetryTick> for VictimActor {
    type Result = ();

    fn handle(&mut self, _: RetryTick, ctx: &mut Self::Context) {
        self.retry();
        self.schedule_retry(ctx);
    }
}

impl Handler<RegisterStream> for VictimActor {
    type Result = ();

    fn handle(&mut self, msg: RegisterStream, _: &mut Self::Context) {
        self.streams.insert(msg.stream, msg.inbox);
    }
}

impl Handler<UnregisterStream> for VictimActor {
    type Result = ();

    fn handle(&mut self, msg: UnregisterStream, _: &mut Self::Context) {
        self.streams.remove(&msg.stream);
        self.victims.remove(&msg.stream);
    }
}

impl Handler<CancelWatchers> for VictimActor {
    type Result = ();

    fn handle(&mut self, msg: CancelWatchers, _: &mut Self::Context) {
        for key in msg.0 {
            if let Some(list) = self.victims.get_mut(&key.stream) {
                list.retain(|v| v.watcher.key != key);
                if list.is_empty() {
                    self.victims.remove(&key.stream);
                }
            }
        }
    }
}

impl Handler<GetVictimStats> for VictimActor {
    type Result = MessageResult<GetVictimStats>;

    fn handle(&mut self, _: GetVictimStats, _: &mut Self::Context) -> Self::Result {
        let all = self.victims.values().flatten();
        MessageResult(VictimStats {
            victims: self.victims.values().map(Vec::len).sum(),
            parked_bytes: all.map(Victim::approx_bytes).sum(),
            delivered: self.delivered,
        })
    }
}
