# Shared by tests/browser/run.sh and tests/python/run.sh (sourced, not run):
# the environment for `touchstone up` on the given free ports, and the wait
# until its banner says it is ready.

# up_env DATA_DIR P_REGISTER P_COMPLAINTS P_FEEDBACK P_KPI P_GATEWAY P_HTTP
# sets the array env_vars: every service and the dashboard on its own port.
up_env() {
  env_vars=(
    "TOUCHSTONE_DATA_DIR=$1"
    "TOUCHSTONE_LOG_LEVEL=warn"
    "TOUCHSTONE_HUB__HTTP_LISTEN=127.0.0.1:$7"
  )
  local pair name port upper
  for pair in register:$2 complaints:$3 feedback:$4 kpi:$5 gateway:$6; do
    name="${pair%%:*}"
    port="${pair##*:}"
    upper="$(echo "$name" | tr '[:lower:]' '[:upper:]')"
    env_vars+=("TOUCHSTONE_${upper}__LISTEN=127.0.0.1:$port" "TOUCHSTONE_PEERS__${upper}=http://127.0.0.1:$port")
  done
}

# wait_up LABEL PID LOG ERR SECONDS: waits for the banner in LOG; exits the
# script with both logs when the server dies or is not ready in time.
wait_up() {
  local label="$1" pid="$2" log="$3" err="$4" seconds="$5"
  for _ in $(seq 1 $((seconds * 2))); do
    grep -q "Stop with Ctrl-C" "$log" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$label: touchstone up exited early" >&2
      cat "$log" "$err" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "$label: touchstone up did not become ready in $seconds s" >&2
  tail -n 50 "$log" "$err" >&2
  exit 1
}
