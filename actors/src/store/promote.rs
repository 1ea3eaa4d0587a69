//! Owns the store's recent-revision ring and the placement of promoted watchers: a watcher the
//! syncer caught up or the victim actor delivered comes back (`Promote`) and is placed at the
//! current revision: synced when it has seen everything, replayed from the ring and then synced
//! when the ring still holds what it missed, else sent back to the syncer.

use std::ops::Range;
use std::sync::Arc;

use actix::prelude::*;
use watchkv::watch::response::CommitEvents;
use watchkv::watch::watcher::Watcher;
use watchkv::watch::watcher_group::WatcherGroup;

use super::fanout::{match_revision, TurnMarks};
use super::{PerStream, StoreActor};
use crate::protocol::{AddUnsynced, Promote};

/// Places the next [`PROMOTE_PER_TURN`] watchers waiting in the store's promotion queue (sent
/// to self).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct PlacePromoted;

/// Most promoted watchers placed in one turn of the store. A catch-up pass hands over up to
/// `max_watchers_per_sync` (512) at once, and placing one costs about 1 µs (two group inserts
/// and its share of the ring replay); placed in one turn, they held a write queued behind them
/// for the whole batch (`cargo bench -p watchkv-actors --bench watch -- catchup`). In turns of
/// 64 a write waits at most one of them: turns to self run only after the messages already in
/// the mailbox.
const PROMOTE_PER_TURN: usize = 64;

impl StoreActor {
    /// Appends a committed revision's events to the ring, dropping the oldest beyond
    /// `ring_revisions`.
    pub(super) fn remember(&mut self, rev: i64, batch: &CommitEvents, range: Range<usize>) {
        self.ring.push_back((rev, Arc::clone(batch), range));
        while self.ring.len() > self.config.ring_revisions() {
            self.ring.pop_front();
        }
    }

    /// Puts caught-up or delivered watchers where they belong at the current revision
    /// (docs/etcd-semantics.md §6.2 and docs/design.md, "The slow path"): synced when they
    /// have seen everything, replayed from the ring and then synced when it still holds what
    /// they missed, else back to the syncer.
    fn place_all(&mut self, watchers: Vec<Watcher>, out: &mut PerStream) {
        let current = self.clock.current();
        let oldest = self.ring.front().map(|(rev, ..)| *rev);
        let mut to_syncer = Vec::new();
        // The watchers the ring replays, matched as a group: one pass over the missed
        // revisions for the whole batch, costing the missed events plus the matches. Watcher by
        // watcher, a pass's 512 promoted watchers could each walk up to `watch_batch_max_revs`
        // ring entries while writes waited (measured with the catch-up bench).
        let mut behind = WatcherGroup::with_capacity(watchers.len());
        for w in watchers {
            if w.is_cancelled() || !self.streams.contains_key(&w.key.stream) {
                continue;
            }
            if w.min_rev > current {
                let _ = self.synced.insert(w);
                continue;
            }
            // A longer gap than one catch-up batch goes through the syncer, so what a victim
            // can hold stays bounded by `watch_batch_max_revs` (docs/design.md, invariant 5).
            let covered = oldest.is_some_and(|oldest| oldest <= w.min_rev);
            let gap = usize::try_from(current - w.min_rev + 1).unwrap_or(usize::MAX);
            if !covered || gap > self.config.watch().watch_batch_max_revs() {
                to_syncer.push(w);
                continue;
            }
            if let Err(w) = behind.insert(w) {
                to_syncer.push(w);
            }
        }
        if !to_syncer.is_empty() {
            self.peers.add_unsynced.do_send(AddUnsynced::new(to_syncer));
        }
        let Some(from) = behind.min_rev() else { return };
        // The ring is in revision order: start at the first revision any of them still needs;
        // `match_revision` skips each watcher's revisions before its own `min_rev`.
        let first = self.ring.partition_point(|(rev, ..)| *rev < from);
        // The replayed revisions join one response per watcher, as a group commit's do (the
        // marks are this group's own: slots are per group).
        let mut marks = TurnMarks::new(self.config.watch().batch_limits());
        for (rev, batch, range) in self.ring.range(first..) {
            match_revision(&mut behind, &mut self.matched, *rev, batch, range.clone(), out, &mut marks);
        }
        for mut w in behind.drain() {
            w.min_rev = current + 1;
            let _ = self.synced.insert(w);
        }
    }

    /// Places up to [`PROMOTE_PER_TURN`] queued promoted watchers, and schedules a later turn
    /// for the rest.
    fn place_promoted(&mut self, ctx: &mut Context<Self>) {
        let n = self.promoting.len().min(PROMOTE_PER_TURN);
        let turn: Vec<Watcher> = self.promoting.drain(..n).collect();
        let mut out = PerStream::default();
        self.place_all(turn, &mut out);
        self.deliver(out);
        self.place_scheduled = !self.promoting.is_empty();
        if self.place_scheduled {
            ctx.notify(PlacePromoted);
        }
    }
}

impl Handler<Promote> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: Promote, ctx: &mut Self::Context) {
        self.promoting.extend(msg.0);
        if !self.place_scheduled {
            // The first turn's worth at once: a small hand-over (a victim, a few caught-up
            // watchers) is synced before the next message, as if placed in one go.
            self.place_promoted(ctx);
        }
    }
}

impl Handler<PlacePromoted> for StoreActor {
    type Result = ();

    fn handle(&mut self, _: PlacePromoted, ctx: &mut Self::Context) {
        self.place_promoted(ctx);
    }
}
