//! A store that takes a while to defragment, for the process-level defragment tests
//! (`defragment`, `kill9`): loaded with incompressible values, defragmented once, then a third
//! of it deleted and the history compacted, so that the next defragment has real work and
//! space to give back; the check that it reads back as loaded; and the sign, on disk, that a
//! defragment has started.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{b64, bytes_field, int, try_post, DEADLINE};

/// Keys loaded (`d/00000`…).
pub const KEYS: u32 = 3000;
/// Bytes per value: 3000 × 16 KiB is about 48 MiB, under fjall's 64 MiB memtable, so that
/// nothing flushes in the background once the first defragment has run. Rewriting it takes
/// fjall a few hundred milliseconds (about 0.3 s on a 2-core machine), which is the window
/// the tests' reads, writes and kills land in; each of them takes a few milliseconds.
pub const VALUE_BYTES: usize = 16 * 1024;
/// Every third key is deleted after the first defragment.
pub const DELETED_EVERY: u32 = 3;
const WRITERS: u32 = 4;
/// Deletes per txn (the server's default `--max-txn-ops` is 128).
const DELETES_PER_TXN: usize = 100;
/// Keys per range when reading the store back.
const KEYS_PER_RANGE: u32 = 100;

/// The key of loaded value `i`.
#[must_use]
pub fn key(i: u32) -> String {
    format!("d/{i:05}")
}

/// Bytes that do not compress, different per `seed`.
#[must_use]
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// What [`load`] left acknowledged: each key's value and mod revision (`None` once deleted),
/// and the compaction revision.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Indexed by `i` of [`key`].
    pub values: Vec<Option<(Vec<u8>, i64)>>,
    /// The revision the history was compacted at.
    pub compacted_at: i64,
}

fn ok(port: u16, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let r = try_post(port, path, body.to_string().as_bytes()).unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert_eq!(r.status, 200, "POST {path}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Loads [`KEYS`] values of [`VALUE_BYTES`] (four writers), defragments (answered), deletes every
/// [`DELETED_EVERY`]th key and compacts the history physically at the current revision.
pub fn load(port: u16) -> Loaded {
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            thread::spawn(move || {
                (w..KEYS)
                    .step_by(WRITERS as usize)
                    .map(|i| {
                        let value = noise(u64::from(i), VALUE_BYTES);
                        let r = ok(port, "/v3/kv/put", &json!({"key": b64(key(i)), "value": b64(&value)}));
                        (i, value, int(&r["header"], "revision"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut values = vec![None; KEYS as usize];
    for w in writers {
        for (i, value, revision) in w.join().expect("writer thread") {
            values[i as usize] = Some((value, revision));
        }
    }
    // The loaded data goes from the memtable into one run of tables: the next defragment's
    // flush is short and its major compaction rewrites all of it.
    assert_eq!(ok(port, "/v3/maintenance/defragment", &json!({})), json!({}), "the first defragment");
    let deleted: Vec<u32> = (0..KEYS).step_by(DELETED_EVERY as usize).collect();
    for chunk in deleted.chunks(DELETES_PER_TXN) {
        let ops: Vec<_> = chunk.iter().map(|&i| json!({"request_delete_range": {"key": b64(key(i))}})).collect();
        let r = ok(port, "/v3/kv/txn", &json!({"success": ops}));
        assert_eq!(r["succeeded"], json!(true), "{r}");
        for &i in chunk {
            values[i as usize] = None;
        }
    }
    let current = int(&ok(port, "/v3/kv/range", &json!({"key": b64("\0")}))["header"], "revision");
    ok(port, "/v3/kv/compaction", &json!({"revision": current.to_string(), "physical": true}));
    Loaded { values, compacted_at: current }
}

/// Checks that the store holds exactly what [`load`] acknowledged: every value at its mod
/// revision, the deleted keys absent, the history compacted.
pub fn check(port: u16, loaded: &Loaded) {
    for from in (0..KEYS).step_by(KEYS_PER_RANGE as usize) {
        let to = (from + KEYS_PER_RANGE).min(KEYS);
        let r = ok(port, "/v3/kv/range", &json!({"key": b64(key(from)), "range_end": b64(key(to))}));
        let mut got = r["kvs"].as_array().cloned().unwrap_or_default().into_iter();
        for i in from..to {
            let Some((value, revision)) = &loaded.values[i as usize] else { continue };
            let kv = got.next().unwrap_or_else(|| panic!("{} is missing", key(i)));
            assert_eq!(bytes_field(&kv, "key"), key(i).as_bytes(), "keys in [{}, {})", key(from), key(to));
            assert!(bytes_field(&kv, "value") == *value, "{}: the value read back is not the one written", key(i));
            assert_eq!(int(&kv, "mod_revision"), *revision, "{}", key(i));
        }
        let extra: Vec<_> = got.map(|kv| String::from_utf8_lossy(&bytes_field(&kv, "key")).into_owned()).collect();
        assert!(extra.is_empty(), "deleted keys are back: {extra:?}");
    }
    let r = try_post(port, "/v3/kv/range", json!({"key": b64(key(1)), "revision": "1"}).to_string().as_bytes())
        .expect("range at revision 1");
    let v = r.json();
    assert_eq!(
        (r.status, v["message"].as_str()),
        (400, Some("etcdserver: mvcc: required revision has been compacted")),
        "the history stays compacted at {}: {v}",
        loaded.compacted_at
    );
}

/// The files of the data directory's storage trees (fjall keeps each keyspace's tables and
/// versions under `keyspaces/`; the journal lives beside it, so writes alone add nothing here).
#[must_use]
pub fn store_files(data_dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        // A file fjall deletes while we walk is simply not listed.
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&data_dir.join("keyspaces"), &mut out);
    out
}

/// Waits until a defragment sent after `before` was listed has demonstrably started: a storage
/// file that was not there appears (its memtable flush wrote a table). After [`load`] nothing
/// else writes one (the memtables hold little, far from a flush, and the trees are one run
/// each, nothing to compact), so the file is the defragment's. Fails if `answered` says the
/// defragment has already answered, or after a generous deadline. Returns the new files.
pub fn wait_until_started(data_dir: &Path, before: &BTreeSet<PathBuf>, answered: impl Fn() -> bool) -> Vec<PathBuf> {
    let start = Instant::now();
    loop {
        let new: Vec<PathBuf> = store_files(data_dir).difference(before).cloned().collect();
        if !new.is_empty() {
            return new;
        }
        assert!(!answered(), "the defragment answered before any storage file changed");
        assert!(start.elapsed() < DEADLINE * 2, "no defragment started within {:?}", DEADLINE * 2);
        // Polling interval (short: the defragment runs for a few hundred ms), not a
        // synchronisation.
        thread::sleep(Duration::from_millis(1));
    }
}

/// The db size `Status` reports.
#[must_use]
pub fn db_size(port: u16) -> i64 {
    int(&ok(port, "/v3/maintenance/status", &json!({})), "dbSize")
}
