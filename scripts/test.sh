#!/usr/bin/env bash
# Runs the whole test suite as root: installs what the end-to-end tests need on a fresh Debian
# machine, checks formatting and lints, then runs unit and end-to-end tests.
#   ./scripts/test.sh            everything
#   ./scripts/test.sh e2e_wire   only tests whose names match (passed to cargo test)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the end-to-end tests create network namespaces and TUN devices: run as root" >&2
  exit 1
fi

need=()
for tool in ip:iproute2 ping:iputils-ping iperf3:iperf3 wireguard-go:wireguard-go wg:wireguard-tools \
            tcpdump:tcpdump socat:socat; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }

export CI="${CI:-}"
if [ $# -eq 0 ]; then
  cargo fmt --all -- --check
  cargo clippy --all-targets --locked -- -D warnings
  cargo test --workspace --locked
else
  cargo test --workspace --locked -- "$@"
fi
