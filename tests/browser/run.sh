#!/usr/bin/env bash
# Headless-browser test of the web dashboard: starts `touchstone up --demo`
# on a fresh data directory and free ports, signs in to the dashboard with a
# development token in Debian's chromium (driven by playwright-core), opens
# every page at 1280 and 390 px wide, checks each shows the demo data with no
# console error and no axe-core (WCAG 2.2 AA) violation, works a complaint
# with the keyboard only, saves screenshots in target/browser/, and stops the
# server.
#
#   tests/browser/run.sh
#
# Environment:
#   TOUCHSTONE_BIN  the binary to test (default: target/debug/touchstone, built
#                   by cargo first so it matches the sources; target/ is
#                   $CARGO_TARGET_DIR when that is set)
#   DEMO_SCALE      share of the full demo volume (default 0.2)
#   BROWSER_OUT     where screenshots and logs go (default target/browser)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../up.sh
. "$root/tests/up.sh"
target="${CARGO_TARGET_DIR:-$root/target}"
out="${BROWSER_OUT:-$target/browser}"
scale="${DEMO_SCALE:-0.2}"
mkdir -p "$out"
rm -f "$out"/*.png "$out"/results.json

# Debian's chromium; `apt-get` needs root (or sudo).
if [ ! -x /usr/bin/chromium ]; then
  echo "browser test: installing chromium and chromium-driver"
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# playwright-core and axe-core, pinned by package-lock.json; it never downloads a browser.
if [ ! -f "$here/node_modules/playwright-core/package.json" ] || [ ! -f "$here/node_modules/axe-core/axe.min.js" ]; then
  echo "browser test: npm ci"
  (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

bin="${TOUCHSTONE_BIN:-}"
if [ -z "$bin" ]; then
  # Always ask cargo, so a binary from an earlier build is never tested (a
  # release binary left by a benchmark run may be older than the sources).
  bin="$target/debug/touchstone"
  (cd "$root" && cargo build --quiet -p touchstone)
fi

data="$(mktemp -d -t touchstone-browser-XXXXXX)"
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
  rm -rf "$data"
}
trap cleanup EXIT

# Every service and the dashboard on a free port of its own.
free_ports() {
  node -e '
    const net = require("net");
    const n = Number(process.argv[1]);
    const servers = [];
    let got = [];
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      s.listen(0, "127.0.0.1", () => {
        got.push(s.address().port);
        servers.push(s);
        if (got.length === n) { console.log(got.join(" ")); servers.forEach((x) => x.close()); }
      });
    }' "$1"
}
read -r p_register p_complaints p_feedback p_kpi p_gateway p_http < <(free_ports 6)
up_env "$data" "$p_register" "$p_complaints" "$p_feedback" "$p_kpi" "$p_gateway" "$p_http"

echo "browser test: $bin up --demo --scale $scale (data in $data, dashboard on 127.0.0.1:$p_http)"
env "${env_vars[@]}" "$bin" up --demo --scale "$scale" >"$out/up.log" 2>"$out/up.err" &
server=$!
wait_up "browser test" "$server" "$out/up.log" "$out/up.err" 300
grep "^Demo hub\|^The KPI" "$out/up.log" || true

token="$(env "${env_vars[@]}" "$bin" token --agency passports \
  --role analyst --role agency_admin --role officer --role senior_officer --subject browser-test)"
# What `up` without --demo hands out: a token for agency "demo", which has no data.
empty_token="$(env "${env_vars[@]}" "$bin" token --agency demo \
  --role officer --role senior_officer --role agency_admin --subject dev-user)"

node "$here/check.mjs" "http://127.0.0.1:$p_http" "$token" "$empty_token" "$out"
