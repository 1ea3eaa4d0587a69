//! The disk's own floor for a durable put: the latency of appending one value to a file and
//! `fdatasync`ing it, measured on the server's disk right after the puts scenario, so a put's
//! latency can be read against what the disk alone costs in the same run.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Appends `value_size` bytes and `fdatasync`s, `rounds` times, in a file under `dir`; returns
/// the sorted latencies in µs (empty if the file cannot be written).
pub fn fdatasync_latencies(dir: &Path, value_size: usize, rounds: usize) -> Vec<u64> {
    let path = dir.join("fsync-probe");
    let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&path) else { return Vec::new() };
    let value = vec![b'x'; value_size];
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        if file.write_all(&value).and_then(|()| file.sync_data()).is_err() {
            break;
        }
        lat.push(t.elapsed().as_micros() as u64);
    }
    let _ = std::fs::remove_file(&path);
    lat.sort_unstable();
    lat
}
