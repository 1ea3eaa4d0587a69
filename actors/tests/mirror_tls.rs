//! Mirror mode and `watchkv import` against a real etcd 3.4.23 serving TLS with client-certificate
//! auth and with auth enabled: the mirror (`--upstream https://… --upstream-cacert …
//! --upstream-cert … --upstream-key … --upstream-user …`) bootstraps, follows with etcd's
//! revisions, forwards a put and a lease keep-alive, and carries on after an etcd restart has
//! voided its token (the follower authenticates again; the forwarder's retry on a refused token
//! is `upstream.rs`'s unit test). A wrong password, a CA that did not sign etcd's certificate, a
//! plaintext URL for the TLS port and bad TLS flags stop it with a clear error; `watchkv import
//! --from https://… --cacert …` imports. The client certificate names no etcd user, so every
//! permission comes from the token.

mod certs;
mod exit;
mod wire;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use certs::{client_config, etcdctl, make_certs, path, run, start_etcd_tls_on, Certs, TIMEOUTS};
use futures::StreamExt as _;
use serde_json::Value;
use tonic::transport::Channel;
use watchkv::{KeyRange, KvStore, RangeRequest as CoreRange, StoreConfig};
use watchkv_actors::api::pb::etcdserverpb::kv_client::KvClient;
use watchkv_actors::api::pb::etcdserverpb::lease_client::LeaseClient;
use watchkv_actors::api::pb::etcdserverpb::watch_client::WatchClient;
use watchkv_actors::api::pb::etcdserverpb::{
    watch_request, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use watchkv_actors::api::pb::mvccpb;
use wire::{free_port, start_watchkv, Proc, DEADLINE};

const ROOT: &str = "root:rootpw";
/// The user the mirror authenticates as: read and write on the whole keyspace.
const MIRROR_USER: &str = "mirror:mirrorpw";

/// etcd with TLS, client-certificate auth and auth on, its certificates and how to restart it.
struct Upstream {
    certs: Certs,
    etcd: Proc,
    dir: std::path::PathBuf,
    ports: (u16, u16),
    flags: Vec<String>,
}

impl Upstream {
    fn start(dir: &Path) -> Self {
        let certs = make_certs(dir);
        let flags = certs.server_flags(&["--trusted-ca-file", "--client-cert-auth"]);
        let ports = (free_port(), free_port());
        let etcd_dir = dir.join("etcd");
        let ready = client_config(&certs.ca, Some(&certs.alice), &[b"http/1.1"]);
        let etcd = start_etcd_tls_on(&etcd_dir, ports, &flags, &ready);
        let upstream = Self { certs, etcd, dir: etcd_dir, ports, flags };
        for args in [
            &["user", "add", ROOT][..],
            &["user", "grant-role", "root", "root"],
            &["user", "add", MIRROR_USER],
            &["role", "add", "readwrite-all"],
            // An empty key with --prefix: the whole keyspace (etcdctl's `permRange`).
            &["role", "grant-permission", "readwrite-all", "readwrite", "", "--prefix=true"],
            &["user", "grant-role", "mirror", "readwrite-all"],
            &["auth", "enable"],
        ] {
            upstream.etcdctl(None, args);
        }
        upstream
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.etcd.port)
    }

    /// `etcdctl args` on etcd with the client certificate (whose name is no user) as `user`;
    /// its output, asserted to have succeeded.
    fn etcdctl(&self, user: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = etcdctl(self.etcd.port, &self.certs, Some(&self.certs.alice), TIMEOUTS);
        if let Some(user) = user {
            cmd.arg(format!("--user={user}"));
        }
        let out = run(cmd.args(args));
        assert!(out.status.success(), "etcdctl {args:?}: {}", text(&out));
        out
    }

    /// A put on etcd as root; its revision.
    fn put(&self, key: &str, value: &str) -> i64 {
        let out = self.etcdctl(Some(ROOT), &["put", key, value, "-w", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
        v["header"]["revision"].as_i64().expect("revision")
    }

    /// Kills etcd and starts it again on its data directory and ports: its simple auth tokens
    /// live in memory only, so every token handed out before is void.
    fn restart(&mut self) {
        self.etcd.kill9();
        let ready = client_config(&self.certs.ca, Some(&self.certs.alice), &[b"http/1.1"]);
        self.etcd = start_etcd_tls_on(&self.dir, self.ports, &self.flags, &ready);
    }

    /// The mirror's TLS and credential flags (`user` = NAME:PASSWORD), trusting `ca`.
    fn mirror_flags(&self, user: &str, ca: &Path) -> Vec<String> {
        let c = &self.certs;
        [
            "--upstream",
            &self.url(),
            "--upstream-cacert",
            path(ca),
            "--upstream-cert",
            path(&c.alice.cert),
            "--upstream-key",
            path(&c.alice.key),
            "--upstream-user",
            user,
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect()
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs the `watchkv` binary with `args` until it exits (it must, within the deadline): its
/// success and output.
fn run_to_exit(args: &[String]) -> (bool, String) {
    let out =
        exit::run_to_exit(Command::new(env!("CARGO_BIN_EXE_watchkv")).args(args).env("RUST_LOG", "warn"), DEADLINE * 3);
    (out.status.success(), text(&out))
}

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("url").connect().await.expect("connect")
}

/// `key`'s value and mod revision read locally on the mirror (serializable: no waiting).
async fn local(kv: &mut KvClient<Channel>, key: &str) -> Option<(Vec<u8>, i64)> {
    let request = RangeRequest { key: key.into(), serializable: true, ..RangeRequest::default() };
    let resp = kv.range(request).await.expect("serializable range").into_inner();
    resp.kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision))
}

/// A put through the mirror; its revision. Right after etcd restarts, the mirror's channel may
/// still be reconnecting (`Unavailable`), which is retried; any other error fails the test.
async fn put_through(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    let start = Instant::now();
    loop {
        let request = PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() };
        match kv.put(request).await {
            Ok(resp) => return resp.into_inner().header.expect("header").revision,
            Err(s) if s.code() == tonic::Code::Unavailable && start.elapsed() < DEADLINE * 2 => {
                // Polling interval while upstream's connection comes back, not a synchronisation.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => panic!("put {key} through the mirror: {}: {}", s.code(), s.message()),
        }
    }
}

/// The key-value of the next event on a watch of the mirror (within the deadline).
async fn next_event(watch: &mut tonic::Streaming<WatchResponse>) -> mvccpb::KeyValue {
    let next = async {
        loop {
            let resp = watch.message().await.expect("watch response").expect("stream open");
            if let Some(event) = resp.events.into_iter().next() {
                break event.kv.expect("kv");
            }
        }
    };
    tokio::time::timeout(DEADLINE * 2, next).await.expect("an event on the mirror's watch in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_follows_and_forwards_to_etcd_over_tls_as_a_user_across_an_etcd_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut upstream = Upstream::start(dir.path());
    let seeded = upstream.put("seed", "s");

    let flags = upstream.mirror_flags(MIRROR_USER, &upstream.certs.ca);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mirror = start_watchkv(&dir.path().join("mirror"), free_port(), &flags);
    let mirror_channel = channel(mirror.port).await;
    let mut kv = KvClient::new(mirror_channel.clone());

    // Bootstrapped over TLS as the mirror user: etcd's key with etcd's revision.
    assert_eq!(local(&mut kv, "seed").await, Some((b"s".to_vec(), seeded)));

    // Following: a put on etcd reaches a watch on the mirror with etcd's revision.
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key: "followed".into(),
            ..WatchCreateRequest::default()
        })),
    };
    let requests = futures::stream::iter([create]).chain(futures::stream::pending());
    let mut watch = WatchClient::new(mirror_channel.clone()).watch(requests).await.expect("watch").into_inner();
    let created = tokio::time::timeout(DEADLINE, watch.message()).await.expect("created in time");
    assert!(created.expect("watch response").expect("stream open").created);
    let followed = upstream.put("followed", "f");
    let event = next_event(&mut watch).await;
    assert_eq!((event.key, event.value, event.mod_revision), (b"followed".to_vec(), b"f".to_vec(), followed));

    // Forwarding: a put through the mirror is etcd's, and the mirror reads it back at once.
    let forwarded = put_through(&mut kv, "forwarded", "1").await;
    assert!(forwarded > followed, "etcd's revision: {forwarded}");
    assert_eq!(local(&mut kv, "forwarded").await, Some((b"1".to_vec(), forwarded)), "read-your-write");
    let on_etcd = upstream.etcdctl(Some(ROOT), &["get", "forwarded", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&on_etcd.stdout).trim(), "1");

    // A lease granted and kept alive through the mirror's keep-alive stream.
    let mut lease = LeaseClient::new(mirror_channel.clone());
    let granted = lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.expect("grant").into_inner();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tx.unbounded_send(LeaseKeepAliveRequest { id: granted.id }).expect("send");
    let mut alive = lease.lease_keep_alive(rx).await.expect("keep-alive stream").into_inner();
    let renewed = tokio::time::timeout(DEADLINE, alive.message()).await.expect("renewed in time");
    let renewed = renewed.expect("keep-alive answer").expect("stream open");
    assert_eq!((renewed.id, renewed.ttl), (granted.id, 60));
    drop((tx, alive));

    // etcd restarts: the mirror's token is void. With no forwarded call made meanwhile, the
    // follower's new watch is cancelled for its token and the follower authenticates again.
    upstream.restart();
    let refollowed = upstream.put("followed", "g");
    let event = next_event(&mut watch).await;
    assert_eq!((event.value, event.mod_revision), (b"g".to_vec(), refollowed));
    // Forwarded calls go on with the follower's new token.
    let after = put_through(&mut kv, "after-restart", "2").await;
    assert_eq!(local(&mut kv, "after-restart").await, Some((b"2".to_vec(), after)));
    let direct = upstream.put("direct", "3");
    let read = kv
        .range(RangeRequest { key: "direct".into(), ..RangeRequest::default() })
        .await
        .expect("linearizable range through the mirror")
        .into_inner();
    assert_eq!((read.kvs[0].value.clone(), read.kvs[0].mod_revision), (b"3".to_vec(), direct));
    drop(mirror);
}

