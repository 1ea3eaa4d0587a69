//! Scenario 1: `--clients` concurrent clients doing sequential puts, `--puts` in total, dealt
//! over `--put-threads` client threads (each an actix-rt system with its own connections).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::args::Args;
use crate::grpc_writer::{from_writer, spawn_writer};
use crate::put_client::PutClient;
use crate::sampling::{Cpu, CpuSpan, Perf};
use crate::server::Server;

/// Scenario 1's results.
#[derive(Debug, Default, Clone)]
pub struct S1 {
    pub done: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub secs: f64,
    pub lat_us: Vec<u64>,
    pub cpu: Cpu,
    pub timed_out: bool,
    /// `fdatasync` of one value-sized append on the server's disk, right after the puts (µs,
    /// sorted).
    pub fsync_us: Vec<u64>,
}

pub async fn scenario_puts(args: &Args, server: &Server, tck: f64) -> S1 {
    let threads = (args.put_threads as usize).clamp(1, args.clients.max(1));
    let next = Arc::new(AtomicU64::new(0));
    let failed =
        |e: String| S1 { errors: 1, first_error: Some(e), cpu: CpuSpan::start(server.pid).end(tck), ..S1::default() };

    // Client threads 1.. connect and warm up on their own systems, then wait for the start.
    let mut helpers = Vec::new();
    for thread in 1..threads {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let (go_tx, go_rx) = oneshot::channel::<Instant>();
        let (args, base, next) = (args.clone(), server.base.clone(), next.clone());
        // Helpers of one client load, not a writer whose latency is measured alone.
        let done = spawn_writer(false, move || async move {
            let clients = match connect_share(&args, &base, thread, threads).await {
                Ok(clients) => {
                    let _ = ready_tx.send(Ok(()));
                    clients
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Share::default();
                }
            };
            match go_rx.await {
                Ok(deadline) => run_share(&args, &clients, &next, deadline).await,
                Err(_) => Share::default(),
            }
        });
        match done {
            Ok(done) => helpers.push((ready_rx, go_tx, done)),
            Err(e) => return failed(e),
        }
    }
    let clients = match connect_share(args, &server.base, 0, threads).await {
        Ok(clients) => clients,
        Err(e) => return failed(e),
    };
    for (ready, _, _) in &mut helpers {
        match ready.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return failed(e),
            Err(_) => return failed("a put client thread ended before it was ready".into()),
        }
    }

    let perf = Perf::start(args, server, "s1");
    let span = CpuSpan::start(server.pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.s1_timeout_secs);
    let mut waiting = Vec::new();
    for (_, go, done) in helpers {
        let _ = go.send(deadline);
        waiting.push(done);
    }
    let mut shares = vec![run_share(args, &clients, &next, deadline).await];
    let limit = Duration::from_secs(args.s1_timeout_secs + 30);
    for done in waiting {
        match from_writer(done, limit).await {
            Ok(share) => shares.push(share),
            Err(e) => shares.push(Share { errors: 1, first_error: Some(e), ..Share::default() }),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = span.end(tck);
    drop(perf);
    let mut lat_us: Vec<u64> = shares.iter().flat_map(|s| s.lat_us.iter().copied()).collect();
    lat_us.sort_unstable();
    let errors = shares.iter().map(|s| s.errors).sum();
    let first_error = shares.iter().find_map(|s| s.first_error.clone());
    let fsync_us = crate::fsync_probe::fdatasync_latencies(server.dir(), args.value_size, 500);
    S1 {
        done: lat_us.len() as u64,
        errors,
        first_error,
        secs,
        lat_us,
        cpu,
        timed_out: next.load(Ordering::Relaxed) < args.puts,
        fsync_us,
    }
}

/// What one client thread's clients did.
#[derive(Debug, Default)]
struct Share {
    lat_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Client thread `thread`'s share of `--clients` and `--put-connections` (dealt round robin,
/// at least one connection each), connected and warmed up: every connection opened with one put
/// (not measured).
async fn connect_share(args: &Args, base: &str, thread: usize, threads: usize) -> Result<Vec<PutClient>, String> {
    let share = |total: usize| total / threads + usize::from(thread < total % threads);
    let clients = PutClient::connect_all(args, base, share(args.clients.max(1)), share(args.put_connections as usize))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let value: Rc<[u8]> = vec![b'x'; args.value_size].into();
    let warm: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let (client, value) = (client.clone(), value.clone());
            actix_rt::spawn(async move { client.put(format!("/warm/{thread}/{i}").into_bytes(), &value).await })
        })
        .collect();
    let _ = futures::future::join_all(warm).await;
    Ok(clients)
}

/// Runs `clients` on this thread, each doing sequential puts numbered from the shared `next`
/// until `--puts` are taken or `deadline` passes.
async fn run_share(args: &Args, clients: &[PutClient], next: &Arc<AtomicU64>, deadline: Instant) -> Share {
    let value: Rc<[u8]> = vec![b'x'; args.value_size].into();
    let total = args.puts;
    let per_client = (total as usize / args.clients.max(1)).max(16);
    let errors = Rc::new(Cell::new(0u64));
    let first_error: Rc<RefCell<Option<String>>> = Rc::default();
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, value, next) = (client.clone(), value.clone(), next.clone());
            let (errors, first_error) = (errors.clone(), first_error.clone());
            actix_rt::spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                loop {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let key = format!("/load/{i:08}").into_bytes();
                    let t = Instant::now();
                    match client.put(key, &value).await {
                        Ok(()) => lat.push(t.elapsed().as_micros() as u64),
                        Err(e) => {
                            errors.set(errors.get() + 1);
                            first_error.borrow_mut().get_or_insert(e);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat_us = Vec::with_capacity(total as usize);
    for t in futures::future::join_all(tasks).await {
        lat_us.extend(t.unwrap_or_default());
    }
    let first_error = first_error.borrow().clone();
    Share { lat_us, errors: errors.get(), first_error }
}
