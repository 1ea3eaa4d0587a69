//! Owns what the runtime asks of the OS scheduler: the catch-up thread's priority, the store
//! thread's time slice (Linux only; elsewhere no-ops), the cooperative yield of threads
//! that run stream work in bursts, and the catch-up thread's giving way to a thread that
//! offered its CPU ([`offer_cpu`], [`give_way`]).
//!
//! Why (issue #4, put p99 during a 10k-watcher catch-up, `cargo bench -p watchkv-actors --bench
//! watch -- catchup`, traced with `perf sched timehist`): on Linux's EEVDF scheduler a running
//! thread keeps its CPU for its whole time slice (over a millisecond on 2 cores) when another
//! thread of equal or lower slice wakes on that CPU, whatever their nice values. A write therefore
//! waited up to a slice behind the nice-10 catch-up scan, and the store behind a stream
//! thread's delivery burst. A `SCHED_IDLE` scan is preempted at once by any normal thread, and
//! a CPU that runs only it counts as idle when the kernel places a waking thread; a store with a
//! shorter slice than the threads around it preempts them when it wakes (`PREEMPT_SHORT`,
//! Linux 6.12 and later; earlier kernels accept and ignore the request).

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How the catch-up thread (the syncer's scans) competes for the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUpPriority {
    /// `SCHED_IDLE`: the scan runs on cycles no normal thread wants, so a catch-up never delays
    /// a write. Default. On a machine kept fully busy, catch-up then moves at the idle class's
    /// share (weight 3 against 1024 per busy thread); [`Nice`](Self::Nice) trades latency for
    /// progress there. An unprivileged process cannot leave `SCHED_IDLE` again, so the choice
    /// is made once, at start.
    #[default]
    Idle,
    /// A nice value (0..=19): a smaller CPU share under contention, but time slices as long as
    /// anyone's.
    Nice(i32),
    /// Leave the thread as started.
    Unchanged,
}

impl std::str::FromStr for CatchUpPriority {
    type Err = String;

    /// Parses `idle`, `unchanged`, or a nice value `0`..=`19` (also written `nice=N`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "idle" => Ok(Self::Idle),
            "unchanged" => Ok(Self::Unchanged),
            _ => {
                let n = s.strip_prefix("nice=").unwrap_or(s);
                match n.parse::<i32>() {
                    Ok(nice) if (0..=19).contains(&nice) => Ok(Self::Nice(nice)),
                    _ => Err(format!("expected idle, unchanged or a nice value 0..=19, got {s:?}")),
                }
            }
        }
    }
}

/// The name [`CatchUpPriority::from_str`](std::str::FromStr) parses, so a CLI can print the
/// default.
impl std::fmt::Display for CatchUpPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Idle => f.write_str("idle"),
            Self::Nice(nice) => write!(f, "{nice}"),
            Self::Unchanged => f.write_str("unchanged"),
        }
    }
}

/// Applies `priority` to the calling thread (on Linux, policy and nice value belong to the
/// thread; pid 0 names the caller). Failure is logged, not fatal: the thread runs as started.
pub(crate) fn set_catch_up_priority(priority: CatchUpPriority) {
    #[cfg(target_os = "linux")]
    {
        let rc = match priority {
            CatchUpPriority::Idle => {
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: a system call wrapper taking a pointer to a live, initialised
                // `sched_param` that it only reads; failure comes back as -1 and errno.
                unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) }
            }
            // SAFETY: integer arguments only; failure comes back as -1 and errno.
            CatchUpPriority::Nice(nice) => unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) },
            CatchUpPriority::Unchanged => 0,
        };
        if rc != 0 {
            tracing::warn!(?priority, error = %std::io::Error::last_os_error(), "could not set the catch-up thread's priority");
        }
        IDLE_CLASS.set(priority == CatchUpPriority::Idle && rc == 0);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

thread_local! {
    /// Whether the calling thread runs at `SCHED_IDLE` ([`set_catch_up_priority`] succeeded
    /// with [`CatchUpPriority::Idle`]): only then does [`give_way`] hand offered CPUs back. A
    /// catch-up thread at a nice value competes as any thread does, by choice.
    static IDLE_CLASS: Cell<bool> = const { Cell::new(false) };
}

