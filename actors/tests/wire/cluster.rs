//! A real multi-member etcd 3.4 cluster on loopback for the process-level tests
//! ([`start_etcd_cluster`]): each member a [`Proc`] killed on drop, on free ports, in its own
//! data directory, which a test can SIGKILL and restart from that directory; the member
//! `Maintenance.Status` names as leader; and a mirror (`watchkv --upstream`) whose log says
//! which member its upstream watch follows.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{etcd_binary, free_port, int, spawn_logged, try_post, wait_until_serving, Proc, DEADLINE};

/// The cluster's token (`--initial-cluster-token`): keeps its members from joining another
/// test's cluster that happened to pick the same ports.
const CLUSTER_TOKEN: &str = "watchkv-test-cluster";

/// Raft timing generous enough for two shared cores: a member starved for a few hundred
/// milliseconds must not start an election. Losing a leader costs 1.5 to 3 s.
const RAFT_TIMING: [&str; 4] = ["--heartbeat-interval", "100", "--election-timeout", "1500"];

/// One member: its name, ports, directory, and its process while it runs.
pub struct Member {
    /// `--name`.
    pub name: String,
    /// The client port (gRPC and the gateway).
    pub client_port: u16,
    /// The peer port.
    pub peer_port: u16,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The process, `None` while killed.
    pub proc: Option<Proc>,
}

impl Member {
    /// `http://127.0.0.1:<client port>`.
    #[must_use]
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A running etcd cluster. Dropping it kills every member.
pub struct EtcdCluster {
    /// The members, in the order of `--initial-cluster`.
    pub members: Vec<Member>,
    initial_cluster: String,
}

/// Starts a `size`-member etcd 3.4 cluster under `dir` (`dir/m0`, `dir/m1`, …, each with its
/// log next to it) and waits until every member answers a linearizable range (so a leader
/// exists and each member has caught up with it).
#[must_use]
pub fn start_etcd_cluster(dir: &Path, size: usize) -> EtcdCluster {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let mut last = String::new();
    // A port picked free can be taken before etcd binds it: start again on new ports.
    for _ in 0..3 {
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.join(format!("m{i}")),
                proc: None,
            })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster { members, initial_cluster };
        for i in 0..size {
            let _ = std::fs::remove_dir_all(&cluster.members[i].data_dir);
            cluster.spawn(i, "new");
        }
        match cluster.wait_all_serving() {
            Ok(()) => return cluster,
            Err(why) => last = why,
        }
    }
    panic!("the etcd cluster failed to start three times; last: {last}");
}

