#!/usr/bin/env bash
# Runs the whole watchkv test suite on a fresh machine, installing what the tests need first:
# real etcd 3.4 (Debian etcd-server/etcd-client) as the differential oracle, protoc and its
# well-known protos (Debian protobuf-compiler/libprotobuf-dev, which the `etcd-client` crate's
# build needs; watchkv itself compiles its protos in pure Rust), and the Python etcd3gw client.
# Safe to run again: installed pieces are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! python3 -c 'import etcd3gw' >/dev/null 2>&1; then
  echo "installing the etcd3gw Python client"
  python3 -m pip install --quiet etcd3gw || python3 -m pip install --quiet --break-system-packages etcd3gw
fi

# Benches must keep compiling even though CI does not run them.
cargo check --workspace --benches --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "suite: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