#[test]
fn bad_credentials_urls_and_tls_flags_stop_a_mirror_with_a_clear_error_and_import_works_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start(dir.path());
    let seeded = upstream.put("seed", "s");
    let data_dir = |name: &str| dir.path().join(name).to_string_lossy().into_owned();

    // `watchkv import` over TLS with etcdctl's flags, the password given apart as etcdctl allows.
    let imported = data_dir("imported");
    let c = &upstream.certs;
    let import = [
        "import",
        "--from",
        &upstream.url(),
        "--data-dir",
        &imported,
        "--cacert",
        path(&c.ca),
        "--cert",
        path(&c.alice.cert),
        "--key",
        path(&c.alice.key),
        "--user",
        "mirror",
        "--password",
        "mirrorpw",
    ]
    .map(String::from);
    let (ok, out) = run_to_exit(&import);
    assert!(ok, "import over TLS: {out}");
    {
        let store = KvStore::open(StoreConfig::new(&imported)).expect("open the import");
        let rows = store.range(&CoreRange::new(KeyRange::FromKey(vec![0]))).expect("range").kvs;
        let rows: Vec<_> = rows.into_iter().map(|kv| (kv.key, kv.mod_revision)).collect();
        assert_eq!(rows, vec![(b"seed".to_vec(), seeded)]);
    }

    let mirror = |data: &str, flags: Vec<String>| {
        let mut args =
            vec!["--data-dir".to_string(), data.to_string(), "--listen".into(), format!("127.0.0.1:{}", free_port())];
        args.extend(flags);
        run_to_exit(&args)
    };
    let refused =
        "refused the credentials of user \"mirror\": etcdserver: authentication failed, invalid user ID or password";

    // A wrong password on a data directory that holds a store: the follower stops the mirror.
    let (ok, out) = mirror(&imported, upstream.mirror_flags("mirror:wrong", &c.ca));
    assert!(!ok && out.contains(refused), "{out}");
    assert!(!out.contains("mirror:wrong"), "the password is never shown: {out}");

    // A wrong password on an empty one: the bootstrap fails and nothing is served.
    let fresh = data_dir("fresh");
    let (ok, out) = mirror(&fresh, upstream.mirror_flags("mirror:wrong", &c.ca));
    assert!(
        !ok && out.contains("mirror: bootstrap") && out.contains("authentication failed, invalid user ID or password"),
        "{out}"
    );

    // A CA that did not sign etcd's certificate.
    let (ok, out) = mirror(&fresh, upstream.mirror_flags(MIRROR_USER, &dir.path().join("other-ca.pem")));
    assert!(!ok && out.contains("invalid peer certificate: UnknownIssuer"), "{out}");

    // The TLS port under a plaintext URL.
    let plaintext = format!("http://127.0.0.1:{}", upstream.etcd.port);
    let (ok, out) =
        mirror(&fresh, vec!["--upstream".into(), plaintext.clone(), "--upstream-user".into(), MIRROR_USER.into()]);
    assert!(!ok && out.contains("if upstream serves TLS, use https://"), "{out}");

    // TLS flags checked at start.
    let ca = path(&c.ca).to_string();
    let cert = path(&c.alice.cert).to_string();
    for (flags, expected) in [
        (
            vec!["--upstream", &plaintext, "--upstream-cacert", &ca],
            "TLS files are given for a plaintext http:// endpoint",
        ),
        (
            vec!["--upstream", &upstream.url(), "--upstream-cert", &cert],
            "a client certificate and its key must both be given",
        ),
        (
            vec!["--upstream", &upstream.url(), "--upstream-cacert", &cert, "--upstream-user", "mirror"],
            "no password for user \"mirror\"",
        ),
    ] {
        let (ok, out) = mirror(&fresh, flags.iter().map(|s| (*s).to_string()).collect());
        assert!(!ok && out.contains(expected), "{flags:?}: expected {expected:?} in:\n{out}");
    }
}
