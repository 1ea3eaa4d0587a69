#!/usr/bin/env python3
"""Drives a running watchkv server with the Python etcd3gw client (an etcd grpc-gateway client,
`pip install etcd3gw`): put / get / get_prefix / create / replace / delete / delete_prefix /
status, leases (grant, ttl, refresh, keys, revoke) and watches (watch_prefix, watch with a start
revision, watch_once, cancel). Asserts every result and prints what it checked.

Usage: etcd3gw_client.py http://127.0.0.1:PORT  (run by actors/tests/etcd3gw_client.rs)
Exit status: 0 all checks passed, 1 a check failed, 2 etcd3gw is not installed / bad usage.
"""

import queue
import sys
import threading
import time
from urllib.parse import urlparse

try:
    import etcd3gw
    from etcd3gw import exceptions as etcd3gw_exceptions
except ImportError:
    print(
        "the etcd3gw Python client is not installed: install it with `pip install etcd3gw` "
        "(scripts/test.sh does this before running the tests)",
        file=sys.stderr,
    )
    sys.exit(2)

# Generous: CI machines are small and busy.
TIMEOUT = 30

checks = []


def check(name, got, want=True):
    if got != want:
        print(f"FAIL {name}: got {got!r}, want {want!r}", file=sys.stderr)
        sys.exit(1)
    checks.append(name)
    print(f"ok   {name}: {got!r}")


def revision(client):
    return int(client.status()["header"]["revision"])


class Events:
    """Consumes a watch iterator on a thread so the test can wait with a timeout."""

    def __init__(self, watch):
        self.iterator, self.cancel = watch
        self.queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        try:
            for event in self.iterator:
                self.queue.put(event)
        except Exception as e:  # noqa: BLE001 - reported by next()
            self.queue.put(e)

    def next(self, what):
        try:
            event = self.queue.get(timeout=TIMEOUT)
        except queue.Empty:
            print(f"FAIL {what}: no watch event within {TIMEOUT}s", file=sys.stderr)
            sys.exit(1)
        if isinstance(event, Exception):
            raise event
        return event


