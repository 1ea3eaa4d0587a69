//! Owns the names the server's threads show to the OS (`top -H`, `ps -L`, `perf`, `chrt`):
//! each actor thread and client-port worker says what it runs, where actix would name them all
//! `actix-rt|system` (its longer names cut at Linux's 15 bytes).
//!
//! Threads watchkv spawns itself are named when built (`watchkv-compactor`,
//! `watchkv-snapshot`); actix's arbiters and the client port's workers are named here, from
//! their own thread, once started. An embedder's threads are left as the embedder named them.

/// The store actor's thread (writes, revisions, compaction, leases, the synced watchers).
pub const STORE: &str = "watchkv-store";
/// The syncer's thread (catch-up scans of unsynced watchers).
pub const SYNCER: &str = "watchkv-syncer";
/// The victim actor's thread (retries to full streams; the periodic checks beside it).
pub const VICTIMS: &str = "watchkv-victims";
/// The prefix of a client-port worker's name, followed by the worker's number from 0 (from
/// worker 100 on, cut to [`MAX_LEN`]: `watchkv-port-10` for 100 to 109, and so on).
pub const CLIENT_PORT_WORKER: &str = "watchkv-port-";
/// The metrics port's worker.
pub const METRICS_PORT_WORKER: &str = "watchkv-metrics";

/// The longest name Linux keeps for a thread, in bytes (`TASK_COMM_LEN` less its NUL).
pub const MAX_LEN: usize = 15;

/// Names the calling thread `name`, cut to [`MAX_LEN`] bytes at a character boundary. A name
/// is a label for people and tools, so failure is logged, not returned. Off Linux: no-op.
pub(crate) fn name_current_thread(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let Ok(name) = std::ffi::CString::new(shortened(name)) else {
            tracing::debug!(name, "a thread name with a NUL byte is not set");
            return;
        };
        // SAFETY: `PR_SET_NAME` reads a NUL-terminated string from the pointer, which `name`
        // keeps alive for the call; the other arguments are unused. Failure is -1 and errno.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_NAME,
                name.as_ptr() as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            tracing::debug!(name = ?name, error = %std::io::Error::last_os_error(), "could not name the thread");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// The name of client-port worker `index`.
pub(crate) fn client_port_worker(index: usize) -> String {
    format!("{CLIENT_PORT_WORKER}{index}")
}

/// `name` cut to at most [`MAX_LEN`] bytes without splitting a character.
fn shortened(name: &str) -> &str {
    if name.len() <= MAX_LEN {
        return name;
    }
    let mut end = MAX_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_name_fits_whole() {
        for name in [STORE, SYNCER, VICTIMS, METRICS_PORT_WORKER, client_port_worker(99).as_str()] {
            assert!(name.len() <= MAX_LEN, "{name} would be cut");
        }
    }

    #[test]
    fn a_long_name_is_cut_at_a_character_boundary() {
        assert_eq!(shortened("watchkv-port-1000"), "watchkv-port-10");
        // 'é' takes two bytes, the 15th and 16th: the cut falls before it.
        assert_eq!(shortened("watchkv-port-1é"), "watchkv-port-1");
        assert_eq!(shortened("short"), "short");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_calling_thread_takes_the_name() {
        let name = std::thread::spawn(|| {
            name_current_thread("watchkv-port-12345");
            std::fs::read_to_string("/proc/thread-self/comm")
        })
        .join()
        .expect("the naming thread ran");
        assert_eq!(name.expect("/proc/thread-self/comm").trim_end(), "watchkv-port-12");
    }
}
