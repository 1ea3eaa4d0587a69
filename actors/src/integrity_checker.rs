//! Owns the integrity self-check actor (etcd 3.5's compact hash check, `--experimental-corrupt-
//! check-time`, for a single member): on a timer it hashes the store with `HashKV`, keeps a
//! reference per compact revision (`watchkv::hash::IntegrityCheck`), and raises the `CORRUPT`
//! alarm when the same history later hashes differently, which only a change of rows on disk
//! can cause. Each check scans on a blocking thread; the store only plans it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use watchkv::alarm::{AlarmMember, AlarmType};
use watchkv::hash::{IntegrityCheck, IntegrityVerdict};

use crate::protocol::{Alarm, PlanHashKv, RevisionClock};
use crate::store::StoreActor;

/// Checks the store's history every `interval`.
pub struct IntegrityChecker {
    store: Addr<StoreActor>,
    clock: Arc<RevisionClock>,
    interval: Duration,
    member_id: u64,
    check: IntegrityCheck,
    busy: bool,
}

impl IntegrityChecker {
    /// A checker of `store` every `interval`, raising alarms as `member_id`.
    pub fn new(store: Addr<StoreActor>, clock: Arc<RevisionClock>, interval: Duration, member_id: u64) -> Self {
        Self { store, clock, interval, member_id, check: IntegrityCheck::default(), busy: false }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let revision = self.check.next_revision(self.clock.compact());
        let store = self.store.clone();
        let hashed = async move {
            let plan = store.send(PlanHashKv(revision)).await.ok()?;
            let hash = match plan {
                // A compaction still deleting rows: no hash to keep or compare this time.
                Ok(plan) if !plan.compaction_settled() => return None,
                Ok(plan) => actix_rt::task::spawn_blocking(move || plan.run()).await.ok()?,
                Err(e) => Err(e),
            };
            Some(hash)
        };
        ctx.spawn(hashed.into_actor(self).map(|hash, act, _| {
            act.busy = false;
            match hash {
                // The store stopped, or a compaction is still running: nothing to check.
                None => {}
                Some(Ok(hash)) => match act.check.observe(hash) {
                    IntegrityVerdict::Recorded | IntegrityVerdict::Consistent => {}
                    IntegrityVerdict::Mismatch { revision, expected, found } => {
                        tracing::error!(
                            revision,
                            expected,
                            found,
                            "the store's history hashes differently than before: raising CORRUPT"
                        );
                        act.raise_corrupt();
                    }
                },
                // A row that no longer decodes, or a block whose checksum fails, is the damage
                // this check exists to find: fjall reports it as an error, not as other rows.
                Some(Err(e)) if e.is_damage() => {
                    tracing::error!(error = %e, "the store's history cannot be read back: raising CORRUPT");
                    act.raise_corrupt();
                }
                // A compaction between planning and now: next time.
                Some(Err(watchkv::Error::Compacted { .. })) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "integrity check skipped"),
            }
        }));
    }

    fn raise_corrupt(&self) {
        let alarm = AlarmMember { member_id: self.member_id, alarm: AlarmType::Corrupt };
        self.store.do_send(Alarm::Activate(alarm));
    }
}

impl Actor for IntegrityChecker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(interval = ?self.interval, "integrity self-check on");
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
    }
}
