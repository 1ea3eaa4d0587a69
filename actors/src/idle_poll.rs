//! Owns idle polling: a runtime thread that expects work within microseconds keeps polling for
//! it (its sockets, its mailbox, answers from other threads) instead of going to sleep, for a
//! short window after each sign of such work.
//!
//! Why (issue #14, one client's put p50 over `fdatasync`, profiled with `perf record` on this
//! 2-core VM): a put crosses three threads (the client-port thread that decodes it, the store
//! thread that commits it, the client-port thread again for the answer) and each crossing woke
//! a thread from sleep. On a VM whose idle vCPUs halt, a wake-up is an interrupt to a halted
//! vCPU and a switch, tens of microseconds each, more than the store's own work. Go's runtime,
//! which etcd runs on, avoids most of them by spinning idle threads briefly before parking;
//! Seastar polls for 200 µs before sleeping (`--idle-poll-time-us`). Here a thread polls only
//! when it has just done request work, for [`ActorsConfig::idle_poll`](crate::ActorsConfig)
//! (0 turns it off), and each turn of its poll first offers the CPU to any other runnable
//! thread (`sched_yield`), so polling takes only cycles nobody else wants.
//!
//! How: a task on the thread's single-threaded tokio runtime that, while the window is open,
//! yields (`tokio::task::yield_now`). A runtime with a yielded task polls its I/O driver
//! without blocking and runs whatever became ready, so the thread never sleeps while the task
//! yields; once the window closes the task waits to be woken by the next [`keep_polling`].

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::Id as RuntimeId;
use tokio::sync::Notify;

use crate::reply_route::this_threads_runtime;

/// The window, in nanoseconds, for every thread of the process (0: off). Process-wide because
/// the threads that poll (client-port workers, the store) serve one system each.
static WINDOW_NANOS: AtomicU64 = AtomicU64::new(0);

