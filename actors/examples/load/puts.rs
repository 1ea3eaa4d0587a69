//! Scenario 1: `--clients` concurrent clients doing sequential puts, `--puts` in total.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::args::Args;
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
    let clients = match PutClient::connect_all(args, server).await {
        Ok(c) => c,
        Err(e) => {
            return S1 {
                errors: 1,
                first_error: Some(format!("{e:#}")),
                cpu: CpuSpan::start(server.pid).end(tck),
                ..S1::default()
            }
        }
    };
    let value: Rc<[u8]> = vec![b'x'; args.value_size].into();

    // Warm-up: open every connection once (not measured).
    let warm: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let (client, value) = (client.clone(), value.clone());
            actix_rt::spawn(async move { client.put(format!("/warm/{i}").into_bytes(), &value).await })
        })
        .collect();
    let _ = futures::future::join_all(warm).await;

    let next = Rc::new(Cell::new(0u64));
    let errors = Rc::new(Cell::new(0u64));
    let first_error: Rc<RefCell<Option<String>>> = Rc::default();
    let total = args.puts;
    let per_client = (total as usize / args.clients).max(16);
    let perf = Perf::start(args, server, "s1");
    let span = CpuSpan::start(server.pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.s1_timeout_secs);
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, value) = (client.clone(), value.clone());
            let (next, errors, first_error) = (next.clone(), errors.clone(), first_error.clone());
            actix_rt::spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                loop {
                    let i = next.get();
                    if i >= total || Instant::now() >= deadline {
                        break;
                    }
                    next.set(i + 1);
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
    let secs = start.elapsed().as_secs_f64();
    let cpu = span.end(tck);
    drop(perf);
    lat_us.sort_unstable();
    let first_error = first_error.borrow().clone();
    let fsync_us = crate::fsync_probe::fdatasync_latencies(server.dir(), args.value_size, 500);
    S1 {
        done: lat_us.len() as u64,
        errors: errors.get(),
        first_error,
        secs,
        lat_us,
        cpu,
        timed_out: next.get() < total,
        fsync_us,
    }
}
