//! The writer of grpc-fanout: one `etcd_client` connection putting `--puts` values on the
//! `--keys` watched keys round robin (put `seq` on key `seq % keys`), `--in-flight` at a time (or
//! paced at `--rate` with `--in-flight 0`); each value starts with its sequence number, whose
//! send time goes into `Shared::sent_us`.
//!
//! The writer runs on a thread of its own, in a single-threaded actix-rt system of its own
//! (`spawn_writer`, also used by grpc-catchup's writer), and connects from there, so that its
//! connection's I/O runs there too: on the main thread its puts would wait behind the decoding of
//! the watch events, and its put latencies would measure that queueing rather than the server.
//! The send times are atomics that the watch streams read on the main thread; both threads take
//! their times against the same `Instant` epoch.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, KvClient};
use tokio::sync::oneshot;

use crate::args::Args;

/// Runs `work` on a new thread, in a single-threaded actix-rt system of its own (so that the
/// connections it opens do their I/O on that thread); its result comes back on the receiver
/// (which fails if the thread panicked). With `fifo` (`--writer-fifo`) the thread first takes
/// `SCHED_FIFO` priority 1, and fails if refused.
pub fn spawn_writer<T, F, Fut>(fifo: bool, work: F) -> Result<oneshot::Receiver<T>, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (tx, rx) = oneshot::channel();
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("load-writer".into())
        .spawn(move || {
            let started = if fifo { realtime() } else { Ok(()) };
            let failed = started.is_err();
            let _ = started_tx.send(started);
            if !failed {
                let _ = tx.send(actix_rt::System::new().block_on(work()));
            }
        })
        .map_err(|e| format!("writer thread: {e}"))?;
    // The thread answers as soon as it runs, before its work.
    match started_rx.recv() {
        Ok(Ok(())) => Ok(rx),
        Ok(Err(e)) => {
            Err(format!("--writer-fifo: the writer's thread could not take SCHED_FIFO ({e}; it needs CAP_SYS_NICE)"))
        }
        Err(_) => Err("the writer's thread ended before it started".into()),
    }
}

/// Moves the calling thread to `SCHED_FIFO` at priority 1: it then runs whenever it is ready,
/// ahead of every normal thread.
fn realtime() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: a system call wrapper that only reads the live `sched_param`; pid 0 is the caller.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits for a result of the writer's thread, at most `limit`.
pub async fn from_writer<T>(rx: oneshot::Receiver<T>, limit: Duration) -> Result<T, String> {
    match actix_rt::time::timeout(limit, rx).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(_)) => Err("the writer's thread ended without an answer".into()),
        Err(_) => Err(format!("no answer from the writer's thread in {} s", limit.as_secs())),
    }
}

/// grpc-fanout's writer, connected on its own thread and waiting for `run`.
pub struct Writer {
    go: oneshot::Sender<()>,
    done: oneshot::Receiver<Option<Written>>,
    limit: Duration,
}

impl Writer {
    /// Starts the writer's thread and waits until it has connected (see `connect_writer`).
    pub async fn start(
        args: &Args,
        base: &str,
        keys: Vec<Vec<u8>>,
        epoch: Instant,
        sent_us: Arc<[AtomicU64]>,
    ) -> Result<Self, String> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (go, go_rx) = oneshot::channel::<()>();
        let (args2, base) = (args.clone(), base.to_string());
        let done = spawn_writer(args.writer_fifo, move || async move {
            match connect_writer(&base).await {
                Ok(kv) => {
                    let _ = ready_tx.send(Ok(()));
                    go_rx.await.ok()?;
                    Some(write_all(&args2, kv, keys, epoch, sent_us).await)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    None
                }
            }
        })?;
        from_writer(ready_rx, Duration::from_secs(30)).await??;
        // `write_all` gives up sending at `--grpc-put-timeout-secs` and waits 30 s more for answers.
        let limit = Duration::from_secs(args.grpc_put_timeout_secs + 60);
        Ok(Self { go, done, limit })
    }

    /// Sends every put (see `write_all`) and returns what the writer did.
    pub async fn run(self) -> Result<Written, String> {
        self.go.send(()).map_err(|()| "the writer's thread ended early".to_string())?;
        from_writer(self.done, self.limit).await?.ok_or_else(|| "the writer's thread ended early".into())
    }
}

