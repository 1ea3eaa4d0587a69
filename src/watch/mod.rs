//! Owns the synchronous watch machinery: watcher values, groups and event batches. No threads
//! and no actors here: the runtime crate moves these values between its actors.
//!
//! A watcher's life (etcd `watchable_store.go`, docs/etcd-semantics.md §6):
//!
//! ```text
//!   create ──start 0 or future──► synced ◄────────── promoted at a revision boundary ──┐
//!     │                             │  notify: mailbox full                              │
//!     │ start <= current_rev        ▼                                                    │
//!     └──────────────────────► unsynced ──catch-up batch, mailbox full──► victim ────────┘
//!                                   ▲                                      │ retried every
//!                                   └──── delivered, but writes missed ────┘ victim_retry_period
//! ```

pub mod catch_up;
pub mod event_batch;
pub mod events;
pub mod history;
pub mod id_map;
pub mod ids;
pub mod range_index;
pub mod response;
pub mod watcher;
pub mod watcher_group;
