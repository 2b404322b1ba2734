#!/usr/bin/env bash
# wgmesh data-plane benchmark.
#
#   sudo scripts/bench.sh
#
# Runs, one after the other, on the same topology (two "host" network namespaces joined by a veth pair,
# underlay 198.18.0.1/24 <-> 198.18.0.2/24, fresh namespaces for every variant):
#
#   raw               the underlay itself, no tunnel
#   wgmesh            two `wgmesh agent`s (release build), iperf3/ping from host A to host B's bridge address 10.42.2.1
#   wgmesh-nooffload  the same with `offload = false` (plain per-packet TUN/UDP I/O)
#   wireguard-go      `wireguard-go -f` in each namespace, configured with `wg`
#   boringtun-cli     `boringtun-cli -f` in each namespace (built once from crates.io into target/bench-tools)
#
# and for each: ping latency (idle), iperf3 TCP 1 stream and 4 streams, iperf3 UDP 64-byte packets
# (-b 0: received packets/s and loss), and the CPU time used by the tunnel daemons (both ends, from
# /proc/PID/stat) during the TCP 1-stream and UDP tests. Then a table with the ratios wgmesh/wireguard-go and
# wgmesh/boringtun-cli, and a memory section: VmRSS of a wgmesh agent with 100 configured peers.
# The table is also written to target/bench-latest.txt; logs and configs of the last run stay in target/bench-run/.
#
# Knobs (environment):
#   BENCH_SECONDS=10        length of each iperf3 test
#   BENCH_ONLY=a,b,...      subset of: raw,wgmesh,wgmesh-nooffload,wireguard-go,boringtun-cli,memory
#   BENCH_PINGS=500         number of pings (interval BENCH_PING_INTERVAL=0.005 s)
#   BENCH_UDP_LEN=64        UDP payload size for the packet-rate test
#   WGMESH_BIN=path         use this wgmesh binary instead of building target/release/wgmesh
#   BORINGTUN_CLI=path      use this boringtun-cli instead of building it
#   WIREGUARD_GO=path       use this wireguard-go instead of the one on PATH
#   BENCH_QUIET_WAIT=60     before each variant, wait up to this many seconds while other processes use > 10 % CPU
#
# Only one bench.sh runs at a time (flock on target/bench.lock). Everything it creates (namespaces, links,
# processes, UAPI sockets) is named with its PID and removed on exit, also on Ctrl-C.

