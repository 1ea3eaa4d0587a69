#!/usr/bin/env bash
# Runs the whole watchkv test suite on a fresh machine, installing what the tests need first:
# real etcd 3.4 (Debian etcd-server/etcd-client) as the differential oracle, protoc and its
# well-known protos (Debian protobuf-compiler/libprotobuf-dev, which the `etcd-client` crate's
# build needs; watchkv itself compiles its protos in pure Rust), and the Python etcd3gw client
# (pinned, in a virtual environment under the build directory).
# Safe to run again: installed pieces are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
[ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
apt_updated=
apt_install() {
  echo "installing $*"
  if [ -z "$apt_updated" ]; then
    "${sudo_cmd[@]}" apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v python3 >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  apt_install "${missing[@]}"
fi

# Under systemd, installing etcd-server enables and starts a system `etcd` service listening on
# 127.0.0.1:2379, watchkv's default port; the tests start their own etcd on free ports. Only that
# service is stopped: nothing is stopped by port or by process name.
if [ -d /run/systemd/system ]; then
  if ! systemctl cat etcd.service >/dev/null 2>&1; then
    echo "systemd: no etcd service installed, nothing to stop"
  elif out=$("${sudo_cmd[@]}" systemctl stop etcd 2>&1 && "${sudo_cmd[@]}" systemctl disable etcd 2>&1); then
    echo "systemd: stopped and disabled the system etcd service (it would hold 127.0.0.1:2379)"
  else
    echo "systemd: could not stop and disable the system etcd service, continuing: ${out//$'\n'/ }"
  fi
else
  echo "systemd is not running: no system etcd service to stop"
fi

# The Python etcd3gw client, at the version actors/tests/etcd3gw_client.py was written against,
# in a virtual environment of its own (no system site-packages); the test runs that interpreter.
etcd3gw_version=2.7.0
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir=$PWD/$target_dir
venv=$target_dir/py-venv
has_etcd3gw() {
  [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c 'import sys, etcd3gw, importlib.metadata as m; sys.exit(m.version("etcd3gw") != sys.argv[1])' \
      "$etcd3gw_version" >/dev/null 2>&1
}
if ! has_etcd3gw; then
  if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    if ! err=$(python3 -m venv "$venv" 2>&1); then
      # Debian's python3 ships venv and ensurepip separately, in python3-venv.
      echo "python3 -m venv failed, installing python3-venv and retrying: $(tr -s ' \n' ' ' <<<"$err")"
      rm -rf "$venv"
      apt_install python3-venv
      python3 -m venv "$venv"
    fi
  fi
  echo "installing etcd3gw==$etcd3gw_version into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "etcd3gw==$etcd3gw_version"
fi
export WATCHKV_PYTHON=$venv/bin/python

# A CI run builds a clean checkout once: incremental-compilation data (GiBs for ~35 test
# binaries) would only fill its disk. Local runs keep cargo's default.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0
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
