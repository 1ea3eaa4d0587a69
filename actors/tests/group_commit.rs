//! Writes that one thread's tasks submit in the same turn of its runtime (a burst of requests
//! read from one connection) join one group commit through the thread's outbox, and each writer
//! still gets its own answer; writes from another thread join commits of their own.

use watchkv::{KeyRange, PutRequest, RangeRequest};
use watchkv_actors::testing;
use watchkv_actors::{start, Handle};

/// Puts `count` keys from as many tasks spawned together on this thread; returns their
/// revisions in the order the tasks were spawned.
async fn burst_of_puts(handle: &Handle, prefix: &str, count: usize) -> Vec<i64> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let handle = handle.clone();
            let key = format!("{prefix}{i:03}");
            actix_rt::spawn(async move { handle.put(PutRequest::new(key, "v")).await })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.expect("put task").expect("put").revision);
    }
    revisions
}

#[actix_rt::test]
async fn puts_submitted_in_one_turn_join_one_group_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handle = start(testing::config(dir.path(), true)).await.expect("start");
    let first = handle.put(PutRequest::new("before", "v")).await.expect("put").revision;
    let batches_before = handle.stats().await.expect("stats").write_batches;

    let revisions = burst_of_puts(&handle, "burst/", 40).await;

    let batches = handle.stats().await.expect("stats").write_batches - batches_before;
    assert_eq!(batches, 1, "40 puts submitted together took {batches} group commits");
    // Each writer got its own revision, in the order the writes were queued.
    let expected: Vec<i64> = (first + 1..=first + 40).collect();
    assert_eq!(revisions, expected);
    let read = handle.range(RangeRequest::new(KeyRange::prefix("burst/"))).await.expect("range");
    assert_eq!(read.kvs.len(), 40);
    assert!(read.kvs.iter().zip(&expected).all(|(kv, rev)| kv.mod_revision == *rev));
    handle.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn writes_from_another_thread_are_answered_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    let handle = start(testing::config(dir.path(), true)).await.expect("start");
    let other = handle.clone();
    // A thread with a runtime of its own, as a client-port worker has.
    let revisions = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move { burst_of_puts(&other, "other/", 10).await })
    })
    .join()
    .expect("writer thread");
    let local = burst_of_puts(&handle, "local/", 10).await;
    let mut all: Vec<i64> = revisions.iter().chain(&local).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 20, "every write has a revision of its own");
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "one thread's writes keep their order");
    handle.shutdown().await.expect("shutdown");
}

/// A write from a thread that only entered the runtime (a `spawn_blocking` thread blocking on
/// the `Handle`, as an embedder's synchronous code does) is answered: its outbox's sender runs
/// on the runtime's own thread and still finds it, and the next such write too. The runtime runs
/// on a thread of its own, so that a write never answered fails the test instead of hanging it.
#[test]
fn a_write_from_a_blocking_thread_inside_the_runtime_is_answered() {
    let (done, answered) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let dir = tempfile::tempdir().expect("temp dir");
            let handle = start(testing::config(dir.path(), true)).await.expect("start");
            let blocking = handle.clone();
            let written = actix_rt::task::spawn_blocking(move || {
                let runtime = tokio::runtime::Handle::current();
                ["first", "second"]
                    .map(|key| runtime.block_on(blocking.put(PutRequest::new(key, "v"))).map(|r| r.revision))
            });
            let [first, second] = written.await.expect("the blocking task");
            let read = handle.range(RangeRequest::new(KeyRange::prefix(""))).await.map(|r| r.kvs.len());
            let _ = done.send((first, second, read));
        });
    });
    let (first, second, read) =
        answered.recv_timeout(std::time::Duration::from_secs(60)).expect("both writes answered within a minute");
    let (first, second) = (first.expect("first put"), second.expect("second put"));
    assert_eq!(second, first + 1);
    assert_eq!(read.expect("range"), 2);
}

/// A client's write is applied only under the auth store its permission check read: one
/// checked before a change to the auth store (a permission revoked, a user deleted) and
/// applied after it is refused with etcd's `revision of auth store is old`, which clients
/// retry; so is one checked while auth was off and applied once it is on.
#[actix_rt::test]
async fn a_write_checked_against_an_older_auth_store_is_refused() {
    use watchkv::auth::{AuthError, AuthOp, ROOT};
    use watchkv::{DeleteRangeRequest, Error, TxnRequest};

    let dir = tempfile::tempdir().expect("temp dir");
    let handle = start(testing::config(dir.path(), true).with_bcrypt_cost(4)).await.expect("start");
    let auth = handle.auth();
    let old = |r: &Result<i64, Error>| matches!(r, Err(Error::Auth(AuthError::AuthOldRevision)));

    let checked_while_off = auth.stamp();
    let hash = auth.hash_password("rootpw", "").await.expect("hash");
    for op in [
        AuthOp::UserAdd { name: ROOT.into(), password_hash: Some(hash) },
        AuthOp::RoleAdd(ROOT.into()),
        AuthOp::UserGrantRole { user: ROOT.into(), role: ROOT.into() },
    ] {
        handle.auth_change(op).await.expect("set up root");
    }
    // Auth still off: a stamp from before these changes is no matter.
    handle.put_checked(PutRequest::new("a", "1"), checked_while_off).await.expect("auth off");
    handle.auth_change(AuthOp::Enable).await.expect("enable");
    let put = handle.put_checked(PutRequest::new("a", "2"), checked_while_off).await.map(|r| r.revision);
    assert!(old(&put), "checked while auth was off: {put:?}");

    let checked = auth.stamp();
    handle.put_checked(PutRequest::new("a", "3"), checked).await.expect("nothing changed since the check");
    handle.auth_change(AuthOp::RoleAdd("other".into())).await.expect("a change");
    let put = handle.put_checked(PutRequest::new("a", "4"), checked).await.map(|r| r.revision);
    let delete = handle.delete_range_checked(DeleteRangeRequest::new(KeyRange::single("a")), checked).await;
    let mut txn = TxnRequest::default();
    txn.success.push(watchkv::RequestOp::Put(PutRequest::new("a", "5")));
    let txn = handle.txn_checked(txn, checked).await;
    assert!(old(&put), "{put:?}");
    assert!(old(&delete.map(|r| r.revision)), "delete");
    assert!(old(&txn.map(|r| r.revision)), "txn");
    let read = handle.range(watchkv::RangeRequest::new(KeyRange::single("a"))).await.expect("range");
    assert_eq!(read.kvs[0].value, b"3", "none of the refused writes applied");
    // Checked again, it passes.
    handle.put_checked(PutRequest::new("a", "6"), auth.stamp()).await.expect("a fresh check");
    handle.shutdown().await.expect("shutdown");
}
