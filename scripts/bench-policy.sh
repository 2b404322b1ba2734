#!/usr/bin/env bash
# What the network policy costs on the data path (issue 10), side by side with wireguard-go.
#
#   sudo scripts/bench-policy.sh
#
# One topology for the wgmesh variants: a control plane and hosts A and B (network namespaces on
# an underlay bridge, 198.18.0.0/24), joined with a token. Host A carries `app=secure-app`, host B
# `role=frontend` (agent labels), so host B's own traffic to host A's bridge address is the seed
# policy's `frontend-to-app` flow. Traffic goes from host B to host A (10.64.x.1), as in bench.sh.
# In each round, one after the other on the same agents:
#
#   none    no policy applied (everything allowed, nothing tracked)
#   seed    docs/policy/seed.toml plus `bench-udp` (udp/80) and `bench-icmp` (icmp) rules, so that
#           iperf3's UDP test and ping are allowed flows too
#   large   the seed policy plus 1,000 rules over 1,000 workloads of a third host (joined and
#           reporting its workloads through the API, never started): host A's filter holds them all
#
# then, in fresh namespaces, wireguard-go between two hosts (a veth pair), host to host.
# Each is measured with: ping RTT (avg, p99), iperf3 TCP 1 stream (throughput and the tunnel
# daemons' CPU seconds per GB), iperf3 UDP 64-byte packets (-b 0, received kpps). Values are the
# mean over the rounds; the table gives each policy variant relative to `none` (the policy's
# cost) and wgmesh `none` relative to wireguard-go.
#
# Knobs (environment):
#   BENCH_SECONDS=8      length of each iperf3 test
#   BENCH_ROUNDS=2       rounds of none/seed/large
#   BENCH_PINGS=300      pings per variant (every 5 ms)
#   BENCH_BULK=1000      rules and workloads of the `large` variant
#   WGMESH_BIN=path      use this wgmesh binary instead of building target/release/wgmesh
#   WIREGUARD_GO=path    use this wireguard-go instead of the one on PATH
#
# Only one benchmark runs at a time (flock on target/bench.lock). Everything it creates is named
# with its PID and removed on exit, also on Ctrl-C.

set -u -o pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
SECS=${BENCH_SECONDS:-8}
ROUNDS=${BENCH_ROUNDS:-2}
PINGS=${BENCH_PINGS:-300}
BULK=${BENCH_BULK:-1000}
PORT=80