def brief(event):
    kv = event["kv"]
    return (event.get("type", "PUT"), kv["key"], kv.get("value", b""), int(kv["mod_revision"]))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    url = urlparse(sys.argv[1])
    try:
        from importlib.metadata import version

        etcd3gw_version = version("etcd3gw")
    except Exception:  # noqa: BLE001 - only for the banner
        etcd3gw_version = "?"
    print(f"etcd3gw {etcd3gw_version} against {sys.argv[1]} (api_path /v3/)")
    client = etcd3gw.client(host=url.hostname, port=url.port, api_path="/v3/", timeout=TIMEOUT)
    check("base url uses /v3/", client.get_url("/kv/put"), f"http://{url.hostname}:{url.port}/v3/kv/put")

    # Without api_path etcd3gw discovers the prefix from GET /version (etcd >= 3.4: /v3/).
    discovered = etcd3gw.client(host=url.hostname, port=url.port, timeout=TIMEOUT)
    check("api path discovered from /version", discovered.api_path, "/v3/")

    status = client.status()
    check("status has a header revision", int(status["header"]["revision"]) >= 1)
    check("status reports an etcd version", "version" in status)
    members = client.members()
    check("one member, this server", len(members), 1)
    check("the member's client URL", members[0].get("clientURLs"), [f"http://{url.hostname}:{url.port}"])
    check("the member's id is the header's", members[0].get("ID"), status["header"]["member_id"])

    # ----- KV -----
    check("put foo", client.put("foo", "bar"))
    check("get foo", client.get("foo"), [b"bar"])
    value, meta = client.get("foo", metadata=True)[0]
    check("get foo with metadata: value", value, b"bar")
    check("get foo with metadata: key", meta["key"], b"foo")
    check("get foo with metadata: version", meta["version"], "1")
    check("get foo with metadata: create == mod", meta["create_revision"], meta["mod_revision"])
    check("put foo again", client.put("foo", "baz"))
    value, meta = client.get("foo", metadata=True)[0]
    check("overwrite bumps the version", (value, meta["version"]), (b"baz", "2"))
    check("get a missing key", client.get("missing"), [])

    for k, v in [("pfx/a", "1"), ("pfx/b", "2"), ("pfx/c", "3"), ("pfy", "no")]:
        client.put(k, v)
    got = client.get_prefix("pfx/", sort_order="ascend", sort_target="key")
    check("get_prefix pfx/ (ascend by key)", [(m["key"], v) for v, m in got], [(b"pfx/a", b"1"), (b"pfx/b", b"2"), (b"pfx/c", b"3")])
    got = client.get_prefix("pfx/", sort_order="descend", sort_target="value")
    check("get_prefix pfx/ (descend by value)", [v for v, _ in got], [b"3", b"2", b"1"])
    check("get with limit", len(client.get("pfx/", range_end="pfx0", limit=2)), 2)
    check("get keys_only has no values", client.get("pfx/", range_end="pfx0", keys_only=True), [b"", b"", b""])
    all_keys = [m["key"] for _, m in client.get_all()]
    written = [b"foo", b"pfx/a", b"pfx/b", b"pfx/c", b"pfy"]
    check("get_all sees every key, sorted", [k for k in all_keys if k in written], written)

    check("create a new key", client.create("created", "1"))
    check("create an existing key fails", client.create("created", "2"), False)
    check("replace with the right old value", client.replace("created", "1", "2"))
    check("replace with a wrong old value", client.replace("created", "1", "3"), False)
    check("value after replace", client.get("created"), [b"2"])

    txn = client.transaction(
        {
            "compare": [{"key": etcd3gw.utils._encode("created"), "result": "EQUAL", "target": "VALUE", "value": etcd3gw.utils._encode("2")}],
            "success": [{"request_range": {"key": etcd3gw.utils._encode("foo")}}],
            "failure": [],
        }
    )
    check("txn succeeded", txn.get("succeeded"), True)
    check("txn range result", etcd3gw.utils._decode(txn["responses"][0]["response_range"]["kvs"][0]["value"]), b"baz")

    check("delete pfx/a", client.delete("pfx/a"))
    check("delete a missing key", client.delete("pfx/a"), False)
    check("delete_prefix pfx/", client.delete_prefix("pfx/"))
    check("prefix gone", client.get_prefix("pfx/"), [])
    check("pfy survives", client.get("pfy"), [b"no"])

    # ----- leases -----
    lease = client.lease(ttl=60)
    check("lease granted with a server-chosen id", lease.id > 0)
    ttl = lease.ttl()
    check(f"lease ttl right after grant ({ttl})", 58 <= ttl <= 60)
    check("put with a lease", client.put("leased/1", "x", lease=lease))
    check("second put with a lease", client.put("leased/2", "y", lease=lease))
    _, meta = client.get("leased/1", metadata=True)[0]
    check("kv carries the lease id", int(meta["lease"]), lease.id)
    check("lease refresh returns the granted TTL", lease.refresh(), 60)
    check("lease keys", sorted(lease.keys()), [b"leased/1", b"leased/2"])
    check("lease revoke", lease.revoke())
    check("revoke deleted the leased keys", client.get_prefix("leased/"), [])
    check("ttl of a revoked lease", lease.ttl(), -1)
    check("refresh of a revoked lease", lease.refresh(), -1)
    try:
        lease.revoke()
        check("revoking twice fails", False)
    except etcd3gw_exceptions.Etcd3Exception as e:
        check("revoking twice fails with lease not found", "requested lease not found" in (e.detail_text or ""))

    # ----- watches -----
    # watch_prefix from the next revision: nothing racy, every put below is seen.
    start = revision(client) + 1
    events = Events(client.watch_prefix("w/", start_revision=start))
    client.put("w/1", "one")
    client.put("other", "unwatched")
    client.put("w/2", "two")
    client.delete("w/1")
    got = [brief(events.next("watch_prefix")) for _ in range(3)]
    check(
        "watch_prefix events",
        got,
        [("PUT", b"w/1", b"one", start), ("PUT", b"w/2", b"two", start + 2), ("DELETE", b"w/1", b"", start + 3)],
    )
    events.cancel()

    # watch with a start revision in the past: catch-up first, then a live event after a put.
    events = Events(client.watch("w/2", start_revision=start))
    check("watch from a past revision replays history", brief(events.next("catch-up")), ("PUT", b"w/2", b"two", start + 2))
    client.put("w/2", "three")
    live = brief(events.next("live"))
    check("then sees a new put", live[:3], ("PUT", b"w/2", b"three"))
    events.cancel()

    # watch with prev_kv.
    rev = revision(client) + 1
    events = Events(client.watch("w/2", start_revision=rev, prev_kv=True))
    client.put("w/2", "four")
    event = events.next("prev_kv")
    check("prev_kv carries the previous value", (event["kv"]["value"], event["prev_kv"]["value"]), (b"four", etcd3gw.utils._encode("three")))
    events.cancel()

    # watch_once: the event at a given revision.
    client.put("once", "1")
    rev = revision(client)
    event = client.watch_once("once", timeout=TIMEOUT, start_revision=rev)
    check("watch_once", brief(event), ("PUT", b"once", b"1", rev))

    # A burst of concurrent puts: every event arrives. etcd3gw parses each HTTP chunk as one
    # JSON message, so this needs one response per chunk, as grpc-gateway writes them.
    burst = 200
    start = revision(client) + 1
    events = Events(client.watch_prefix("burst/", start_revision=start))

    def put(i):
        etcd3gw.client(host=url.hostname, port=url.port, api_path="/v3/", timeout=TIMEOUT).put(f"burst/{i}", str(i))

    threads = [threading.Thread(target=lambda t=t: [put(i) for i in range(t, burst, 8)]) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = sorted(int(events.next(f"burst event {n}")["kv"]["value"]) for n in range(burst))
    missing = sorted(set(range(burst)) - set(got))
    check(f"all {burst} events of a concurrent burst, once each (missing, count)", (missing, len(got)), ([], burst))
    events.cancel()

    print(f"etcd3gw: {len(checks)} checks passed")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"done in {time.monotonic() - started:.1f}s")