/// The kernel's `struct sched_attr` (`SCHED_ATTR_SIZE_VER1`, 56 bytes), which the libc crate
/// does not define.
#[cfg(target_os = "linux")]
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    /// For `SCHED_OTHER`: the requested time slice in nanoseconds (0.1-100 ms; 0 = default).
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// `SCHED_FLAG_KEEP_POLICY` (linux/sched.h): change the parameters, not the policy.
#[cfg(target_os = "linux")]
const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;

/// Asks for a time slice of `slice` for the calling thread, keeping its policy and nice value.
/// Failure is logged, not fatal.
pub(crate) fn set_time_slice(slice: Duration) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: clears this thread's errno (a thread-local the C library owns).
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: integer arguments only; -1 is a valid nice value, told apart by errno.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        if nice == -1 && std::io::Error::last_os_error().raw_os_error().is_some_and(|e| e != 0) {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not read the store thread's nice value");
            return;
        }
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: 0,
            sched_flags: SCHED_FLAG_KEEP_POLICY,
            sched_nice: nice,
            sched_priority: 0,
            sched_runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
            sched_deadline: 0,
            sched_period: 0,
            sched_util_min: 0,
            sched_util_max: 0,
        };
        // SAFETY: `sched_setattr(pid 0 = this thread, attr, flags 0)`; the kernel reads `size`
        // bytes from a live, initialised struct laid out as its own; failure is -1 and errno.
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if rc != 0 {
            tracing::warn!(?slice, error = %std::io::Error::last_os_error(), "could not set the store thread's time slice");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = slice;
}

/// Longest a thread runs catch-up deliveries or watch creations back to back before it offers
/// the CPU to others. Live deliveries never yield and are not reported (they count only when
/// they fall inside a gap of at most [`BURST_GAP`]): they are what clients wait for, while
/// catch-up is background work like the scan that feeds it.
///
/// Chosen by put p99 during the bench's 10k-watcher catch-up (`cargo bench -p watchkv-actors
/// --bench watch -- catchup`, three runs each, measured while every delivery still yielded;
/// the catch-up case is the same either way, its writes being to keys nobody watches): lower
/// at 50 µs than at 100 µs, and higher again at 25 µs, where the yields cost more than they
/// help. With every delivery yielding the mailbox bench looked worse, but that bench was then
/// too noisy to tell.
pub(crate) const STREAM_BURST: Duration = Duration::from_micros(50);

/// Pieces of work closer together than this count as one burst (the time between two handlers
/// of a busy thread is the runtime's own bookkeeping, a few microseconds).
const BURST_GAP: Duration = Duration::from_micros(20);

thread_local! {
    /// The calling thread's current burst of stream work: when it began and when its last piece
    /// ended.
    static BURST: Cell<Option<(Instant, Instant)>> = const { Cell::new(None) };
}

/// Called after a piece of stream work that began at `started`: once the calling thread has
/// done such work for [`STREAM_BURST`] with no pause, it yields the CPU (`sched_yield`), so a
/// writer or the store thread queued behind it runs now, not at the next scheduler tick.
///
/// Why (issue #4, `perf sched timehist` of `cargo bench -p watchkv-actors --bench watch --
/// catchup`): a catch-up pass hands a stream thread hundreds of events at once, and the store
/// thread, woken by a put onto that CPU, waited milliseconds behind the burst despite its
/// short slice. The likely reason (inferred from the trace, not read off the kernel): EEVDF
/// preempts on wake-up only for a waking thread that is eligible, i.e. has not run more than
/// its share lately, and the store often has after serving many small messages; otherwise it
/// waits for the next tick (4 ms at `HZ=250`). A yield with nobody waiting costs one system
/// call.
pub(crate) fn yield_after_burst(started: Instant) {
    let now = Instant::now();
    BURST.with(|burst| {
        let (next, yield_now) = burst_step(burst.get(), started, now);
        if yield_now {
            offer_cpu();
        }
        burst.set(next);
    });
}

