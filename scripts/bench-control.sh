#!/usr/bin/env bash
# wgmesh control-plane benchmark: how fast hosts join, and how fast one change reaches every
# host, with BENCH_HOSTS agents long-polling one `wgmesh control` (release build).
#
#   sudo scripts/bench-control.sh
#
# The control plane runs in a fresh network namespace (loopback only, state in a temp dir); the
# load generator (control/examples/control_bench.rs) plays the agents from the same namespace:
# it joins BENCH_HOSTS hosts (BENCH_CONCURRENCY at a time; every join is fsynced before its
# reply), then holds one netmap long poll per host and measures, per host, the time from a change
# being acknowledged to its new netmap arriving: first a new host joining, then an endpoint
# change. Also the control plane's CPU time and resident memory. Prints a table and writes it to
# target/bench-control-latest.txt.
#
# Knobs: BENCH_HOSTS=1000, BENCH_CONCURRENCY=32, WGMESH_BIN (use this binary).
set -euo pipefail

HOSTS=${BENCH_HOSTS:-1000}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NS="wgmcb$$"
DIR=$(mktemp -d /tmp/wgmesh-bench-control.XXXXXX)
CP_PID=""

cleanup() {
    set +e
    if [[ -n $CP_PID ]] && kill -0 "$CP_PID" 2>/dev/null; then
        kill -TERM "$CP_PID"
        wait "$CP_PID" 2>/dev/null
    fi
    ip netns del "$NS" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

[[ $(id -u) == 0 ]] || { echo "bench-control.sh: run as root (it creates a network namespace)" >&2; exit 2; }
cd "$ROOT"
if [[ -z ${WGMESH_BIN:-} ]]; then
    cargo build --release --quiet --bin wgmesh
    WGMESH_BIN=$ROOT/target/release/wgmesh
fi
cargo build --release --quiet -p wgmesh-control --example control_bench
LOAD=$ROOT/target/release/examples/control_bench

ip netns add "$NS"
ip -n "$NS" link set lo up
cat > "$DIR/control.toml" <<EOF
[control]
listen = "127.0.0.1:7443"
advertise = ["127.0.0.1"]
state_dir = "$DIR/state"
cluster_cidr = "10.0.0.0/8"
host_prefix = 24
EOF
ulimit -n 65536 2>/dev/null || true
ip netns exec "$NS" "$WGMESH_BIN" control --config "$DIR/control.toml" > "$DIR/control.log" 2>&1 &
CP_PID=$!
for _ in $(seq 100); do
    grep -q "control plane listening" "$DIR/control.log" && break
    kill -0 "$CP_PID" 2>/dev/null || { cat "$DIR/control.log" >&2; exit 2; }
    sleep 0.1
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$CP_PID/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$CP_PID/status"; }
rss_idle=$(rss_kib)
ticks0=$(cpu_ticks)
started=$(date +%s.%N)
ip netns exec "$NS" "$LOAD" --admin "$DIR/state/admin.toml" --hosts "$HOSTS" --concurrency "$CONCURRENCY" > "$DIR/result.txt"
wall=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
ticks1=$(cpu_ticks)
rss_loaded=$(rss_kib)
hz=$(getconf CLK_TCK)
store_bytes=$(stat -c %s "$DIR/state/store.jsonl")

get() { awk -v k="$1" '$1 == k { print $2 }' "$DIR/result.txt"; }
{
    echo "wgmesh control plane, $HOSTS hosts ($(nproc) CPUs, $(date -u +%F))"
    echo
    printf '| %-44s | %s |\n' "measure" "value"
    printf '|%s|%s|\n' "----------------------------------------------" "-------"
    printf '| %-44s | %s |\n' "joins/s ($CONCURRENCY at a time, each fsynced)" "$(get joins_per_s)"
    printf '| %-44s | %s / %s |\n' "join latency p50 / p99 (ms)" "$(get join_p50_ms)" "$(get join_p99_ms)"
    printf '| %-44s | %s / %s / %s |\n' "new host reaches all: p50 / p99 / max (ms)" "$(get join_fanout_p50_ms)" "$(get join_fanout_p99_ms)" "$(get join_fanout_max_ms)"
    printf '| %-44s | %s / %s / %s |\n' "endpoint change reaches all: p50/p99/max (ms)" "$(get endpoint_fanout_p50_ms)" "$(get endpoint_fanout_p99_ms)" "$(get endpoint_fanout_max_ms)"
    printf '| %-44s | %s / %s |\n' "updates sent as deltas (join / endpoint)" "$(get join_fanout_deltas)" "$(get endpoint_fanout_deltas)"
    printf '| %-44s | %s |\n' "control plane CPU s for the whole run" "$(awk -v t=$((ticks1 - ticks0)) -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')"
    printf '| %-44s | %s |\n' "run wall time (s)" "$wall"
    printf '| %-44s | %s / %s |\n' "control plane RSS idle / with $HOSTS polls (MiB)" "$(awk -v k="$rss_idle" 'BEGIN { printf "%.1f", k / 1024 }')" "$(awk -v k="$rss_loaded" 'BEGIN { printf "%.1f", k / 1024 }')"
    printf '| %-44s | %s |\n' "store.jsonl (bytes)" "$store_bytes"
} | tee "$ROOT/target/bench-control-latest.txt"
