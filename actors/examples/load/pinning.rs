//! CPU affinity for mirror-fanout: a server started on one CPU (`taskset -c N` when `taskset`
//! is installed, else `sched_setaffinity` between fork and exec), the load tool's own threads
//! moved to one CPU, and the CPUs a process may run on (to print what was set).

use std::ffi::OsStr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `name` on `PATH`, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Restricts thread `tid` (0: the calling thread) to `cpu`; threads it creates later inherit it.
fn set_affinity(tid: libc::pid_t, cpu: usize) -> std::io::Result<()> {
    // SAFETY: `cpu_set_t` is a plain bit array, valid when zeroed; `CPU_SET` sets one bit inside
    // it (it checks `cpu` against the set's size) and `sched_setaffinity` only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A command that runs `program` on `cpu` only (every thread it ever starts), or anywhere
/// with `None`.
pub fn command_on(program: &Path, cpu: Option<usize>) -> Command {
    let Some(cpu) = cpu else {
        return Command::new(program);
    };
    if let Some(taskset) = on_path("taskset") {
        // taskset sets the affinity and execs the program, so the pid stays the program's.
        let mut c = Command::new(taskset);
        c.arg("-c").arg(cpu.to_string()).arg(OsStr::new(program));
        return c;
    }
    let mut c = Command::new(program);
    // SAFETY: the closure runs in the forked child before exec and only makes one system call
    // (sched_setaffinity is async-signal-safe), allocating nothing.
    unsafe {
        c.pre_exec(move || set_affinity(0, cpu));
    }
    c
}

/// Moves every thread of this process to `cpu`; threads started later inherit it from the
/// thread that starts them.
pub fn pin_self(cpu: usize) -> std::io::Result<()> {
    for entry in std::fs::read_dir("/proc/self/task")? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            set_affinity(tid, cpu)?;
        }
    }
    Ok(())
}

/// The CPUs `pid` may run on (`Cpus_allowed_list` of `/proc/<pid>/status`, e.g. `0` or `0-1`).
pub fn cpus_allowed(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| Some(l.strip_prefix("Cpus_allowed_list:")?.trim().to_string())))
        .unwrap_or_else(|| "?".into())
}