/// Threads of the process inside [`offer_cpu`], in all and per CPU (`cpu % 64`), read by the
/// catch-up thread at its pauses.
static OFFERS: CpuOffers = CpuOffers::new();

/// Counts of threads that offered their CPU and have not had it back, per CPU.
struct CpuOffers {
    total: AtomicUsize,
    /// Index `cpu % 64`: two CPUs 64 apart share a count, which at worst costs the catch-up
    /// thread a yield nobody needed.
    on_cpu: [AtomicU32; 64],
}

impl CpuOffers {
    const fn new() -> Self {
        Self { total: AtomicUsize::new(0), on_cpu: [const { AtomicU32::new(0) }; 64] }
    }

    /// A thread on `cpu` offers it; returns the count's index, for [`Self::end`].
    fn begin(&self, cpu: usize) -> usize {
        let slot = cpu % self.on_cpu.len();
        self.on_cpu[slot].fetch_add(1, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        slot
    }

    /// The offer counted at `slot` is over (its thread runs again, on whichever CPU).
    fn end(&self, slot: usize) {
        self.on_cpu[slot].fetch_sub(1, Ordering::SeqCst);
        self.total.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether a thread offered `cpu` (`None`: the caller does not know its CPU; then any
    /// offer counts) and waits for it still. One load when nobody offers anything.
    fn offered(&self, cpu: Option<usize>) -> bool {
        if self.total.load(Ordering::Relaxed) == 0 {
            return false;
        }
        cpu.is_none_or(|cpu| self.on_cpu[cpu % self.on_cpu.len()].load(Ordering::Relaxed) > 0)
    }
}

/// The CPU the calling thread runs on, if the OS says.
fn current_cpu() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: no arguments; answered from the vDSO or rseq area, -1 on failure.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Lets any other thread runnable on this CPU run first (`sched_yield`; one system call when
/// none is), and marks the CPU as offered meanwhile, so that the catch-up thread, if it is the
/// thread the kernel runs instead, hands the CPU back at its next pause ([`give_way`]).
///
/// Why (issue #14, a writer's put p99 during catch-ups, traced with `perf sched` on this 2-core
/// VM): a thread that yields stays runnable, so nothing wakes it again. When the thread that
/// ran instead was the `SCHED_IDLE` catch-up scan, the yielder (a client-port thread polling
/// for a put's answer, in the trace) waited until the scan slept or the scheduler's tick
/// came, up to 4 ms at `HZ=250`, while the other CPU idled; a waking thread preempts an
/// idle-class one at once, a yielded one never does. With light catch-up passes (five watchers
/// every 10 ms) each pass cost about one put over a millisecond: put p99 during them 1.04–1.71
/// ms in 21 runs, 0.52–0.67 ms with idle polling off, 0.59–0.80 ms with the CPU handed back
/// (docs/benchmarks.md).
pub(crate) fn offer_cpu() {
    offer_cpu_counted_in(&OFFERS);
}

/// [`offer_cpu`], counted in `offers`.
fn offer_cpu_counted_in(offers: &CpuOffers) {
    let slot = offers.begin(current_cpu().unwrap_or(0));
    std::thread::yield_now();
    offers.end(slot);
}

/// Called by the catch-up thread between pieces of its work (a history row, a watcher, a
/// stream): if it runs at `SCHED_IDLE` and a thread offered this CPU ([`offer_cpu`]) and so
/// let it run, yields the CPU back; an idle-class thread's yield hands it to any normal thread
/// runnable there. Costs a thread-local read and one atomic load while nobody offers.
pub(crate) fn give_way() {
    give_way_to(&OFFERS);
}

/// [`give_way`] to the offers counted in `offers`; returns whether it yielded.
fn give_way_to(offers: &CpuOffers) -> bool {
    if IDLE_CLASS.get() && offers.offered(current_cpu()) {
        std::thread::yield_now();
        true
    } else {
        false
    }
}

/// The burst bookkeeping of [`yield_after_burst`]: given the burst so far and a piece of work
/// from `started` to `now`, returns the burst after it and whether to yield (which ends it).
fn burst_step(burst: Option<(Instant, Instant)>, started: Instant, now: Instant) -> (Option<(Instant, Instant)>, bool) {
    let begun = match burst {
        Some((begun, last)) if started.saturating_duration_since(last) <= BURST_GAP => begun,
        _ => started,
    };
    if now.saturating_duration_since(begun) >= STREAM_BURST {
        (None, true)
    } else {
        (Some((begun, now)), false)
    }
}

#[cfg(test)]
mod burst_tests {
    use super::*;

    /// `n` percent of [`STREAM_BURST`].
    fn pct(n: u32) -> Duration {
        STREAM_BURST * n / 100
    }

    #[test]
    fn adjacent_pieces_add_up_to_a_yield() {
        let t0 = Instant::now();
        // 40% of a burst, a gap well under BURST_GAP, 40% more: one burst, no yield yet.
        let (b, y) = burst_step(None, t0, t0 + pct(40));
        assert!(!y);
        let (b, y) = burst_step(b, t0 + pct(45), t0 + pct(85));
        assert!(!y);
        assert_eq!(b, Some((t0, t0 + pct(85))));
        // 20% more crosses STREAM_BURST: yield, and the next piece starts a new burst.
        let (b, y) = burst_step(b, t0 + pct(86), t0 + pct(106));
        assert!(y);
        assert_eq!(b, None);
        let (b, y) = burst_step(b, t0 + pct(107), t0 + pct(110));
        assert!(!y);
        assert_eq!(b, Some((t0 + pct(107), t0 + pct(110))));
    }

    #[test]
    fn a_pause_starts_a_new_burst() {
        let t0 = Instant::now();
        let (b, _) = burst_step(None, t0, t0 + pct(90));
        // Idle for longer than BURST_GAP: the earlier 90% no longer counts.
        let later = t0 + pct(90) + BURST_GAP + Duration::from_micros(1);
        let (b, y) = burst_step(b, later, later + pct(20));
        assert!(!y);
        assert_eq!(b, Some((later, later + pct(20))));
    }

    #[test]
    fn one_long_piece_yields_at_once() {
        let t0 = Instant::now();
        assert_eq!(burst_step(None, t0, t0 + STREAM_BURST), (None, true));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Whether the running kernel is at least `major.minor`.
    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
    }

    /// The calling thread's time slice as the kernel reports it (`se.slice`, nanoseconds).
    fn thread_slice_ns() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[test]
    fn catch_up_priority_parses() {
        assert_eq!("idle".parse(), Ok(CatchUpPriority::Idle));
        assert_eq!("unchanged".parse(), Ok(CatchUpPriority::Unchanged));
        assert_eq!("10".parse(), Ok(CatchUpPriority::Nice(10)));
        assert_eq!("nice=19".parse(), Ok(CatchUpPriority::Nice(19)));
        for bad in ["-1", "20", "nice=", "fast", ""] {
            assert!(bad.parse::<CatchUpPriority>().is_err(), "{bad:?}");
        }
    }

    /// The struct matches the kernel's first published layout.
    #[test]
    fn sched_attr_has_the_kernel_size() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    }

    /// Both requests take effect on the calling thread: the policy and nice value read back.
    #[test]
    fn requests_apply_to_the_calling_thread() {
        std::thread::spawn(|| {
            // Raising a nice value needs no privilege, so this holds under any test runner.
            set_catch_up_priority(CatchUpPriority::Nice(19));
            // SAFETY: reads this thread's nice value.
            assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, 19);
            // SAFETY: reads this thread's policy.
            let policy = unsafe { libc::sched_getscheduler(0) };
            set_time_slice(Duration::from_micros(100));
            // SAFETY: reads this thread's policy and nice value.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, policy, "the policy is kept");
            // SAFETY: as above.
            assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, 19, "the nice value is kept");
            if kernel_at_least(6, 12) {
                assert_eq!(thread_slice_ns(), Some(100_000), "custom slices exist from Linux 6.12");
            }
            set_catch_up_priority(CatchUpPriority::Idle);
            // SAFETY: reads this thread's policy.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
        })
        .join()
        .expect("thread");
    }

    /// Pins the calling thread to `cpu`; false if the OS refuses.
    fn pin_to(cpu: usize) -> bool {
        // SAFETY: a zeroed `cpu_set_t` is the empty set; CPU_SET writes inside it, and
        // `sched_setaffinity` (pid 0: this thread) reads `size_of` bytes of it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }

    /// The catch-up thread's side of an offer: a `SCHED_IDLE` thread that shares its CPU with
    /// a thread offering it sees the offer at its pauses and yields. The offers are counted
    /// apart from the process's own, which other tests' pollers add to.
    #[test]
    fn an_idle_class_thread_gives_way_on_a_cpu_offered_to_it() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;

        static TEST_OFFERS: CpuOffers = CpuOffers::new();
        let cpu = current_cpu().expect("this thread's CPU");
        let deadline = Instant::now() + Duration::from_secs(30);
        let gave_way = Arc::new(AtomicBool::new(false));
        let scan = {
            let gave_way = Arc::clone(&gave_way);
            std::thread::spawn(move || {
                assert!(pin_to(cpu), "pin the scan to CPU {cpu}");
                set_catch_up_priority(CatchUpPriority::Idle);
                // SAFETY: reads this thread's policy.
                assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
                while !gave_way.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if give_way_to(&TEST_OFFERS) {
                        gave_way.store(true, Ordering::Relaxed);
                    }
                }
            })
        };
        let offering = {
            let gave_way = Arc::clone(&gave_way);
            std::thread::spawn(move || {
                assert!(pin_to(cpu), "pin the offering thread to CPU {cpu}");
                while !gave_way.load(Ordering::Relaxed) && Instant::now() < deadline {
                    offer_cpu_counted_in(&TEST_OFFERS);
                }
            })
        };
        // Both threads end by the deadline whatever happens to the other.
        let offered = offering.join();
        let scanned = scan.join();
        offered.expect("offering thread");
        scanned.expect("scan thread");
        assert!(gave_way.load(Ordering::Relaxed), "the idle-class thread never saw the offer of its CPU");
    }