/// What the writer did.
#[derive(Debug, Default)]
pub struct Written {
    /// Whether put `seq` was acknowledged.
    pub acked: Vec<bool>,
    pub sent: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub lat_us: Vec<u64>,
    pub start: Option<Instant>,
    pub last_send: Option<Instant>,
    pub timed_out: bool,
}

/// Connects the writer and makes one put outside the watched key (not measured).
pub async fn connect_writer(base: &str) -> Result<KvClient, String> {
    let client = actix_rt::time::timeout(Duration::from_secs(10), Client::connect([base], None))
        .await
        .map_err(|_| "writer connect timed out".to_string())?
        .map_err(|e| format!("writer connect: {e}"))?;
    let mut kv = client.kv_client();
    kv.put("/warm/grpcfan", "x", None).await.map_err(|e| format!("warm-up put: {e}"))?;
    Ok(kv)
}

/// A value that starts with its sequence number (see `grpc_watch::parse_seq`), padded to `size`.
pub fn value_of(seq: usize, size: usize) -> Vec<u8> {
    let mut v = format!("{seq:010}").into_bytes();
    v.resize(size.max(v.len()), b'.');
    v
}

/// Sends every put and waits for their answers (bounded by `--grpc-put-timeout-secs`), on the
/// writer's thread.
pub async fn write_all(
    args: &Args,
    kv: KvClient,
    keys: Vec<Vec<u8>>,
    epoch: Instant,
    sent_us: Arc<[AtomicU64]>,
) -> Written {
    let total = sent_us.len();
    let out = Rc::new(RefCell::new(Written { acked: vec![false; total], ..Written::default() }));
    let start = Instant::now();
    out.borrow_mut().start = Some(start);
    let deadline = start + Duration::from_secs(args.grpc_put_timeout_secs);
    let keys: Rc<[Vec<u8>]> = keys.into();
    let (size, next) = (args.value_size, Rc::new(Cell::new(0usize)));
    // One put: records its send time first, so that its events always find it.
    let put = {
        let out = out.clone();
        move |mut kv: KvClient, seq: usize| {
            let (out, sent_us, keys) = (out.clone(), sent_us.clone(), keys.clone());
            async move {
                sent_us[seq].store(epoch.elapsed().as_micros() as u64, Ordering::Release);
                let t = Instant::now();
                out.borrow_mut().last_send = Some(t);
                let r = kv.put(keys[seq % keys.len()].clone(), value_of(seq, size), None).await;
                let mut o = out.borrow_mut();
                match r {
                    Ok(_) => {
                        o.acked[seq] = true;
                        o.lat_us.push(t.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        o.errors += 1;
                        o.first_error.get_or_insert(e.to_string());
                    }
                }
            }
        }
    };
    let tasks: Vec<_> = if args.in_flight > 0 {
        (0..args.in_flight)
            .map(|_| {
                let (kv, next, put) = (kv.clone(), next.clone(), put.clone());
                actix_rt::spawn(async move {
                    loop {
                        let seq = next.get();
                        if seq >= total || Instant::now() >= deadline {
                            break;
                        }
                        next.set(seq + 1);
                        put(kv.clone(), seq).await;
                    }
                })
            })
            .collect()
    } else {
        let mut tick = actix_rt::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::with_capacity(total);
        for seq in 0..total {
            tick.tick().await;
            if Instant::now() >= deadline {
                break;
            }
            next.set(seq + 1);
            tasks.push(actix_rt::spawn(put(kv.clone(), seq)));
        }
        tasks
    };
    for t in tasks {
        let _ =
            actix_rt::time::timeout(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(30), t)
                .await;
    }
    let mut o = out.take();
    o.sent = next.get() as u64;
    o.timed_out = next.get() < total;
    o.lat_us.sort_unstable();
    o
}