set -u -o pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
SECS=${BENCH_SECONDS:-10}
PINGS=${BENCH_PINGS:-500}
PING_IVL=${BENCH_PING_INTERVAL:-0.005}
UDP_LEN=${BENCH_UDP_LEN:-64}
ONLY=${BENCH_ONLY:-raw,wgmesh,wgmesh-nooffload,wireguard-go,boringtun-cli,memory}
ONLY=${ONLY//wgmesh-no-offload/wgmesh-nooffload}
VARIANTS=(raw wgmesh wgmesh-nooffload wireguard-go boringtun-cli)
QUIET_WAIT=${BENCH_QUIET_WAIT:-60}
PORT=5201

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
wanted() { [[ ",$ONLY," == *",$1,"* ]]; }

[[ $(id -u) == 0 ]] || die "run as root (namespaces, TUN devices)"
[[ $SECS =~ ^[0-9]+$ && $SECS -ge 1 ]] || die "BENCH_SECONDS must be a positive integer"
[[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "BENCH_QUIET_WAIT must be a non-negative integer"
for w in ${ONLY//,/ }; do
    case $w in raw|wgmesh|wgmesh-nooffload|wireguard-go|boringtun-cli|memory) ;;
    *) die "BENCH_ONLY: unknown item '$w' (use raw,wgmesh,wgmesh-nooffload,wireguard-go,boringtun-cli,memory)" ;;
    esac
done

mkdir -p "$ROOT/target"
exec 9>"$ROOT/target/bench.lock"
flock -n 9 || die "another bench.sh is running (target/bench.lock); benchmarks must not overlap"

# ---------------------------------------------------------------- names, state, cleanup
P=wb$$                          # prefix of every namespace/link we create (link names <= 15 chars)
NSA=${P}a NSB=${P}b             # host namespaces; the veth ends are called the same inside them
WGA=wg$$a WGB=wg$$b             # wireguard-go/boringtun interfaces; unique because their UAPI sockets
                                # live in the shared /run/wireguard/<ifname>.sock
D=$ROOT/target/bench-run
rm -rf "$D"; mkdir -p "$D"; chmod 700 "$D"
PIDS=()                         # live processes we started (only these are ever killed)



teardown_topology() {
    kill_started
    local n p
    # Safety net: anything still running inside the namespaces this script created was started by it.
    for n in "$NSA" "$NSB"; do
        for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
    for n in "$NSA" "$NSB"; do ip netns del "$n" 2>/dev/null; done
    for n in "$NSA" "$NSB"; do ip link del "$n" 2>/dev/null; done   # a veth end left in the root ns
    rm -f "/run/wireguard/$WGA.sock" "/run/wireguard/$WGB.sock"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    teardown_topology
    rm -f "$D"/*.key
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- tools
need_pkgs=()
for pair in iperf3:iperf3 ip:iproute2 ping:iputils-ping jq:jq wg:wireguard-tools wireguard-go:wireguard-go; do
    c=${pair%%:*} pkg=${pair#*:}
    [[ $c == wireguard-go && -n ${WIREGUARD_GO:-} ]] && continue
    command -v "$c" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}"; } >"$D/apt.log" 2>&1 ||
        log "apt-get failed (see $D/apt.log); continuing with what is there"
fi
for c in iperf3 ip ping jq; do command -v "$c" >/dev/null || die "$c is required"; done
WG=$(command -v wg || true)
WGGO=${WIREGUARD_GO:-$(command -v wireguard-go || true)}

declare -A UNAVAIL=()
[[ -n $WG ]] || { UNAVAIL[wireguard-go]="wg (wireguard-tools) missing"; UNAVAIL[boringtun-cli]="wg (wireguard-tools) missing"; }
[[ -n $WGGO && -x $WGGO ]] || UNAVAIL[wireguard-go]=${UNAVAIL[wireguard-go]:-"wireguard-go binary missing"}

if [[ -n ${WGMESH_BIN:-} ]]; then
    WGM=$WGMESH_BIN
else
    command -v cargo >/dev/null || die "cargo not found (needed to build target/release/wgmesh)"
    log "cargo build --release (wgmesh)"
    (cd "$ROOT" && cargo build --release) >"$D/build.log" 2>&1 || { tail -30 "$D/build.log" >&2; die "cargo build --release failed"; }
    WGM=$ROOT/target/release/wgmesh
fi
[[ -x $WGM ]] || die "wgmesh binary $WGM not found"

BT=${BORINGTUN_CLI:-$ROOT/target/bench-tools/bin/boringtun-cli}
if wanted boringtun-cli && [[ -z ${UNAVAIL[boringtun-cli]:-} && ! -x $BT ]]; then
    if [[ -n ${BORINGTUN_CLI:-} ]]; then
        UNAVAIL[boringtun-cli]="$BT not executable"
    elif ! command -v cargo >/dev/null; then
        UNAVAIL[boringtun-cli]="cargo not found"
    else
        log "building boringtun-cli once into target/bench-tools (cargo install boringtun-cli --locked)"
        mkdir -p "$ROOT/target/bench-tools"
        if ! timeout 1800 cargo install boringtun-cli --locked --root "$ROOT/target/bench-tools" \
                >"$ROOT/target/bench-tools/install.log" 2>&1 || [[ ! -x $BT ]]; then
            UNAVAIL[boringtun-cli]="cargo install failed: $(grep -m1 -E '^error' "$ROOT/target/bench-tools/install.log" ||
                tail -1 "$ROOT/target/bench-tools/install.log") (log: target/bench-tools/install.log)"
        fi
    fi
fi
for v in wireguard-go boringtun-cli; do
    [[ -n ${UNAVAIL[$v]:-} ]] && wanted "$v" && echo "$v: not available (${UNAVAIL[$v]})"
done

CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- helpers
ns_a() { ip netns exec "$NSA" "$@"; }
ns_b() { ip netns exec "$NSB" "$@"; }

setup_topology() {
    teardown_topology
    ip netns add "$NSA" && ip netns add "$NSB" || return 1
    ip -n "$NSA" link set lo up && ip -n "$NSB" link set lo up &&
    ip link add "$NSA" type veth peer name "$NSB" &&
    ip link set "$NSA" netns "$NSA" && ip link set "$NSB" netns "$NSB" &&
    ip -n "$NSA" addr add 198.18.0.1/24 dev "$NSA" && ip -n "$NSB" addr add 198.18.0.2/24 dev "$NSB" &&
    ip -n "$NSA" link set "$NSA" up && ip -n "$NSB" link set "$NSB" up
}

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null; }
hwm_kb() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null; }


wait_reachable() {  # handshake + route up
    local end=$((SECONDS + 20))
    until ns_a ping -n -c 1 -W 1 "$1" >/dev/null 2>&1; do ((SECONDS < end)) || return 1; done
}

start_iperf_server() {
    ip netns exec "$NSB" iperf3 -s -p $PORT >"$D/$1.iperf3-server.log" 2>&1 &
    PIDS+=($!)
    wait_for 5 sh -c "ip netns exec $NSB ss -ltnH 'sport = :$PORT' | grep -q ."
}

iperf() {  # iperf OUTFILE ARGS... (client in A); prints nothing, returns iperf3's status
    local out=$1; shift
    timeout $((SECS + 40)) ip netns exec "$NSA" iperf3 -c "$TARGET" -p $PORT -t "$SECS" -J "$@" >"$out" 2>"$out.err"
    local rc=$?
    sleep 1
    [[ $rc == 0 ]] && jq -e 'has("error")|not' "$out" >/dev/null 2>&1
}

# ---------------------------------------------------------------- tunnel daemons
WGM_PUB_A= WGM_PUB_B=
wgmesh_conf() {  # NAME SUBNET KEYFILE SOCK STATE OFFLOAD PEERPUB PEEREP PEERNET [EXTRA_PEERS_FILE]
    cat <<EOF
[agent]
name = "$1"
subnet = "$2"
cluster_cidr = "10.0.0.0/8"
private_key_file = "$3"
socket = "$4"
state_dir = "$5"
listen_port = 51820
offload = $6

[[peer]]
name = "peer"
public_key = "$7"
endpoint = "$8"
allowed_ips = ["$9"]
EOF
    [[ -n ${10:-} ]] && cat "${10}"
    return 0
}

start_wgmesh() {  # TAG OFFLOAD [EXTRA_PEERS_FILE for A]
    local tag=$1 off=$2 extra=${3:-}
    "$WGM" genkey >"$D/$tag-a.key" && "$WGM" genkey >"$D/$tag-b.key" || return 1
    chmod 600 "$D/$tag-a.key" "$D/$tag-b.key"
    WGM_PUB_A=$("$WGM" pubkey <"$D/$tag-a.key") && WGM_PUB_B=$("$WGM" pubkey <"$D/$tag-b.key") || return 1
    wgmesh_conf bench-a 10.42.1.0/24 "$D/$tag-a.key" "$D/$tag-a.sock" "$D/$tag-a.state" "$off" \
        "$WGM_PUB_B" 198.18.0.2:51820 10.42.2.0/24 "$extra" >"$D/$tag-a.toml"
    wgmesh_conf bench-b 10.42.2.0/24 "$D/$tag-b.key" "$D/$tag-b.sock" "$D/$tag-b.state" "$off" \
        "$WGM_PUB_A" 198.18.0.1:51820 10.42.1.0/24 >"$D/$tag-b.toml"
    ip netns exec "$NSA" "$WGM" agent --config "$D/$tag-a.toml" >"$D/$tag-a.log" 2>&1 &
    DPID_A=$!; PIDS+=($DPID_A)
    ip netns exec "$NSB" "$WGM" agent --config "$D/$tag-b.toml" >"$D/$tag-b.log" 2>&1 &
    DPID_B=$!; PIDS+=($DPID_B)
    wait_for 10 "$WGM" status --socket "$D/$tag-a.sock" && wait_for 10 "$WGM" status --socket "$D/$tag-b.sock" || return 1
    TARGET=10.42.2.1
}

start_wgdaemon() {  # TAG KIND(wireguard-go|boringtun-cli)
    local tag=$1 kind=$2 ns ifn side
    wg genkey >"$D/$tag-a.key" && wg genkey >"$D/$tag-b.key" || return 1
    for side in a b; do
        if [[ $side == a ]]; then ns=$NSA ifn=$WGA; else ns=$NSB ifn=$WGB; fi
        rm -f "/run/wireguard/$ifn.sock"
        if [[ $kind == wireguard-go ]]; then
            ip netns exec "$ns" "$WGGO" -f "$ifn" >"$D/$tag-$side.log" 2>&1 &
        else
            ip netns exec "$ns" "$BT" -f --disable-drop-privileges -l "$D/$tag-$side.daemon.log" "$ifn" \
                >"$D/$tag-$side.log" 2>&1 &
        fi
        PIDS+=($!)
        if [[ $side == a ]]; then DPID_A=$!; else DPID_B=$!; fi
    done
    wait_for 10 test -S "/run/wireguard/$WGA.sock" && wait_for 10 test -S "/run/wireguard/$WGB.sock" || return 1
    local pa pb
    pa=$(wg pubkey <"$D/$tag-a.key") pb=$(wg pubkey <"$D/$tag-b.key")
    ns_a wg set "$WGA" private-key "$D/$tag-a.key" listen-port 51820 \
        peer "$pb" endpoint 198.18.0.2:51820 allowed-ips 10.42.2.0/24 &&
    ns_b wg set "$WGB" private-key "$D/$tag-b.key" listen-port 51820 \
        peer "$pa" endpoint 198.18.0.1:51820 allowed-ips 10.42.1.0/24 &&
    ip -n "$NSA" link set "$WGA" mtu 1420 up && ip -n "$NSB" link set "$WGB" mtu 1420 up &&
    ip -n "$NSA" addr add 10.42.1.1/32 dev "$WGA" && ip -n "$NSB" addr add 10.42.2.1/32 dev "$WGB" &&
    ip -n "$NSA" route add 10.42.2.0/24 dev "$WGA" src 10.42.1.1 &&
    ip -n "$NSB" route add 10.42.1.0/24 dev "$WGB" src 10.42.2.1 || return 1
    TARGET=10.42.2.1
}

# ---------------------------------------------------------------- measurements
declare -A R=()     # R[metric|variant] = value
declare -A NOTE=()

pctl() {  # PERCENT N SORTED_FILE: nearest-rank percentile, ms -> us
    awk -v p="$1" -v n="$2" 'BEGIN{i=int(p*n/100); if (i<p*n/100) i++; if (i<1) i=1} NR==i{printf "%.0f", $1*1000}' "$3"
}

measure_ping() {  # V
    local v=$1 f=$D/$1.ping
    ns_a ping -n -c "$PINGS" -i "$PING_IVL" -W 1 "$TARGET" >"$f" 2>&1
    sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' "$f" | sort -g >"$f.sorted"
    local n; n=$(wc -l <"$f.sorted")
    if ((n == 0)); then R[ping_avg|$v]=FAIL; R[ping_p50|$v]=FAIL; R[ping_p99|$v]=FAIL; return; fi
    R[ping_avg|$v]=$(awk '{s+=$1} END{printf "%.0f", s/NR*1000}' "$f.sorted")
    R[ping_p50|$v]=$(pctl 50 "$n" "$f.sorted")
    R[ping_p99|$v]=$(pctl 99 "$n" "$f.sorted")
    R[ping_loss|$v]=$(calc "%.1f" "($PINGS-$n)*100/$PINGS")
}

measure_tcp() {  # V STREAMS METRIC
    local v=$1 n=$2 m=$3 f=$D/$1.tcp$2.json t0 t1
    t0=$(cpu_ticks "${DAEMONS[@]}")
    if ! iperf "$f" -P "$n"; then R[$m|$v]=FAIL; return 1; fi
    t1=$(cpu_ticks "${DAEMONS[@]}")
    local bps bytes
    bps=$(jq '.end.sum_received.bits_per_second' "$f") bytes=$(jq '.end.sum_received.bytes' "$f")
    R[$m|$v]=$(calc "%.2f" "$bps/1e9")
    if [[ $m == tcp1 ]]; then
        if ((${#DAEMONS[@]})); then
            R[cpu_tcp|$v]=$(calc "%.2f" "($t1-$t0)/$CLK_TCK")
            R[cpu_gb|$v]=$(calc "%.2f" "($t1-$t0)/$CLK_TCK/($bytes/1e9)")
        else
            R[cpu_tcp|$v]=n/a; R[cpu_gb|$v]=n/a
        fi
    fi
}

measure_udp() {  # V
    local v=$1 f=$D/$1.udp.json t0 t1
    t0=$(cpu_ticks "${DAEMONS[@]}")
    if ! iperf "$f" -u -b 0 -l "$UDP_LEN"; then R[udp_kpps|$v]=FAIL; R[udp_loss|$v]=FAIL; return 1; fi
    t1=$(cpu_ticks "${DAEMONS[@]}")
    local got secs
    got=$(jq '.end.sum_received.packets - .end.sum_received.lost_packets' "$f")
    secs=$(jq '.end.sum_received.seconds' "$f")
    R[udp_kpps|$v]=$(calc "%.1f" "$got/$secs/1000")
    R[udp_sent_kpps|$v]=$(calc "%.1f" "$(jq '.end.sum_sent.packets' "$f")/$secs/1000")
    R[udp_loss|$v]=$(calc "%.1f" "$(jq '.end.sum_received.lost_percent' "$f")")
    if ((${#DAEMONS[@]})) && ((got > 0)); then
        R[cpu_udp_pkt|$v]=$(calc "%.2f" "($t1-$t0)/$CLK_TCK*1e6/$got")
    else
        R[cpu_udp_pkt|$v]=n/a
    fi
}

fail_variant() {  # V REASON
    local v=$1 m
    log "$v FAILED: $2"
    NOTE[$v]="FAILED: $2 (logs: target/bench-run/$v-*.log)"
    for m in "${METRICS[@]}"; do R[$m|$v]=${R[$m|$v]:-FAIL}; done
    for f in "$D/$v"-a.log "$D/$v"-b.log; do [[ -s $f ]] && { echo "--- $f (last 20 lines)"; tail -20 "$f"; } >&2; done
}

run_variant() {  # V
    local v=$1
    DAEMONS=() DPID_A= DPID_B= TARGET=
    log "=== $v: setting up"
    setup_topology || { fail_variant "$v" "could not create the namespaces/veth"; return; }
    case $v in
    raw) TARGET=198.18.0.2 ;;
    wgmesh) start_wgmesh "$v" true || { fail_variant "$v" "wgmesh agents did not come up"; teardown_topology; return; } ;;
    wgmesh-nooffload) start_wgmesh "$v" false || { fail_variant "$v" "wgmesh agents did not come up"; teardown_topology; return; } ;;
    wireguard-go|boringtun-cli)
        start_wgdaemon "$v" "$v" || { fail_variant "$v" "$v did not come up / could not be configured"; teardown_topology; return; } ;;
    esac
    if [[ -n $DPID_A ]]; then
        DAEMONS=("$DPID_A" "$DPID_B")
        log "$v: daemon PIDs $DPID_A ($(cat /proc/$DPID_A/comm 2>/dev/null)), $DPID_B ($(cat /proc/$DPID_B/comm 2>/dev/null))"
    fi
    if [[ $v == wgmesh* ]]; then
        sleep 2
        R[rss_idle|$v]=$(calc "%.1f" "$(rss_kb "$DPID_A")/1024")
    fi
    wait_reachable "$TARGET" || { fail_variant "$v" "ping $TARGET from host A never succeeded (20 s)"; teardown_topology; return; }
    start_iperf_server "$v" || { fail_variant "$v" "iperf3 server did not start"; teardown_topology; return; }
    if [[ $v == wgmesh* ]]; then
        "$WGM" status --json --socket "$D/$v-a.sock" >"$D/$v-a.status.json" 2>&1
        NOTE[$v]="offload flags (status --json, host A): $(jq -c '.offload' "$D/$v-a.status.json" 2>/dev/null)"
    fi
    log "$v: ping x$PINGS"; measure_ping "$v"
    log "$v: TCP 1 stream ${SECS}s"; measure_tcp "$v" 1 tcp1
    log "$v: TCP 4 streams ${SECS}s"; measure_tcp "$v" 4 tcp4
    log "$v: UDP ${UDP_LEN} B -b 0 ${SECS}s"; measure_udp "$v"
    if ((${#DAEMONS[@]})); then
        local ra rb
        ra=$(rss_kb "$DPID_A") rb=$(rss_kb "$DPID_B")
        R[rss|$v]=$(calc "%.1f" "(${ra:-0}>${rb:-0}?${ra:-0}:${rb:-0})/1024")
        proc_alive "$DPID_A" && proc_alive "$DPID_B" || NOTE[$v]="${NOTE[$v]:-} WARNING: a daemon exited during the run"
    else
        R[rss|$v]=n/a
    fi
    if [[ $v == wgmesh* ]]; then
        "$WGM" status --json --socket "$D/$v-a.sock" >"$D/$v-a.status-end.json" 2>&1
        NOTE[$v]="${NOTE[$v]:-}; drops at A after tests: $(jq -c '{peer: .peers[0].dropped, global: .dropped}' "$D/$v-a.status-end.json" 2>/dev/null)"
    fi
    log "$v: done (TCP1 ${R[tcp1|$v]:-?} Gbit/s, TCP4 ${R[tcp4|$v]:-?} Gbit/s, UDP ${R[udp_kpps|$v]:-?} kpps, ping avg ${R[ping_avg|$v]:-?} us)"
    teardown_topology
}

# ---------------------------------------------------------------- memory: wgmesh agent with 100 peers
MEM_OUT=
run_memory() {
    local v=mem n i k
    DAEMONS=() DPID_A= DPID_B= TARGET=
    log "=== memory: wgmesh agent with 100 configured peers (1 real + 99 unreachable)"
    : >"$D/mem-extra-peers.toml"
    for i in $(seq 1 99); do
        k=$("$WGM" genkey | "$WGM" pubkey) || { MEM_OUT="memory: could not generate keys"; return; }
        printf '\n[[peer]]\nname = "fake-%d"\npublic_key = "%s"\nendpoint = "198.18.1.%d:51820"\nallowed_ips = ["10.43.%d.0/24"]\n' \
            "$i" "$k" "$i" "$i" >>"$D/mem-extra-peers.toml"
    done
    setup_topology || { MEM_OUT="memory: could not create the namespaces"; return; }
    if ! start_wgmesh "$v" true "$D/mem-extra-peers.toml"; then
        MEM_OUT="memory: wgmesh agents did not come up; $(tail -5 "$D/mem-a.log" | tr '\n' ' ')"
        teardown_topology; return
    fi
    n=$("$WGM" status --json --socket "$D/mem-a.sock" | jq '.peers | length')
    sleep 5
    local idle idle_b after hwm
    idle=$(rss_kb "$DPID_A") idle_b=$(rss_kb "$DPID_B")
    if wait_reachable 10.42.2.1 && start_iperf_server "$v"; then
        TARGET=10.42.2.1
        iperf "$D/mem.tcp1.json" -P 1 || true
        after=$(rss_kb "$DPID_A") hwm=$(hwm_kb "$DPID_A")
        local gbps; gbps=$(jq '.end.sum_received.bits_per_second/1e9' "$D/mem.tcp1.json" 2>/dev/null)
        MEM_OUT=$(printf '%s\n' \
            "wgmesh agent resident memory (VmRSS, MiB)" \
            "  host A, $n peers configured (1 real + 99 at 198.18.1.N, never reached):" \
            "    idle, 5 s after start:                 $(calc %.1f "${idle:-0}/1024")" \
            "    right after a ${SECS} s TCP test (1 stream, $(calc %.2f "${gbps:-0}") Gbit/s): $(calc %.1f "${after:-0}/1024")   (VmHWM $(calc %.1f "${hwm:-0}/1024"))" \
            "  host B, 1 peer, idle 5 s after start:      $(calc %.1f "${idle_b:-0}/1024")" \
            "  wgmesh run above, host A, 1 peer: idle $(printf %s "${R[rss_idle|wgmesh]:--}"), after all tests (max of both ends) $(printf %s "${R[rss|wgmesh]:--}")")
    else
        MEM_OUT=$(printf '%s\n' "wgmesh agent resident memory (VmRSS, MiB)" \
            "  host A, $n peers, idle 5 s after start: $(calc %.1f "${idle:-0}/1024")" \
            "  (the tunnel to the real peer did not come up, no after-traffic figure; see target/bench-run/mem-a.log)")
    fi
    teardown_topology
}

# ---------------------------------------------------------------- run
METRICS=(tcp1 tcp4 udp_kpps udp_sent_kpps udp_loss ping_avg ping_p50 ping_p99 ping_loss cpu_tcp cpu_gb cpu_udp_pkt rss bg_cpu)
declare -A LABEL=(
    [tcp1]="TCP 1 stream (Gbit/s)"
    [tcp4]="TCP 4 streams (Gbit/s)"
    [udp_kpps]="UDP ${UDP_LEN} B received (kpps)"
    [udp_sent_kpps]="UDP ${UDP_LEN} B sent by iperf3 (kpps)"
    [udp_loss]="UDP ${UDP_LEN} B loss (%)"
    [ping_avg]="ping RTT avg (us)"
    [ping_p50]="ping RTT p50 (us)"
    [ping_p99]="ping RTT p99 (us)"
    [ping_loss]="ping loss (%)"
    [cpu_tcp]="daemon CPU in TCP 1 stream (s)"
    [cpu_gb]="daemon CPU s per GB (TCP 1 stream)"
    [cpu_udp_pkt]="daemon CPU us per UDP pkt received"
    [rss]="daemon RSS after tests (MiB, max end)"
    [bg_cpu]="other CPU load just before (% of all)"
)

busy_pct() {  # whole-machine CPU busy % over ${1:-3} s (nothing of ours runs meanwhile)
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat); sleep "${1:-3}"
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); d=y[2]-x[2]; printf "%.0f", (d>0 ? (y[1]-x[1])*100/d : 0)}'
}
START_TIME=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
START_BUSY=$(busy_pct)
log "background CPU load before the run: ${START_BUSY}% of $(nproc) CPUs"
for v in "${VARIANTS[@]}"; do
    if ! wanted "$v"; then continue; fi
    if [[ -n ${UNAVAIL[$v]:-} ]]; then NOTE[$v]="not available (${UNAVAIL[$v]})"; continue; fi
    R[bg_cpu|$v]=$(busy_pct 2)
    if ((R[bg_cpu|$v] > 10 && QUIET_WAIT > 0)); then
        log "other processes use ${R[bg_cpu|$v]}% CPU; waiting up to ${QUIET_WAIT}s for the machine to go quiet (BENCH_QUIET_WAIT)"
        end=$((SECONDS + QUIET_WAIT))
        while ((R[bg_cpu|$v] > 10 && SECONDS < end)); do R[bg_cpu|$v]=$(busy_pct 2); done
    fi
    run_variant "$v"
done
wanted memory && run_memory
END_BUSY=$(busy_pct)

# ---------------------------------------------------------------- report
cell() {  # metric variant
    local v=$2
    if ! wanted "$v"; then echo "skipped"
    elif [[ -n ${UNAVAIL[$v]:-} ]]; then echo "n/a"
    else echo "${R[$1|$v]:--}"
    fi
}
ratio() {  # metric num den
    local a b
    [[ $1 == bg_cpu || $1 == ping_loss ]] && { echo "-"; return; }
    a=$(cell "$1" "$2") b=$(cell "$1" "$3")
    if [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] && awk "BEGIN{exit !($b > 0)}"; then calc "%.2fx" "$a/$b"; else echo "-"; fi
}
report() {
    local rev dirty=""
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | awk '{print $2}' | tr '\n' ' ')
    [[ -n $dirty ]] && dirty=" + uncommitted changes in: $dirty"
    echo "wgmesh benchmark, $START_TIME, commit $rev$dirty"
    echo "host: $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), kernel $(uname -r)"
    echo "tools: $(iperf3 --version | head -1 | cut -d' ' -f1-2); wireguard-go $( [[ -n $WGGO ]] && "$WGGO" --version 2>/dev/null | head -1 | awk '{print $2}' || echo n/a); boringtun-cli $( [[ -z ${UNAVAIL[boringtun-cli]:-} && -x $BT ]] && "$BT" --version 2>/dev/null | awk '{print $2}' || echo n/a); wgmesh $WGM"
    echo "topology: 2 netns + veth (198.18.0.1/24 <-> .2/24), tunnel MTU 1420, traffic host A -> host B (10.42.2.1);"
    echo "          iperf3 ${SECS} s per test, UDP -b 0 -l ${UDP_LEN}, $PINGS pings at ${PING_IVL} s; CPU = utime+stime of both tunnel daemons"
    echo "background CPU use by other processes (3 s samples, % of all CPUs): before ${START_BUSY}%, after ${END_BUSY}%$(
        awk -v a="$START_BUSY" -v b="$END_BUSY" -v m="$(for v in "${VARIANTS[@]}"; do echo "${R[bg_cpu|$v]:-0}"; done | sort -g | tail -1)" 'BEGIN{if (a > 10 || b > 10 || m > 10) print "  -- machine was busy: figures are noisy"}')"
    echo "note: wireguard-go got batching and TUN/UDP offloads in 2023 (v0.0.20230223 and later), older builds use the per-packet path;"
    echo "      boringtun-cli is boringtun's own device module (per-packet syscalls, 4 threads by default)"
    echo
    local w=38 c=14 m v
    printf "%-${w}s" "metric"
    for v in raw wgmesh "wgmesh(no-off)" wireguard-go boringtun-cli "wgm/wg-go" "wgm/boringtun"; do printf " %$((c - 1))s" "$v"; done
    echo
    printf '%*s\n' $((w + 7 * c)) '' | tr ' ' '-'
    for m in "${METRICS[@]}"; do
        printf "%-${w}s" "${LABEL[$m]}"
        for v in "${VARIANTS[@]}"; do printf " %$((c - 1))s" "$(cell "$m" "$v")"; done
        printf " %$((c - 1))s %$((c - 1))s\n" "$(ratio "$m" wgmesh wireguard-go)" "$(ratio "$m" wgmesh boringtun-cli)"
    done
    echo "(ratios are plain value ratios: > 1 is better for throughput/kpps, < 1 is better for RTT, CPU, loss, RSS)"
    local any=0
    for v in "${VARIANTS[@]}"; do
        [[ -n ${NOTE[$v]:-} ]] && { ((any)) || echo; any=1; echo "$v: ${NOTE[$v]}"; }
    done
    if [[ -n $MEM_OUT ]]; then echo; echo "$MEM_OUT"; fi
}

echo
report | tee "$ROOT/target/bench-latest.txt.tmp"
mv "$ROOT/target/bench-latest.txt.tmp" "$ROOT/target/bench-latest.txt"
log "table written to target/bench-latest.txt; logs in target/bench-run/"