/// Sets how long a thread keeps polling after each sign of work; `Duration::ZERO` turns idle
/// polling off. Takes effect at each thread's next [`keep_polling`].
pub fn set_window(window: Duration) {
    WINDOW_NANOS.store(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The window set by [`set_window`].
pub fn window() -> Duration {
    Duration::from_nanos(WINDOW_NANOS.load(Ordering::Relaxed))
}

/// One thread's poller: when its window closes, and how to wake it. Shared with the poller's
/// task through an `Arc` only because a task spawned on a runtime must be `Send`; both sides
/// live on the same thread.
struct Poller {
    runtime: RuntimeId,
    /// The end of the window, in nanoseconds after [`epoch`].
    polling_until: AtomicU64,
    asleep: AtomicBool,
    wake: Notify,
}

thread_local! {
    /// This thread's poller, with the runtime it runs on (a thread may run several runtimes
    /// one after the other, as tests do).
    static POLLER: RefCell<Option<Arc<Poller>>> = const { RefCell::new(None) };
}

/// The instant the pollers' clocks count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `at`.
fn since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// Says that the calling thread expects work soon (it has just sent a request on and awaits
/// the answer, or has just answered a client who may send again): its runtime keeps polling
/// instead of sleeping until the window has passed, while the machine has CPU to spare.
/// Outside a single-threaded tokio runtime, or with the window 0, does nothing.
pub fn keep_polling() {
    keep_polling_for(window(), machine_has_spare_cpu);
}

/// [`keep_polling`] with its window and its check of the machine's spare CPU given.
fn keep_polling_for(window: Duration, spare_cpu: fn(u64) -> bool) {
    if window.is_zero() {
        return;
    }
    let Some(runtime) = this_threads_runtime() else { return };
    let until = since_epoch(Instant::now() + window);
    POLLER.with(|slot| {
        let mut slot = slot.borrow_mut();
        match slot.as_ref() {
            Some(poller) if poller.runtime == runtime.id() => {
                poller.polling_until.fetch_max(until, Ordering::Relaxed);
                if poller.asleep.swap(false, Ordering::Relaxed) {
                    poller.wake.notify_one();
                }
            }
            _ => {
                let poller = Arc::new(Poller {
                    runtime: runtime.id(),
                    polling_until: AtomicU64::new(until),
                    asleep: AtomicBool::new(false),
                    wake: Notify::new(),
                });
                runtime.spawn(poll(Arc::clone(&poller), spare_cpu));
                *slot = Some(poller);
            }
        }
    });
}

/// The poller's task: yields while its window is open and the machine has CPU to spare, then
/// sleeps until woken.
async fn poll(poller: Arc<Poller>, spare_cpu: fn(u64) -> bool) {
    loop {
        let now = since_epoch(Instant::now());
        if now >= poller.polling_until.load(Ordering::Relaxed) || !spare_cpu(now) {
            poller.asleep.store(true, Ordering::Relaxed);
            poller.wake.notified().await;
            continue;
        }
        offer_cpu();
        tokio::task::yield_now().await;
    }
}

/// Lets any other thread runnable on this CPU run first (one system call when none is).
fn offer_cpu() {
    #[cfg(target_os = "linux")]
    // SAFETY: no arguments; it cannot fail on Linux.
    unsafe {
        libc::sched_yield();
    }
}

/// How often the CPU pressure is read again while threads poll.
const PRESSURE_INTERVAL: Duration = Duration::from_millis(5);

/// The share of wall time during which some thread waited for a CPU (Linux's pressure stall
/// information) above which polling stops: the machine has no CPU to spare.
const PRESSURE_LIMIT: f64 = 0.05;

/// Whether the machine has CPU to spare, from `/proc/pressure/cpu` read at most every
/// [`PRESSURE_INTERVAL`]: polling pays only where a CPU would otherwise idle. A polling thread
/// yields to any thread runnable on its own CPU, but the kernel places a waking thread on an
/// idle CPU when it finds one, and a polling CPU is not idle: on a machine with no CPU to spare
/// a waking thread then queued behind busy threads elsewhere (a writer's put p99 during
/// catch-ups, `load --scenario grpc-catchup`, doubled with polling and no such check). Any
/// wait for a CPU, the polling threads' own doing or not, counts. Without the file (no PSI in
/// the kernel) polling runs as configured.
struct SpareCpu {
    /// The pressure file, opened on first use; `None` inside when it cannot be read.
    file: Mutex<Option<Option<std::fs::File>>>,
    /// When it was last read, in nanoseconds after [`epoch`].
    read_at: AtomicU64,
    /// The total stall it reported then, in microseconds.
    stalled_micros: AtomicU64,
    /// The verdict of the last two reads.
    spare: AtomicBool,
}

/// [`SpareCpu::check`] of the process's one reading, for a poller at `now` (nanoseconds after
/// [`epoch`]).
fn machine_has_spare_cpu(now: u64) -> bool {
    SPARE_CPU.check(now)
}

static SPARE_CPU: SpareCpu = SpareCpu {
    file: Mutex::new(None),
    read_at: AtomicU64::new(0),
    stalled_micros: AtomicU64::new(0),
    spare: AtomicBool::new(true),
};

impl SpareCpu {
    /// The current verdict, read again first if it is older than [`PRESSURE_INTERVAL`] and no
    /// other thread is reading it now.
    fn check(&self, now: u64) -> bool {
        let read_at = self.read_at.load(Ordering::Relaxed);
        let interval = PRESSURE_INTERVAL.as_nanos() as u64;
        if now.saturating_sub(read_at) >= interval {
            if let Ok(mut file) = self.file.try_lock() {
                let file = file.get_or_insert_with(|| std::fs::File::open("/proc/pressure/cpu").ok());
                match file.as_ref().and_then(read_stalled_micros) {
                    Some(stalled) => {
                        let before = self.stalled_micros.swap(stalled, Ordering::Relaxed);
                        let wall_micros = now.saturating_sub(read_at) / 1000;
                        // The first read, or one after a long pause, has nothing to compare
                        // with: it only sets the baseline.
                        let share = if read_at == 0 || wall_micros == 0 || wall_micros > 1_000_000 {
                            0.0
                        } else {
                            stalled.saturating_sub(before) as f64 / wall_micros as f64
                        };
                        self.spare.store(share <= PRESSURE_LIMIT, Ordering::Relaxed);
                    }
                    None => self.spare.store(true, Ordering::Relaxed),
                }
                self.read_at.store(now, Ordering::Relaxed);
            }
        }
        self.spare.load(Ordering::Relaxed)
    }
}

/// The `total=` of the `some` line of a pressure file: microseconds during which at least one
/// thread waited.
#[cfg(unix)]
fn read_stalled_micros(file: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 256];
    let n = file.read_at(&mut buf, 0).ok()?;
    parse_some_total(std::str::from_utf8(&buf[..n]).ok()?)
}

/// Without `pread` the pressure is not read: polling runs as configured.
#[cfg(not(unix))]
fn read_stalled_micros(_: &std::fs::File) -> Option<u64> {
    None
}

/// Parses `some avg10=.. avg60=.. avg300=.. total=N` out of a pressure file's text.
fn parse_some_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace().find_map(|field| field.strip_prefix("total="))?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_some_line_total_is_read() {
        let text = "some avg10=2.53 avg60=13.17 avg300=7.16 total=2054890998\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_some_total(text), Some(2_054_890_998));
        assert_eq!(parse_some_total("full avg10=0.00 total=5\n"), None);
        assert_eq!(parse_some_total("some avg10=0.00\n"), None);
    }

    /// How often the runtime's one thread has gone to sleep.
    fn parks(runtime: &tokio::runtime::Runtime) -> u64 {
        runtime.metrics().worker_park_count(0)
    }

    /// Ten short timer sleeps on `runtime`: without polling, each puts its thread to sleep.
    fn ten_short_sleeps(runtime: &tokio::runtime::Runtime) {
        runtime.block_on(async {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }

    /// While the window is open the runtime's thread never sleeps, though its only task waits
    /// on timers; once it has passed, the thread sleeps at each wait again. The window is
    /// long, so that a loaded machine still runs the ten sleeps inside it.
    #[test]
    fn a_window_keeps_the_thread_polling_then_lets_it_sleep() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let window = Duration::from_millis(500);
        let opened = Instant::now();
        runtime.block_on(async { keep_polling_for(window, |_| true) });
        let before = parks(&runtime);
        ten_short_sleeps(&runtime);
        assert!(opened.elapsed() < window, "the machine was too slow for this test's window");
        assert_eq!(parks(&runtime), before, "no sleep while polling");
        runtime.block_on(async { tokio::time::sleep(window).await });
        let before = parks(&runtime);
        ten_short_sleeps(&runtime);
        assert!(parks(&runtime) >= before + 10, "the thread sleeps at each wait once the window has passed");
    }

    /// The same, with no spare CPU: the thread sleeps at each wait though the window is open.
    #[test]
    fn without_spare_cpu_the_thread_sleeps() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async { keep_polling_for(Duration::from_millis(500), |_| false) });
        let before = parks(&runtime);
        ten_short_sleeps(&runtime);
        assert!(parks(&runtime) >= before + 10);
    }

    #[test]
    fn outside_a_runtime_or_with_no_window_nothing_polls() {
        // No runtime: nothing to keep awake, and nothing panics.
        keep_polling_for(Duration::from_millis(500), |_| true);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async { keep_polling_for(Duration::ZERO, |_| true) });
        assert!(POLLER.with(|p| p.borrow().is_none()), "no poller was started");
        let before = parks(&runtime);
        ten_short_sleeps(&runtime);
        assert!(parks(&runtime) >= before + 10);
    }
}
