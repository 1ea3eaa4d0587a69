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
//! Seastar polls for 200 µs before sleeping (`--idle-poll-time-us`). Here a thread polls for
//! [`ActorsConfig::idle_poll`](crate::ActorsConfig) (0 turns it off) after a write: the thread
//! that sent it to the store (until its answer comes), the thread that got the answers (for the
//! client's next request), and the store's thread after a commit (for the next write).
//!
//! Polling costs CPU time, so it gives way. Each turn first offers the CPU to any other thread
//! runnable on it (`sched_yield`; under EEVDF that moves only the poller's own deadline, so a
//! thread of another cgroup may wait out the poller's slice). A yielded thread is not woken
//! again, so the `SCHED_IDLE` catch-up thread, when it is what runs instead, hands the CPU back
//! at its next pause ([`crate::sched::give_way`]) rather than keeping it until the tick.
//! While watch events flow, polling stops when Linux's CPU pressure shows threads waiting for
//! a CPU ([`SpareCpu`]): a polling CPU is not idle to the kernel, which then queues a waking
//! thread behind the delivery work. And it is off in a cgroup with a CPU quota, where it would
//! spend the quota.
//!
//! How: a task on the thread's single-threaded tokio runtime that, while the window is open,
//! yields (`tokio::task::yield_now`). A runtime with a yielded task polls its I/O driver
//! without blocking and runs whatever became ready, so the thread never sleeps while the task
//! yields; once the window closes the task waits to be woken by the next [`keep_polling`].

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use tokio::runtime::Id as RuntimeId;
use tokio::sync::Notify;

use crate::reply_route::this_threads_runtime;

/// The window, in nanoseconds, for every thread of the process (0: off). Process-wide because
/// the threads that poll (client-port workers, the store) serve one system each.
static WINDOW_NANOS: AtomicU64 = AtomicU64::new(0);

/// Sets how long a thread keeps polling after each sign of work; `Duration::ZERO` turns idle
/// polling off. Takes effect at each thread's next [`keep_polling`]. The caller checks the
/// range ([`crate::ActorsConfig::with_idle_poll`]).
pub(crate) fn set_window(window: Duration) {
    WINDOW_NANOS.store(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The window set by the last system started (0: off).
pub fn window() -> Duration {
    Duration::from_nanos(WINDOW_NANOS.load(Ordering::Relaxed))
}

/// One thread's poller: when its window closes, and how to wake it. Shared with the poller's
/// task through an `Arc` because a task spawned on a runtime must be `Send`.
struct Poller {
    runtime: RuntimeId,
    /// The thread whose work opens the window: the poller polls only if its task runs there.
    thread: ThreadId,
    /// The end of the window, in nanoseconds after [`epoch`].
    polling_until: AtomicU64,
    asleep: AtomicBool,
    /// Set when the poller is given up: its task ends at its next turn.
    retired: AtomicBool,
    wake: Notify,
}

impl Poller {
    /// Ends the poller's task (at its next turn, or at once if it sleeps).
    fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
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

/// Says that the calling thread expects work soon (it has just sent a write on and awaits the
/// answer, or has just answered writers who may send again): its runtime keeps polling instead
/// of sleeping until the window has passed, unless [`SpareCpu`] or a CPU quota says otherwise.
/// Outside a single-threaded tokio runtime's own thread, or with the window 0, does nothing.
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
    // Quietly nothing while the thread's locals are being destroyed.
    let _ = POLLER.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some(poller) = slot.as_ref().filter(|p| p.runtime == runtime.id()) {
            if !poller.retired.load(Ordering::SeqCst) {
                poller.polling_until.fetch_max(until, Ordering::SeqCst);
                if poller.asleep.swap(false, Ordering::SeqCst) {
                    poller.wake.notify_one();
                }
            }
            return;
        }
        let poller = Arc::new(Poller {
            runtime: runtime.id(),
            thread: std::thread::current().id(),
            polling_until: AtomicU64::new(until),
            asleep: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            wake: Notify::new(),
        });
        runtime.spawn(poll(Arc::clone(&poller), spare_cpu));
        // A poller of a runtime this thread no longer runs would otherwise wait forever.
        if let Some(previous) = slot.replace(poller) {
            previous.retire();
        }
    });
}

/// The poller's task: yields while its window is open and the machine has CPU to spare, then
/// sleeps until woken.
async fn poll(poller: Arc<Poller>, spare_cpu: fn(u64) -> bool) {
    // A thread that has only entered the runtime (one of its blocking pool) does not run its
    // tasks: polling would spin the runtime's own thread for nothing. Its poller stays, retired,
    // so that it asks no more.
    if std::thread::current().id() != poller.thread {
        poller.retired.store(true, Ordering::SeqCst);
        return;
    }
    loop {
        // First behind the tasks already queued: the write or the answers that opened the
        // window go on before this turn's check and yield.
        tokio::task::yield_now().await;
        if poller.retired.load(Ordering::SeqCst) {
            return;
        }
        let now = since_epoch(Instant::now());
        if now >= poller.polling_until.load(Ordering::SeqCst) || !spare_cpu(now) {
            poller.asleep.store(true, Ordering::SeqCst);
            poller.wake.notified().await;
            continue;
        }
        offer_cpu();
    }
}

