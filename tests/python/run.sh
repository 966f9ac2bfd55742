#!/usr/bin/env bash
# Third-party client suite against the real `touchstone up`: Python grpcio
# (client.py), then the Open311 GeoReport v2 clients `georeport` and `civicbot`
# from PyPI over the gateway's HTTP listener (open311.py).
# Installs the pinned client packages (requirements.txt) into a virtual
# environment under the target directory, generates stubs from proto/ with
# grpcio-tools into a temporary directory (never committed), starts
# `touchstone up` on a fresh data directory and free ports, mints tokens with
# `touchstone token`, runs client.py and open311.py, and stops the server.
#
#   tests/python/run.sh
#
# Environment:
#   TOUCHSTONE_BIN  the binary to test (default: target/debug/touchstone, built
#                   by cargo first so it matches the sources; target/ is
#                   $CARGO_TARGET_DIR when that is set)
#   ROWS            rows in the ImportResponses stream (default 50000)
#   PYTHON_OUT      where the server's logs go (default target/python)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../up.sh
. "$root/tests/up.sh"
target="${CARGO_TARGET_DIR:-$root/target}"
out="${PYTHON_OUT:-$target/python}"
venv="$target/python-venv"
mkdir -p "$out"

# The client packages, pinned; reinstalled when requirements.txt changes.
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  echo "python client: installing $(grep -v '^#' "$here/requirements.txt" | tr '\n' ' ')"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi
py="$venv/bin/python"

bin="${TOUCHSTONE_BIN:-}"
if [ -z "$bin" ]; then
  # Always ask cargo, so a binary from an earlier build is never tested (a
  # release binary left by a benchmark run may be older than the sources).
  bin="$target/debug/touchstone"
  (cd "$root" && cargo build --quiet -p touchstone)
fi

work="$(mktemp -d -t touchstone-python-XXXXXX)"
data="$work/data"
stubs="$work/stubs"
mkdir -p "$data" "$stubs"
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$server" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Stubs from proto/, with the well-known types grpcio-tools ships.
wkt="$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
(cd "$root/proto" && "$py" -m grpc_tools.protoc -I . -I "$wkt" \
  --python_out="$stubs" --grpc_python_out="$stubs" $(find touchstone -name '*.proto' | sort))

read -r p_register p_complaints p_feedback p_kpi p_gateway p_http < <("$py" -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
')
up_env "$data" "$p_register" "$p_complaints" "$p_feedback" "$p_kpi" "$p_gateway" "$p_http"

echo "python client: $bin up (data in $data)"
env "${env_vars[@]}" "$bin" up >"$out/up.log" 2>"$out/up.err" &
server=$!
wait_up "python client" "$server" "$out/up.log" "$out/up.err" 120

agency=pyclient
token="$(env "${env_vars[@]}" "$bin" token --agency "$agency" --subject python-client \
  --role officer --role senior_officer --role analyst --role agency_admin)"
hub_token="$(env "${env_vars[@]}" "$bin" token --agency hub --subject python-hub \
  --role hub_admin --agencies '*')"

env PYTHONPATH="$stubs" \
  TS_AGENCY="$agency" TS_TOKEN="$token" TS_HUB_TOKEN="$hub_token" \
  TS_REGISTER="127.0.0.1:$p_register" TS_COMPLAINTS="127.0.0.1:$p_complaints" \
  TS_FEEDBACK="127.0.0.1:$p_feedback" TS_KPI="127.0.0.1:$p_kpi" TS_GATEWAY="127.0.0.1:$p_gateway" \
  ROWS="${ROWS:-50000}" \
  "$py" "$here/client.py"

env PYTHONPATH="$stubs" \
  TS_AGENCY="$agency" TS_TOKEN="$token" TS_GATEWAY="127.0.0.1:$p_gateway" \
  TS_FEEDBACK="127.0.0.1:$p_feedback" TS_OPEN311="http://127.0.0.1:$p_http/open311/v2" \
  "$py" "$here/open311.py"