    /// A catch-up thread left at a normal priority keeps competing as it chose to: it does not
    /// give way, whatever is offered.
    #[test]
    fn a_thread_not_at_the_idle_class_does_not_give_way() {
        static TEST_OFFERS: CpuOffers = CpuOffers::new();
        std::thread::spawn(|| {
            set_catch_up_priority(CatchUpPriority::Nice(19));
            let slot = TEST_OFFERS.begin(current_cpu().unwrap_or(0));
            assert!(TEST_OFFERS.offered(current_cpu()));
            assert!(!give_way_to(&TEST_OFFERS));
            TEST_OFFERS.end(slot);
        })
        .join()
        .expect("thread");
    }
}

#[cfg(test)]
mod offer_tests {
    use super::CpuOffers;

    #[test]
    fn offers_are_counted_per_cpu_until_they_end() {
        let offers = CpuOffers::new();
        assert!(!offers.offered(Some(3)) && !offers.offered(None));
        let first = offers.begin(3);
        assert!(offers.offered(Some(3)));
        assert!(offers.offered(Some(67)), "CPUs 64 apart share a count");
        assert!(!offers.offered(Some(4)), "another CPU's offer is not this one's");
        assert!(offers.offered(None), "a thread that does not know its CPU heeds any offer");
        let second = offers.begin(3);
        offers.end(first);
        assert!(offers.offered(Some(3)), "the second offer still waits");
        offers.end(second);
        assert!(!offers.offered(Some(3)) && !offers.offered(None));
    }
}

#[cfg(test)]
mod priority_tests {
    use super::CatchUpPriority;

    #[test]
    fn a_priority_prints_what_it_parses() {
        for p in
            [CatchUpPriority::Idle, CatchUpPriority::Nice(0), CatchUpPriority::Nice(19), CatchUpPriority::Unchanged]
        {
            assert_eq!(p.to_string().parse::<CatchUpPriority>(), Ok(p));
        }
    }
}