/// Lets any other thread runnable on this CPU run first (one system call when none is); the
/// catch-up thread, if it is what runs, gives the CPU back at its next pause
/// ([`crate::sched::offer_cpu`]). Linux only, as before the hand-back: elsewhere a turn only
/// yields to the runtime's other tasks.
fn offer_cpu() {
    #[cfg(target_os = "linux")]
    crate::sched::offer_cpu();
}

/// How often the CPU pressure is read again while threads poll.
const PRESSURE_INTERVAL: Duration = Duration::from_millis(5);

/// A reading older than this is only a baseline: the stall since then says little of now.
const STALE_READING: Duration = Duration::from_millis(20);

/// The share of wall time during which some thread waited for a CPU (Linux's pressure stall
/// information, `some`) above which polling stops while watch events flow.
const PRESSURE_LIMIT: f64 = 0.05;

/// Whether the machine has CPU to spare while watch events flow, from `/proc/pressure/cpu`
/// read at most every [`PRESSURE_INTERVAL`] by whichever polling thread finds the verdict old.
/// A polling thread yields to any thread runnable on its own CPU, but the kernel places a
/// waking thread on an idle CPU when it finds one, and a polling CPU is not idle: while events
/// were delivered to streams, a waking thread then queued behind the delivery work and the
/// watchers' clients elsewhere (a writer's put p99 during catch-ups, `load --scenario
/// grpc-catchup`, doubled with polling and no such check; the fan-out's events/s fell a few
/// percent). With no deliveries the pressure is not heeded: at 64 clients on 64 connections
/// polling through it gave more puts/s (up to 30% in two of three pairs, docs/benchmarks.md).
/// The pressure itself did not tell the two cases apart (the server's own threads' run-queue
/// waits, `/proc/<pid>/task/*/schedstat`, accounted for all of it in both); whether events
/// flow does. Without the file (no PSI in the kernel) polling runs as configured.
struct SpareCpu {
    /// The pressure file and the last reading, taken by one thread at a time.
    pressure: Mutex<PressureReading>,
    /// When the verdict is next due, in nanoseconds after [`epoch`].
    next_read_at: AtomicU64,
    /// The last verdict.
    spare: AtomicBool,
}

/// The pressure file and what it said last.
struct PressureReading {
    /// `None` until first opened; then `None` inside when it cannot be opened.
    file: Option<Option<std::fs::File>>,
    /// When it was last read (nanoseconds after [`epoch`]) and the total stall it reported
    /// (microseconds); `None` after a failed read.
    last: Option<(u64, u64)>,
}

/// Whether watch events were delivered to a stream, by any system of the process, since the
/// last pressure reading.
static DELIVERED: AtomicBool = AtomicBool::new(false);

/// Notes a delivery of watch events to a stream, for [`SpareCpu`]: while events flow, polling
/// gives way to CPU pressure. Reads before it writes, so that the deliveries between two
/// readings write the shared flag once, not once each.
pub(crate) fn note_delivery() {
    if !DELIVERED.load(Ordering::Relaxed) {
        DELIVERED.store(true, Ordering::Relaxed);
    }
}

static SPARE_CPU: SpareCpu = SpareCpu {
    pressure: Mutex::new(PressureReading { file: None, last: None }),
    next_read_at: AtomicU64::new(0),
    spare: AtomicBool::new(true),
};

/// Whether polling may go on at `now` (nanoseconds after [`epoch`]): not in a cgroup with a CPU
/// quota, and otherwise as [`SpareCpu::check`] finds.
fn machine_has_spare_cpu(now: u64) -> bool {
    static QUOTA_LIMITED: OnceLock<bool> = OnceLock::new();
    if *QUOTA_LIMITED.get_or_init(|| {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        cpu_quota_limited(Path::new("/sys/fs/cgroup"), &cgroups)
    }) {
        return false;
    }
    SPARE_CPU.check(now)
}

