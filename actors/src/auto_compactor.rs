//! Owns the automatic compaction actor: it runs the policy of `watchkv::auto_compaction` (etcd's
//! `v3compactor`) on a timer and sends the store an ordinary [`Compact`], so a compaction it
//! starts is announced to watchers and answered like a client's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use watchkv::auto_compaction::{AutoCompaction, AutoCompactor, Revision};
use watchkv::Error;

use crate::protocol::{Compact, RevisionClock};

/// Compacts the store's history as its [`AutoCompaction`] policy says.
pub struct AutoCompactorActor {
    policy: AutoCompaction,
    compactor: AutoCompactor,
    compact: Recipient<Compact>,
    clock: Arc<RevisionClock>,
    /// A compaction is in flight: ticks wait for its outcome.
    busy: bool,
}

impl AutoCompactorActor {
    /// An actor that compacts through `compact` under `policy`, reading the current revision
    /// from `clock`.
    pub fn new(policy: AutoCompaction, compact: Recipient<Compact>, clock: Arc<RevisionClock>) -> Self {
        let compactor = AutoCompactor::new(policy, Instant::now(), clock.current());
        Self { policy, compactor, compact, clock, busy: false }
    }

    /// Has a `revision` policy look every `interval` instead of etcd's five minutes
    /// ([`crate::ActorsConfig::revision_compaction_interval`]); a `periodic` one is unchanged.
    #[must_use]
    pub fn with_revision_interval(mut self, interval: Duration) -> Self {
        if let AutoCompaction::Revision(retention) = self.policy {
            self.compactor = AutoCompactor::Revision(Revision::new(retention, interval));
        }
        self
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let Some(revision) = self.compactor.tick(Instant::now(), self.clock.current()) else { return };
        self.busy = true;
        tracing::info!(revision, policy = %self.policy, "starting auto compaction");
        let sent = self.compact.send(Compact { revision, physical: false });
        ctx.spawn(sent.into_actor(self).map(move |result, act, _| {
            act.busy = false;
            let succeeded = match result {
                Ok(Ok(_)) | Ok(Err(Error::Compacted { .. })) => true,
                Ok(Err(e)) => {
                    tracing::warn!(revision, error = %e, "auto compaction failed; retrying at the next tick");
                    false
                }
                Err(_) => false,
            };
            if succeeded {
                tracing::info!(revision, "completed auto compaction");
            }
            act.compactor.compacted(Instant::now(), revision, succeeded);
        }));
    }
}

impl Actor for AutoCompactorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(policy = %self.policy, "auto compaction on");
        ctx.run_interval(self.compactor.tick_interval(), |act, ctx| act.tick(ctx));
    }
}
