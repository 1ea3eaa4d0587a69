//! Shared fixtures for the runtime's message-driven tests: a system in a temporary directory.
//! The recorder, the waits and the watch-guarantee checker are public in
//! `watchkv_actors::testing`, re-exported here.
#![allow(dead_code)]

use watchkv::PutRequest;
#[allow(unused_imports)] // each test binary uses its own part
pub use watchkv_actors::testing::{config, wait_stats, RecordedStream, DEADLINE};
use watchkv_actors::{ActorsConfig, Handle};

/// A running system and the directory it lives in.
pub struct TestSystem {
    pub handle: Handle,
    pub dir: tempfile::TempDir,
}

impl TestSystem {
    /// Starts a system with the test configuration, every timer on unless `manual`.
    pub async fn start(manual: bool) -> Self {
        Self::with(manual, |c| c).await
    }

    /// Starts a system with the test configuration as `f` changes it.
    pub async fn with(manual: bool, f: impl FnOnce(ActorsConfig) -> ActorsConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let c = f(config(dir.path(), manual));
        let handle = watchkv_actors::start(c).await.expect("start");
        Self { handle, dir }
    }

    pub async fn put(&self, key: &str, value: &str) -> i64 {
        self.handle.put(PutRequest::new(key, value)).await.expect("put").revision
    }

    /// Opens a stream whose responses a recorder collects.
    pub fn stream(&self) -> RecordedStream {
        RecordedStream::open(&self.handle)
    }
}