impl SpareCpu {
    /// The current verdict, read again first if it is due and no other thread is reading it.
    fn check(&self, now: u64) -> bool {
        if now >= self.next_read_at.load(Ordering::Relaxed) {
            if let Ok(mut pressure) = self.pressure.try_lock() {
                // Again under the lock: another thread may have read it since.
                if now >= self.next_read_at.load(Ordering::Relaxed) {
                    let delivering = DELIVERED.swap(false, Ordering::Relaxed);
                    let file = pressure.file.get_or_insert_with(|| std::fs::File::open("/proc/pressure/cpu").ok());
                    let verdict = match file.as_ref().and_then(read_stalled_micros) {
                        Some(stalled) => {
                            let verdict = spare_verdict(delivering, pressure.last, now, stalled);
                            pressure.last = Some((now, stalled));
                            verdict
                        }
                        None => {
                            pressure.last = None;
                            true
                        }
                    };
                    self.spare.store(verdict, Ordering::Relaxed);
                    self.next_read_at.store(now + PRESSURE_INTERVAL.as_nanos() as u64, Ordering::Relaxed);
                }
            }
        }
        self.spare.load(Ordering::Relaxed)
    }
}

/// The verdict of a reading of `stalled_micros` total stall at `now`, given the reading before
/// it (`(when, stall)`) and whether watch events were delivered between the two: with no
/// deliveries, spare; with some, whether threads waited for a CPU at most [`PRESSURE_LIMIT`] of
/// the time between the two. With no reading before, or one older than [`STALE_READING`], this
/// reading is only the baseline and the CPU counts as spare until the next.
fn spare_verdict(delivering: bool, previous: Option<(u64, u64)>, now: u64, stalled_micros: u64) -> bool {
    if !delivering {
        return true;
    }
    let Some((then, stalled_then)) = previous else { return true };
    let wall = Duration::from_nanos(now.saturating_sub(then));
    if wall.is_zero() || wall > STALE_READING {
        return true;
    }
    let stalled = stalled_micros.saturating_sub(stalled_then) as f64;
    stalled / wall.as_micros() as f64 <= PRESSURE_LIMIT
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

/// Whether the process's cgroup, or one above it, caps its CPU time (`cpu.max` other than
/// `max` in cgroup v2, a positive `cpu.cfs_quota_us` in v1's `cpu` hierarchy), given the
/// cgroup file system's mount point and the text of `/proc/self/cgroup`. Only the usual
/// mount points are looked at (`<root>` and `<root>/unified` for v2, `<root>/cpu` and
/// `<root>/cpu,cpuacct` for v1).
fn cpu_quota_limited(root: &Path, proc_self_cgroup: &str) -> bool {
    proc_self_cgroup.lines().any(|line| {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            return false;
        };
        let (mounts, file): (&[&str], &str) = if controllers.is_empty() {
            (&["", "unified"], "cpu.max")
        } else if controllers.split(',').any(|c| c == "cpu") {
            (&["cpu", "cpu,cpuacct"], "cpu.cfs_quota_us")
        } else {
            return false;
        };
        let relative = path.trim_start_matches('/');
        mounts.iter().any(|mount| {
            let mount = root.join(mount);
            let mut dir = Some(mount.join(relative));
            while let Some(at) = dir {
                if let Ok(text) = std::fs::read_to_string(at.join(file)) {
                    let quota = text.split_whitespace().next().unwrap_or("max");
                    if quota != "max" && quota.parse::<i64>().is_ok_and(|q| q > 0) {
                        return true;
                    }
                }
                dir = if at == mount || !at.starts_with(&mount) { None } else { at.parent().map(Path::to_path_buf) };
            }
            false
        })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use super::*;

    #[test]
    fn the_some_line_total_is_read() {
        let text = "some avg10=2.53 avg60=13.17 avg300=7.16 total=2054890998\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_some_total(text), Some(2_054_890_998));
        assert_eq!(parse_some_total("full avg10=0.00 total=5\n"), None);
        assert_eq!(parse_some_total("some avg10=0.00\n"), None);
    }

    #[test]
    fn while_events_flow_the_verdict_compares_the_stall_with_the_wall_time_between_readings() {
        let ms = |n: u64| n * 1_000_000;
        // 5 ms apart: 200 µs of stall is 4%, spare; 400 µs is 8%, not.
        assert!(spare_verdict(true, Some((ms(10), 1_000)), ms(15), 1_200));
        assert!(!spare_verdict(true, Some((ms(10), 1_000)), ms(15), 1_400));
        // No reading before, or one too old to say anything of now: a baseline, spare.
        assert!(spare_verdict(true, None, ms(15), 1_000_000));
        assert!(spare_verdict(true, Some((ms(10), 0)), ms(10) + STALE_READING.as_nanos() as u64 + 1, 1_000_000));
        assert!(spare_verdict(true, Some((ms(10), 0)), ms(10), 5));
        // No events delivered meanwhile: the pressure is not heeded.
        assert!(spare_verdict(false, Some((ms(10), 1_000)), ms(15), 5_000));
    }

    #[test]
    fn a_cpu_quota_in_the_processs_cgroup_or_above_is_found() {
        let root = tempfile::tempdir().expect("dir");
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(path, text).expect("write");
        };
        write("sys.slice/app/cpu.max", "max 100000\n");
        assert!(!cpu_quota_limited(root.path(), "0::/sys.slice/app\n"), "no cap");
        write("sys.slice/cpu.max", "50000 100000\n");
        assert!(cpu_quota_limited(root.path(), "0::/sys.slice/app\n"), "a parent's cap");
        assert!(!cpu_quota_limited(root.path(), "0::/other\n"), "another cgroup's cap");
        write("cpu,cpuacct/job/cpu.cfs_quota_us", "-1\n");
        assert!(!cpu_quota_limited(root.path(), "2:cpu,cpuacct:/job\n"), "v1, no cap");
        write("cpu,cpuacct/job/cpu.cfs_quota_us", "20000\n");
        assert!(cpu_quota_limited(root.path(), "2:cpu,cpuacct:/job\n"), "v1 cap");
        assert!(!cpu_quota_limited(root.path(), "4:memory:/job\n"), "not the cpu hierarchy");
        assert!(!cpu_quota_limited(root.path(), ""), "no cgroups");
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

    /// This thread's poller.
    fn this_threads_poller() -> Arc<Poller> {
        POLLER.with(|p| p.borrow().as_ref().map(Arc::clone)).expect("a poller")
    }

    /// Closes this thread's window now, as if it had passed.
    fn close_window() {
        this_threads_poller().polling_until.store(0, Ordering::SeqCst);
    }

    /// A window far longer than the test needs, closed by the test itself, so that a loaded
    /// machine still runs the ten sleeps inside it.
    const LONG: Duration = Duration::from_secs(30);

    /// While the window is open the runtime's thread never sleeps, though its only task waits
    /// on timers; once it has closed, the thread sleeps at each wait again; the next sign of
    /// work wakes the sleeping poller and the thread polls again.
    #[test]
    fn a_window_keeps_the_thread_polling_then_lets_it_sleep_until_the_next() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        for round in 0..2 {
            runtime.block_on(async { keep_polling_for(LONG, |_| true) });
            let before = parks(&runtime);
            ten_short_sleeps(&runtime);
            assert_eq!(parks(&runtime), before, "round {round}: no sleep while polling");
            close_window();
            let before = parks(&runtime);
            ten_short_sleeps(&runtime);
            assert!(parks(&runtime) >= before + 10, "round {round}: the thread sleeps once the window has closed");
            assert!(this_threads_poller().asleep.load(Ordering::SeqCst), "round {round}: the poller sleeps");
        }
    }

    /// The same, with no spare CPU: the thread sleeps at each wait though the window is open.
    #[test]
    fn without_spare_cpu_the_thread_sleeps() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async { keep_polling_for(LONG, |_| false) });
        let before = parks(&runtime);
        ten_short_sleeps(&runtime);
        assert!(parks(&runtime) >= before + 10);
    }

    #[test]
    fn outside_a_runtime_or_with_no_window_nothing_polls() {
        // No runtime: nothing to keep awake, and nothing panics.
        keep_polling_for(LONG, |_| true);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async { keep_polling_for(Duration::ZERO, |_| true) });
        assert!(POLLER.with(|p| p.borrow().is_none()), "no poller was started");
        let before = parks(&runtime);
        ten_short_sleeps(&runtime);
        assert!(parks(&runtime) >= before + 10);
    }

    /// A thread of the runtime's blocking pool has entered the runtime but does not run its
    /// tasks: its poller gives up at its first turn and asks no more.
    #[test]
    fn a_blocking_pool_thread_does_not_poll() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let poller = runtime.block_on(async {
            tokio::task::spawn_blocking(|| {
                keep_polling_for(LONG, |_| true);
                this_threads_poller()
            })
            .await
            .expect("blocking task")
        });
        let before = parks(&runtime);
        ten_short_sleeps(&runtime);
        assert!(poller.retired.load(Ordering::SeqCst), "the poller gave up");
        assert!(parks(&runtime) >= before + 10, "the runtime's thread sleeps");
    }

    /// A thread that runs another runtime gets a poller there; the previous one's task ends.
    #[test]
    fn a_new_runtime_retires_the_previous_poller() {
        let first = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        first.block_on(async { keep_polling_for(LONG, |_| true) });
        let previous: Weak<Poller> = Arc::downgrade(&this_threads_poller());
        let second = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        second.block_on(async { keep_polling_for(LONG, |_| true) });
        close_window();
        // The first runtime runs its poller's task again, which finds itself retired and ends.
        first.block_on(async {
            for _ in 0..1000 {
                if previous.strong_count() == 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        });
        assert!(previous.upgrade().is_none(), "the previous poller's task has ended");
    }
}
