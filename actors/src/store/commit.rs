//! Owns the store's group commit: the queue of pending writes, each with its typed reply, and
//! the flush that applies them in one `WriteGroup`, persists once, publishes the revision,
//! answers the writers and then hands the events to the fan-out.

use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::prelude::*;
use watchkv::auth::AuthError;
use watchkv::{Applied, Error, Event, Persisted, Result, Write, WriteGroup};

use super::{PerStream, StoreActor};
use crate::api::auth::AuthStamp;
use crate::protocol::{SubmitWrite, SubmitWrites};
use crate::reply_route::{Answers, Reply};

/// A write waiting for the next group commit, with its typed reply.
pub trait PendingWrite: Send {
    /// Applies the write inside the group.
    fn apply(&mut self, group: &mut WriteGroup<'_>);
    /// Adds the writer's answer to `answers` once the group is persisted; returns the events
    /// to notify.
    fn answer(self: Box<Self>, persisted: &Persisted, answers: &mut Answers) -> Vec<Event>;
    /// Answers the writer with `error` without applying the write.
    fn fail(self: Box<Self>, error: Error);
    /// The auth store the write's permission check read, if it had one to keep.
    fn auth(&self) -> Option<AuthStamp>;
}

/// `msg` as a write of the group-commit queue, whatever its kind (a [`SubmitWrites`] carries
/// several kinds together).
pub(crate) fn queued<W: Write>(msg: SubmitWrite<W>) -> Box<dyn PendingWrite> {
    Box::new(Queued { request: Some(msg.request), applied: None, reply: msg.reply, auth: msg.auth })
}

/// A [`SubmitWrite`] in the group-commit queue.
struct Queued<W: Write> {
    request: Option<W>,
    applied: Option<Applied<W::Response>>,
    reply: Reply<Result<W::Response>>,
    auth: Option<AuthStamp>,
}

impl<W: Write> PendingWrite for Queued<W> {
    fn apply(&mut self, group: &mut WriteGroup<'_>) {
        if let Some(request) = self.request.take() {
            self.applied = Some(group.apply(request));
        }
    }

    fn answer(self: Box<Self>, persisted: &Persisted, answers: &mut Answers) -> Vec<Event> {
        let Some(applied) = self.applied else {
            let error = Error::Internal("a queued write was answered before it was applied".into());
            answers.add(self.reply, Err(error));
            return Vec::new();
        };
        match applied.settle(persisted) {
            Ok(committed) => {
                answers.add(self.reply, Ok(committed.response));
                committed.events
            }
            Err(e) => {
                answers.add(self.reply, Err(e));
                Vec::new()
            }
        }
    }

    fn fail(self: Box<Self>, error: Error) {
        self.reply.send_now(Err(error));
    }

    fn auth(&self) -> Option<AuthStamp> {
        self.auth
    }
}

/// Flushes pending writes as one group commit (sent to self).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

impl StoreActor {
    /// Queues a write for the next group commit.
    fn submit(&mut self, write: Box<dyn PendingWrite>, ctx: &mut Context<Self>) {
        if self.store.is_none() {
            write.fail(self.unavailable());
            return;
        }
        self.pending.push(write);
        if !self.flush_scheduled {
            // Runs after every message already in the mailbox: writes queued together are
            // applied in one batch with one persist (group commit).
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    /// Applies, persists and answers every pending write, then notifies synced watchers.
    pub(super) fn flush(&mut self) {
        self.flush_scheduled = false;
        let mut pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        // A write whose permissions were checked against an auth store that has changed since
        // is refused before it is applied, as etcd refuses it (`AuthView::admits`): a
        // permission revoked while the write waited here must hold.
        let auth = &self.peers.auth;
        if pending.iter().any(|w| w.auth().is_some_and(|stamp| !auth.admits(stamp))) {
            let (admitted, refused): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|w| w.auth().is_none_or(|stamp| auth.admits(stamp)));
            for write in refused {
                write.fail(Error::Auth(AuthError::AuthOldRevision));
            }
            pending = admitted;
            if pending.is_empty() {
                return;
            }
        }
        let started = Instant::now();
        let Some(store) = self.store.as_mut() else {
            for write in pending {
                write.fail(self.unavailable());
            }
            return;
        };
        let mut group = store.group();
        for write in &mut pending {
            write.apply(&mut group);
        }
        let persisted = group.persist();
        // A failed group's revisions are not published: watchers and readers never hear of
        // them (`recovery.rs` reconciles what the reopened store holds).
        if persisted.is_ok() {
            self.publish();
        }
        self.counters.write_batches.fetch_add(1, Ordering::Relaxed);
        self.counters.write_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        // Answer first, then notify, in the same turn of this actor. A writer's reply does not
        // wait for a fan-out to thousands of watchers, and etcd's guarantee still holds:
        // whatever a writer can do once it knows its revision (start a watch, ask for progress,
        // read) reaches the watch machinery as a message to this actor, handled only after this
        // turn has queued the revision's events to every matching synced watcher's stream
        // (docs/design.md, invariant 3). The revision's own visibility was published above,
        // before either.
        // The answers leave as one batch per writer's thread (`crate::reply_route`).
        let mut answers = Answers::default();
        let events: Vec<Vec<Event>> = pending.into_iter().map(|w| w.answer(&persisted, &mut answers)).collect();
        answers.send();
        // The writers answered may write again within microseconds.
        crate::idle_poll::keep_polling();
        if events.iter().flatten().any(|e| self.synced.any_matches(&e.kv.key)) {
            // A fan-out follows: let a writer just woken onto this core reply now rather than
            // after it. Without this, on a 2-core machine some puts to a key that many watchers
            // share waited the whole fan-out, because the kernel queued the woken writer behind
            // this busy thread while the other core was idle (`cargo bench -p watchkv-actors
            // --bench watch -- fanout`, traced with `perf sched timehist`). Only then: yielding
            // hands the rest of this thread's time slice to whatever waits on this core, and
            // after commits nobody watches, that was a stream thread's delivery burst that the
            // next write then waited behind (the catch-up bench met its put p99 target less
            // often with an unconditional yield).
            crate::sched::offer_cpu();
        }
        let mut out = PerStream::default();
        self.committed(events, &mut out);
        self.deliver(out);
    }
}

impl Handler<SubmitWrites> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: SubmitWrites, ctx: &mut Self::Context) {
        for write in msg.0 {
            self.submit(write, ctx);
        }
    }
}

impl Handler<Flush> for StoreActor {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) {
        self.flush();
        self.check_storage(ctx);
    }
}
