//! Owns the choice of ports for server processes the tests start: free when chosen, and below
//! the kernel's ephemeral range, so that no outgoing connection (this test's, another test's,
//! a client library's) can be given the port between the choice and the child's bind, or
//! while a killed server's port waits for its restart.
#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out.
const FIRST: u32 = 10_000;

/// Returns a port that is free now and outside the ephemeral range. Each call in a process
/// tries the next port from a start that depends on the process id, so concurrent tests of one
/// binary never pick the same port and successive test binaries start in different places.
/// Falls back to a port the kernel picks when the ephemeral range leaves no room below it.
#[must_use]
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(FIRST);
    if span < 1_000 {
        return kernel_pick();
    }
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(FIRST + (start + n) % span) else { continue };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    kernel_pick()
}

fn kernel_pick() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}
