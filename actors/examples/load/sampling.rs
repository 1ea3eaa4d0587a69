//! What a run costs: CPU time and memory from `/proc` (the server's and this process's), the load
//! average, and `perf record` attached to a server for one scenario.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::server::Server;

pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// utime+stime in clock ticks (fields 14 and 15 of `/proc/<pid>/stat`).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A `kB` line of `/proc/<pid>/status` (`VmHWM`, `VmRSS`) or `Threads`.
pub fn status_field(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

/// How long the calling thread has waited, runnable, for a CPU since it started, in
/// nanoseconds (the second field of `/proc/thread-self/schedstat`); `None` where the kernel
/// does not tell.
pub fn thread_cpu_wait_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().nth(1)?.parse().ok()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU seconds of the server and of this process over a span.
pub struct CpuSpan {
    pid: String,
    server0: u64,
    self0: u64,
    t0: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub server_s: f64,
    pub self_s: f64,
    pub wall_s: f64,
}

impl CpuSpan {
    pub fn start(pid: u32) -> Self {
        let pid = pid.to_string();
        Self { server0: cpu_ticks(&pid).unwrap_or(0), self0: cpu_ticks("self").unwrap_or(0), pid, t0: Instant::now() }
    }

    pub fn end(&self, tck: f64) -> Cpu {
        Cpu {
            server_s: cpu_ticks(&self.pid).unwrap_or(0).saturating_sub(self.server0) as f64 / tck,
            self_s: cpu_ticks("self").unwrap_or(0).saturating_sub(self.self0) as f64 / tck,
            wall_s: self.t0.elapsed().as_secs_f64(),
        }
    }
}

impl Cpu {
    /// The server's CPU time over the wall time: how many cores it kept busy on average.
    pub fn cores(&self) -> f64 {
        self.server_s / self.wall_s.max(1e-9)
    }
}

/// `perf record` attached to a server for one scenario.
pub struct Perf(Option<Child>);

impl Perf {
    pub fn start(args: &Args, server: &Server, scenario: &str) -> Self {
        let Some(dir) = &args.perf_dir else {
            return Self(None);
        };
        let _ = std::fs::create_dir_all(dir);
        // One file per run, so that later runs do not overwrite earlier ones.
        let run = if args.runs > 1 { format!("-run{}", server.run + 1) } else { String::new() };
        let out = dir.join(format!("{}-{scenario}{run}.perf.data", server.kind.name()));
        let child = Command::new("perf")
            .args(["record", "-F", &args.perf_freq.to_string(), "-g", "-p", &server.pid.to_string(), "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        std::thread::sleep(Duration::from_millis(300));
        Self(child)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