log() { printf '[bench-policy %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (namespaces, TUN devices)"
for n in "$SECS" "$ROUNDS" "$PINGS" "$BULK"; do
    [[ $n =~ ^[0-9]+$ && $n -ge 1 ]] || die "BENCH_SECONDS, BENCH_ROUNDS, BENCH_PINGS and BENCH_BULK must be positive integers"
done
((BULK <= 2000)) || die "BENCH_BULK: at most 2000 (the third host's subnet is a /21)"

mkdir -p "$ROOT/target"
exec 9>"$ROOT/target/bench.lock"
flock -n 9 || die "another benchmark is running (target/bench.lock); benchmarks must not overlap"

# ---------------------------------------------------------------- names, state, cleanup
P=wp$$
UL=${P}u NSA=${P}a NSB=${P}b NSC=${P}c
WGA=wg$$a WGB=wg$$b
D=$ROOT/target/bench-policy-run
rm -rf "$D"; mkdir -p "$D"; chmod 700 "$D"
PIDS=()



teardown() {
    kill_started
    local n p
    for n in "$NSA" "$NSB" "$NSC" "$UL"; do
        for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
    for n in "$NSA" "$NSB" "$NSC" "$UL"; do ip netns del "$n" 2>/dev/null; done
    rm -f "/run/wireguard/$WGA.sock" "/run/wireguard/$WGB.sock"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    teardown
    rm -f "$D"/*.key "$D"/*.credential "$D"/join-token
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- tools
need=()
for pair in iperf3:iperf3 ip:iproute2 ping:iputils-ping jq:jq curl:curl wg:wireguard-tools wireguard-go:wireguard-go; do
    c=${pair%%:*}
    [[ $c == wireguard-go && -n ${WIREGUARD_GO:-} ]] && continue
    command -v "$c" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    log "installing ${need[*]}"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"; } >"$D/apt.log" 2>&1 ||
        log "apt-get failed (see $D/apt.log); continuing with what is there"
fi
for c in iperf3 ip ping jq curl python3; do command -v "$c" >/dev/null || die "$c is required"; done
WGGO=${WIREGUARD_GO:-$(command -v wireguard-go || true)}
WG=$(command -v wg || true)

if [[ -n ${WGMESH_BIN:-} ]]; then
    WGM=$WGMESH_BIN
else
    log "cargo build --release (wgmesh)"
    (cd "$ROOT" && cargo build --release --locked) >"$D/build.log" 2>&1 || { tail -30 "$D/build.log" >&2; die "cargo build --release failed"; }
    WGM=$ROOT/target/release/wgmesh
fi
[[ -x $WGM ]] || die "wgmesh binary $WGM not found"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- helpers
mkns() { ip netns add "$1" && ip -n "$1" link set lo up; }

declare -A R=()   # R[metric|variant] = space-separated values, one per round
add() { R[$1|$2]="${R[$1|$2]:-} $3"; }
mean() { awk '{ s = 0; n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) { s += $i; n++ } if (n) printf "%.2f", s / n; else printf "FAIL" }' <<<"${R[$1|$2]:-}"; }

measure() {  # VARIANT CLIENT_NS TARGET DAEMON_PIDS...
    local v=$1 ns=$2 target=$3; shift 3
    local f=$D/$v.$RANDOM t0 t1 n
    ip netns exec "$ns" ping -n -c "$PINGS" -i 0.005 -W 1 "$target" >"$f.ping" 2>&1
    sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' "$f.ping" | sort -g >"$f.rtt"
    n=$(wc -l <"$f.rtt")
    if ((n > 0)); then
        add ping_avg "$v" "$(awk '{s+=$1} END{printf "%.0f", s/NR*1000}' "$f.rtt")"
        add ping_p99 "$v" "$(awk -v n="$n" 'BEGIN{i=int(0.99*n); if (i<0.99*n) i++; if (i<1) i=1} NR==i{printf "%.0f", $1*1000}' "$f.rtt")"
    else
        add ping_avg "$v" FAIL; add ping_p99 "$v" FAIL
    fi
    t0=$(cpu_ticks "$@")
    if timeout $((SECS + 30)) ip netns exec "$ns" iperf3 -c "$target" -p $PORT -t "$SECS" -J >"$f.tcp" 2>&1 &&
        jq -e 'has("error")|not' "$f.tcp" >/dev/null; then
        t1=$(cpu_ticks "$@")
        add tcp1 "$v" "$(calc %.3f "$(jq .end.sum_received.bits_per_second "$f.tcp")/1e9")"
        add cpu_gb "$v" "$(calc %.3f "($t1-$t0)/$CLK_TCK/($(jq .end.sum_received.bytes "$f.tcp")/1e9)")"
    else
        add tcp1 "$v" FAIL; add cpu_gb "$v" FAIL
    fi
    sleep 1
    if timeout $((SECS + 30)) ip netns exec "$ns" iperf3 -c "$target" -p $PORT -t "$SECS" -u -b 0 -l 64 -J >"$f.udp" 2>&1 &&
        jq -e 'has("error")|not' "$f.udp" >/dev/null; then
        add udp_kpps "$v" "$(jq '(.end.sum_received.packets - .end.sum_received.lost_packets) / .end.sum_received.seconds / 100 | round / 10' "$f.udp")"
    else
        add udp_kpps "$v" FAIL
    fi
    sleep 1
    log "$v: TCP $(tail -c 8 <<<"${R[tcp1|$v]}") Gbit/s, UDP $(awk '{print $NF}' <<<"${R[udp_kpps|$v]}") kpps, ping avg $(awk '{print $NF}' <<<"${R[ping_avg|$v]}") us"
}

# ---------------------------------------------------------------- wgmesh topology
CTL_IP=198.18.0.10 CTL_URL=https://198.18.0.10:7443
setup_mesh() {
    mkns "$UL" || return 1
    ip -n "$UL" link add br0 type bridge && ip -n "$UL" link set br0 up || return 1
    local h i=1
    for h in a b c; do
        local ns=${P}$h ip=198.18.0.$i
        [[ $h == c ]] && ip=$CTL_IP
        mkns "$ns" || return 1
        ip -n "$UL" link add name "p$h" type veth peer name ul0 netns "$ns" &&
            ip -n "$UL" link set "p$h" master br0 up &&
            ip -n "$ns" addr add "$ip/24" dev ul0 && ip -n "$ns" link set ul0 up || return 1
        i=$((i + 1))
    done
    printf '[control]\nlisten = "0.0.0.0:7443"\nadvertise = ["%s"]\nstate_dir = "%s"\ncluster_cidr = "10.64.0.0/16"\nhost_prefix = 21\n' \
        "$CTL_IP" "$D/control" >"$D/control.toml"
    ip netns exec "$NSC" "$WGM" control --config "$D/control.toml" >"$D/control.log" 2>&1 &
    PIDS+=($!)
    export WGMESH_ADMIN=$D/control/admin.toml
    wait_for 20 test -s "$WGMESH_ADMIN" || return 1
    sleep 0.5
    ip netns exec "$NSA" "$WGM" token create --ttl 1h --reusable >"$D/join-token" || return 1
    local label
    for h in a b; do
        [[ $h == a ]] && label='app = "secure-app"' || label='role = "frontend"'
        printf '[agent]\nname = "bench-%s"\nendpoint = "198.18.0.%d:51820"\nsocket = "%s"\nstate_dir = "%s"\nlabels = { %s }\n\n[control]\nurl = "%s"\njoin_token_file = "%s"\n' \
            "$h" "$([[ $h == a ]] && echo 1 || echo 2)" "$D/$h.sock" "$D/$h.state" "$label" "$CTL_URL" "$D/join-token" >"$D/$h.toml"
        ip netns exec "${P}$h" "$WGM" agent --config "$D/$h.toml" >"$D/$h.log" 2>&1 &
        PIDS+=($!)
        [[ $h == a ]] && PID_A=$! || PID_B=$!
    done
    wait_for 30 "$WGM" status --socket "$D/a.sock" && wait_for 30 "$WGM" status --socket "$D/b.sock" || return 1
    TARGET=$("$WGM" status --json --socket "$D/a.sock" | jq -r '.subnet' | sed 's|\.0/.*|.1|')
    wait_for 30 ip netns exec "$NSB" ping -n -c 1 -W 1 "$TARGET" || return 1
    ip netns exec "$NSA" iperf3 -s -B "$TARGET" -p $PORT >"$D/iperf3-server.log" 2>&1 &
    PIDS+=($!)
    wait_for 5 sh -c "ip netns exec $NSA ss -ltnH 'sport = :$PORT' | grep -q ."
}

# A third host that joins and reports BULK workloads through the API; no agent runs for it.
add_bulk_host() {
    python3 - "$WGMESH_ADMIN" "$D/ca.pem" <<'EOF' || return 1
import sys, tomllib
open(sys.argv[2], "w").write(tomllib.load(open(sys.argv[1], "rb"))["ca_cert"])
EOF
    local pub reply subnet
    "$WGM" genkey | "$WGM" pubkey >"$D/bulk.pub" || return 1
    pub=$(cat "$D/bulk.pub")
    reply=$(ip netns exec "$NSA" curl -sS --fail-with-body --cacert "$D/ca.pem" -X POST "$CTL_URL/v1/join" \
        -d "{\"token\":\"$(cat "$D/join-token")\",\"name\":\"bench-bulk\",\"public_key\":\"$pub\",\"endpoint\":\"198.18.0.99:51820\"}") ||
        { log "join of bench-bulk failed: $reply"; return 1; }
    jq -r .credential <<<"$reply" >"$D/bulk.credential"
    subnet=$(jq -r .netmap.host.subnet <<<"$reply")
    python3 - "$subnet" "$BULK" >"$D/bulk-workloads.json" <<'EOF' || return 1
import ipaddress, json, sys
net = ipaddress.ip_network(sys.argv[1]); hosts = list(net.hosts())[1:]
print(json.dumps({"workloads": [{"name": f"w{i}", "ip": str(hosts[i]), "labels": {"bulk": str(i)}} for i in range(int(sys.argv[2]))]}))
EOF
    ip netns exec "$NSA" curl -sS --fail-with-body --cacert "$D/ca.pem" -X PUT "$CTL_URL/v1/hosts/bench-bulk/workloads" \
        -H "Authorization: Bearer $(cat "$D/bulk.credential")" --data-binary @"$D/bulk-workloads.json" >"$D/bulk-report.log" 2>&1 ||
        { log "workload report of bench-bulk failed: $(cat "$D/bulk-report.log")"; return 1; }
}

write_policies() {
    # The seed's own test that ICMP is denied is turned around: the bench allows ping.
    perl -0pe 's/port = "icmp"\nexpect = "deny"/port = "icmp"\nexpect = "allow"/' \
        "$ROOT/docs/policy/seed.toml" >"$D/seed.toml"
    cat >>"$D/seed.toml" <<'EOF'

[[rule]]
name = "bench-udp"
from = { role = "frontend" }
to   = { app = "secure-app" }
ports = ["udp/80"]

[[rule]]
name = "bench-icmp"
from = { role = "frontend" }
to   = { app = "secure-app" }
ports = ["icmp"]
EOF
    cp "$D/seed.toml" "$D/large.toml"
    local i
    for ((i = 0; i < BULK; i++)); do
        printf '\n[[rule]]\nname = "bulk-%d"\nfrom = { bulk = "%d" }\nto   = { app = "secure-app" }\nports = ["tcp/%d"]\n' \
            "$i" "$i" $((10000 + i))
    done >>"$D/large.toml"
}

# Applies policy VARIANT (none removes it) and waits until host A's and B's filters have it.
apply_policy() {
    local v=$1 gen_a gen_b
    gen_a=$("$WGM" status --json --socket "$D/a.sock" | jq -c '.policy.generation')
    gen_b=$("$WGM" status --json --socket "$D/b.sock" | jq -c '.policy.generation')
    if [[ $v == none ]]; then
        [[ $gen_a == null && $gen_b == null ]] && return 0
        ip netns exec "$NSA" "$WGM" policy remove >"$D/apply-$v.log" 2>&1 || { cat "$D/apply-$v.log" >&2; return 1; }
    else
        ip netns exec "$NSA" "$WGM" policy apply "$D/$v.toml" >"$D/apply-$v.log" 2>&1 || { cat "$D/apply-$v.log" >&2; return 1; }
    fi
    # Host A's filter changes with every variant; host B's only when its own part does (the
    # bulk rules are all host A's), so B just has to hold a policy, or none.
    local want_b='!= "null"'
    [[ $v == none ]] && want_b='= "null"'
    wait_for 20 sh -c "[ \"\$('$WGM' status --json --socket '$D/a.sock' | jq -c .policy.generation)\" != '$gen_a' ] &&
                       [ \"\$('$WGM' status --json --socket '$D/b.sock' | jq -c .policy.generation)\" $want_b ]" || return 1
    RULES_A[$v]=$("$WGM" status --json --socket "$D/a.sock" | jq -r '.policy.rules // 0')
    sleep 1
}

# ---------------------------------------------------------------- wireguard-go topology
setup_wggo() {
    mkns "$NSA" && mkns "$NSB" || return 1
    ip link add "$NSA" netns "$NSA" type veth peer name "$NSB" netns "$NSB" &&
        ip -n "$NSA" addr add 198.18.0.1/24 dev "$NSA" && ip -n "$NSB" addr add 198.18.0.2/24 dev "$NSB" &&
        ip -n "$NSA" link set "$NSA" up && ip -n "$NSB" link set "$NSB" up || return 1
    wg genkey >"$D/wg-a.key" && wg genkey >"$D/wg-b.key" || return 1
    ip netns exec "$NSA" "$WGGO" -f "$WGA" >"$D/wg-a.log" 2>&1 & PIDS+=($!); PID_A=$!
    ip netns exec "$NSB" "$WGGO" -f "$WGB" >"$D/wg-b.log" 2>&1 & PIDS+=($!); PID_B=$!
    wait_for 10 test -S "/run/wireguard/$WGA.sock" && wait_for 10 test -S "/run/wireguard/$WGB.sock" || return 1
    ip netns exec "$NSA" wg set "$WGA" private-key "$D/wg-a.key" listen-port 51820 \
        peer "$(wg pubkey <"$D/wg-b.key")" endpoint 198.18.0.2:51820 allowed-ips 10.42.2.0/24 &&
        ip netns exec "$NSB" wg set "$WGB" private-key "$D/wg-b.key" listen-port 51820 \
            peer "$(wg pubkey <"$D/wg-a.key")" endpoint 198.18.0.1:51820 allowed-ips 10.42.1.0/24 &&
        ip -n "$NSA" link set "$WGA" mtu 1420 up && ip -n "$NSB" link set "$WGB" mtu 1420 up &&
        ip -n "$NSA" addr add 10.42.1.1/24 dev "$WGA" && ip -n "$NSB" addr add 10.42.2.1/24 dev "$WGB" &&
        ip -n "$NSA" route add 10.42.2.0/24 dev "$WGA" && ip -n "$NSB" route add 10.42.1.0/24 dev "$WGB" || return 1
    TARGET=10.42.1.1
    wait_for 20 ip netns exec "$NSB" ping -n -c 1 -W 1 "$TARGET" || return 1
    ip netns exec "$NSA" iperf3 -s -B "$TARGET" -p $PORT >"$D/wg-iperf3-server.log" 2>&1 &
    PIDS+=($!)
    wait_for 5 sh -c "ip netns exec $NSA ss -ltnH 'sport = :$PORT' | grep -q ."
}

# ---------------------------------------------------------------- run
declare -A RULES_A=()
START_TIME=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
write_policies
log "=== wgmesh: control plane and hosts A, B"
setup_mesh || { tail -20 "$D"/*.log >&2; die "the wgmesh topology did not come up (logs in $D)"; }
log "=== bench-bulk: joining and reporting $BULK workloads"
add_bulk_host || die "could not add the bulk host"
for ((r = 1; r <= ROUNDS; r++)); do
    for v in none seed large; do
        log "round $r: $v"
        if ! apply_policy "$v"; then
            cat "$D/apply-$v.log" >&2
            for h in a b; do log "host $h policy: $("$WGM" status --json --socket "$D/$h.sock" | jq -c .policy)"; done
            die "applying policy $v failed or did not reach the hosts (logs in $D)"
        fi
        measure "$v" "$NSB" "$TARGET" "$PID_A" "$PID_B"
    done
done
"$WGM" status --json --socket "$D/a.sock" >"$D/a.status-end.json"
DENIED=$(jq -c '[.policy.denied[]? | .packets] | add // 0' "$D/a.status-end.json")
teardown
if [[ -n $WGGO && -x $WGGO && -n $WG ]]; then
    log "=== wireguard-go"
    if setup_wggo; then
        for ((r = 1; r <= ROUNDS; r++)); do measure wireguard-go "$NSB" "$TARGET" "$PID_A" "$PID_B"; done
    else
        log "wireguard-go did not come up (logs in $D)"
    fi
    teardown
fi

# ---------------------------------------------------------------- report
rel() {  # METRIC VARIANT BASE: relative change in %
    local a b
    a=$(mean "$1" "$2") b=$(mean "$1" "$3")
    if [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] && awk "BEGIN{exit !($b > 0)}"; then calc "%+.1f%%" "($a-$b)*100/$b"; else echo "-"; fi
}
report() {
    echo "wgmesh policy benchmark, $START_TIME, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "host: $(nproc) CPUs, kernel $(uname -r); $ROUNDS rounds of ${SECS} s iperf3 tests and $PINGS pings, host B -> host A"
    echo "filters at host A: none, seed ${RULES_A[seed]:-?} rules, large ${RULES_A[large]:-?} rules over $BULK workloads"
    echo "packets host A's policy denied over the run (should be 0: every measured flow is allowed): $DENIED"
    echo
    local m v
    printf '%-30s %12s %12s %12s %12s %10s %10s %12s\n' metric none seed large wireguard-go "seed/none" "large/none" "none/wg-go"
    printf '%0.s-' $(seq 116); echo
    declare -A L=([tcp1]="TCP 1 stream (Gbit/s)" [cpu_gb]="daemon CPU s per GB (TCP)" [udp_kpps]="UDP 64 B received (kpps)"
                  [ping_avg]="ping RTT avg (us)" [ping_p99]="ping RTT p99 (us)")
    for m in tcp1 cpu_gb udp_kpps ping_avg ping_p99; do
        printf '%-30s %12s %12s %12s %12s %10s %10s %12s\n' "${L[$m]}" "$(mean $m none)" "$(mean $m seed)" \
            "$(mean $m large)" "$(mean $m wireguard-go)" "$(rel $m seed none)" "$(rel $m large none)" "$(rel $m none wireguard-go)"
    done
    echo
    echo "per-round values (none | seed | large | wireguard-go):"
    for m in tcp1 cpu_gb udp_kpps ping_avg; do
        printf '  %-10s %s |%s |%s |%s\n' "$m" "${R[$m|none]:-}" "${R[$m|seed]:-}" "${R[$m|large]:-}" "${R[$m|wireguard-go]:-}"
    done
    echo "(run-to-run noise on this machine is ~10-15 %; the policy costs a conntrack lookup per packet of an"
    echo " established flow and a filter decision per new flow, so seed and large should stay within that noise)"
}
echo
report | tee "$ROOT/target/bench-policy-latest.txt"
log "table written to target/bench-policy-latest.txt; logs in $D"
