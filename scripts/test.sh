#!/usr/bin/env bash
# Runs the whole test suite as root: installs what the end-to-end tests need on a fresh Debian
# machine, checks formatting and lints, then runs unit and end-to-end tests.
#   ./scripts/test.sh            everything, then each fuzz target for WGMESH_FUZZ_SECONDS (8; 0 skips)
#   ./scripts/test.sh e2e_wire   only tests whose names match (passed to cargo test)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the end-to-end tests create network namespaces and TUN devices: run as root" >&2
  exit 1
fi

need=()
for tool in ip:iproute2 ping:iputils-ping iperf3:iperf3 wireguard-go:wireguard-go wg:wireguard-tools \
            tcpdump:tcpdump arping:arping socat:socat sysctl:procps curl:curl g++:g++ \
            dockerd:docker.io iptables:iptables; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
# The Docker tests' image is a static busybox (a dynamic one would not run alone in a container).
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }

export CI="${CI:-}"
if [ $# -eq 0 ]; then
  # The agent's protocol core stays pure: no clock, no randomness, no files, sockets or threads
  # (docs/ARCHITECTURE.md). Its unit tests may use them.
  if grep -rnE 'Instant::now|SystemTime::now|\.elapsed\(\)|OsRng|std::fs|UdpSocket|tokio|std::thread' \
       overlay/src/peers --include='*.rs' | grep -vE '/tests\.rs:|/fixture\.rs:'; then
    echo "test.sh: overlay/src/peers must not read the clock or do I/O (lines above)" >&2
    exit 1
  fi
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked -- "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# A short run of every fuzz target (scripts/fuzz.sh; WGMESH_FUZZ_SECONDS each, 0 skips), counted
# as one more test. `cargo test` above already replayed their seeds and regression inputs.
fuzz_pass=0 fuzz_fail=0
if [ $# -eq 0 ] && [ "${WGMESH_FUZZ_SECONDS:-8}" != 0 ]; then
  if ./scripts/fuzz.sh "${WGMESH_FUZZ_SECONDS:-8}"; then fuzz_pass=1; else fuzz_fail=1; status=1; fi
fi
set -e
# One closing line for the whole run (cargo's own last line is the doc tests' "0 passed").
awk -v fp="$fuzz_pass" -v ff="$fuzz_fail" \
    '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "all tests: %d passed, %d failed\n", p + fp, f + ff }' "$log"
exit "$status"