impl EtcdCluster {
    /// Every member's client URL, in member order.
    #[must_use]
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The indexes of the members that run.
    #[must_use]
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len()).filter(|&i| self.members[i].proc.is_some()).collect()
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let member = &self.members[i];
        let (client, peer) = (member.client_url(), member.peer_url());
        let log = member.data_dir.with_extension("log");
        let mut cmd = Command::new(etcd_binary());
        cmd.arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--name", &member.name])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state, "--initial-cluster-token", CLUSTER_TOKEN])
            .args(RAFT_TIMING)
            .args(["--log-level", "warn"]);
        let child = spawn_logged(cmd, &log).unwrap_or_else(|e| panic!("spawning etcd {}: {e}", member.name));
        let name = format!("etcd {}", member.name);
        self.members[i].proc = Some(Proc { child, port: member.client_port, log, name });
    }

    /// Waits until every running member answers a linearizable range; `Err` with the member's
    /// log when one exits first (a port taken), or on the deadline.
    fn wait_all_serving(&mut self) -> Result<(), String> {
        let start = Instant::now();
        for i in self.running() {
            let port = self.members[i].client_port;
            loop {
                let proc = self.members[i].proc.as_mut().expect("running");
                if let Some(why) = proc.exited() {
                    return Err(format!("{} exited: {why}", proc.name));
                }
                if try_post(port, "/v3/kv/range", br#"{"key":"AA=="}"#).is_ok_and(|r| r.status == 200) {
                    break;
                }
                if start.elapsed() > DEADLINE * 2 {
                    return Err(format!("{} did not serve in time; log:\n{}", proc.name, proc.log_tail(4000)));
                }
                // Polling interval between attempts, not a synchronisation.
                thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// SIGKILLs member `i`.
    pub fn kill9(&mut self, i: usize) {
        let mut proc = self.members[i].proc.take().unwrap_or_else(|| panic!("member m{i} is not running"));
        proc.kill9();
    }

    /// Starts member `i` again from its own data directory (`--initial-cluster-state existing`)
    /// and waits until every running member serves.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].proc.is_none(), "member m{i} is running");
        self.spawn(i, "existing");
        if let Err(why) = self.wait_all_serving() {
            panic!("restarting m{i}: {why}");
        }
    }

    /// `Maintenance.Status` of member `i` through its gateway, `None` if it does not answer.
    #[must_use]
    pub fn status(&self, i: usize) -> Option<Value> {
        let reply = try_post(self.members[i].client_port, "/v3/maintenance/status", b"{}").ok()?;
        (reply.status == 200).then(|| reply.json())
    }

    /// The index of the leader, once every running member names the same one (their `leader`
    /// field against each member's own `member_id`); waits for it.
    #[must_use]
    pub fn leader(&self) -> usize {
        let start = Instant::now();
        loop {
            let statuses: Vec<(usize, Value)> =
                self.running().into_iter().filter_map(|i| self.status(i).map(|s| (i, s))).collect();
            let leaders: Vec<i64> = statuses.iter().map(|(_, s)| uint(s, "leader")).collect();
            if statuses.len() == self.running().len() && leaders.windows(2).all(|w| w[0] == w[1]) {
                if let Some((i, _)) = statuses.iter().find(|(_, s)| uint(&s["header"], "member_id") == leaders[0]) {
                    return *i;
                }
            }
            assert!(start.elapsed() < DEADLINE * 2, "the members never agreed on a leader: {statuses:?}");
            // Polling interval, not a synchronisation.
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A uint64 field of a protojson object (a decimal string; may exceed `i64`): its bits.
fn uint(v: &Value, field: &str) -> i64 {
    match v.get(field) {
        Some(Value::String(s)) => s.parse::<u64>().map_or_else(|_| int(v, field), |n| n as i64),
        _ => int(v, field),
    }
}

/// Starts the `watchkv` binary as a mirror of `upstream` (URLs in the order given) on `port`
/// over `data_dir`, logging which member its follower watches (see [`followed_member`]), and
/// waits until it serves (after its bootstrap, if it had one).
#[must_use]
pub fn start_mirror(data_dir: &Path, port: u16, upstream: &[String]) -> Proc {
    let log = data_dir.with_extension("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_watchkv"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--upstream")
        .arg(upstream.join(","))
        .env("RUST_LOG", "warn,watchkv_actors::mirror=info");
    let child = spawn_logged(cmd, &log).unwrap_or_else(|e| panic!("spawning the mirror: {e}"));
    let mut p = Proc { child, port, log, name: "watchkv mirror".into() };
    wait_until_serving(port, "watchkv mirror", || p.exited());
    p
}

/// Which of `urls` the mirror's follower last started to watch, by its log's
/// `mirror: following upstream` lines, and how many such lines there are so far.
#[must_use]
pub fn followed_member(mirror: &Proc, urls: &[String]) -> Option<(usize, usize)> {
    let text = String::from_utf8_lossy(&std::fs::read(&mirror.log).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("mirror: following upstream")).collect();
    let last = lines.last()?;
    // A URL is followed by a space, an escape code or the end of the line, never by a digit:
    // `http://127.0.0.1:123` must not match `http://127.0.0.1:1234`.
    let member = urls.iter().position(|url| {
        last.match_indices(url.as_str())
            .any(|(at, _)| !last[at + url.len()..].starts_with(|c: char| c.is_ascii_digit()))
    })?;
    Some((member, lines.len()))
}
