#!/usr/bin/env bash
# wgmesh local multi-host demo.
#
# Builds HOSTS "hosts" (network namespaces) and a control plane (its own namespace) on a shared
# underlay (a bridge in its own namespace; hosts 198.18.0.N/24, the control plane 198.18.0.254),
# creates a reusable join token with the admin CLI, and runs one wgmesh agent per host that joins
# with it: no peer lists, the control plane hands out the subnets (of 10.42.0.0/16) and peers.
# Then attaches two workload namespaces per host, shows `wgmesh node list`, `wgmesh status` and a
# cross-host ping matrix, and removes everything (on Enter, on exit, on error and on Ctrl-C).
#
#   sudo ./scripts/demo.sh [--no-wait]
#
# Environment: WGMESH_BIN (use this binary instead of building), WGMESH_DEMO_HOSTS (default 3).
# Exit status: 0 when every cross-host ping got through, 1 when one did not, 2 on a setup error.
set -eEuo pipefail

DEMO=demo.sh
HOSTS=${WGMESH_DEMO_HOSTS:-3}
WORKLOADS=2
P="wgd$$"          # prefix of every namespace this run makes
# shellcheck source=scripts/demo-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"
demo_args "$@"
demo_traps

# --- 1. prerequisites --------------------------------------------------------------------------
demo_prerequisites
demo_binary
demo_dir

# --- 2. underlay and hosts ---------------------------------------------------------------------
demo_underlay

# --- 3. control plane and join token -----------------------------------------------------------
demo_control

# --- 4. agents ---------------------------------------------------------------------------------
demo_agents

# --- 5. workloads ------------------------------------------------------------------------------
WL=()   # "h w namespace ip"
for ((h = 1; h <= HOSTS; h++)); do
    for ((w = 1; w <= WORKLOADS; w++)); do
        ns="$P-h${h}w$w"
        mkns "$ns"
        ip=$("$BIN" attach --netns "$ns" --socket "$DIR/h$h.sock") || die "attach $ns to h$h failed"
        WL+=("$h $w $ns ${ip%/*}")
    done
done
step "workloads: $(for x in "${WL[@]}"; do read -r h w _ ip <<< "$x"; printf 'h%sw%s=%s ' "$h" "$w" "$ip"; done | sed 's/ $//')"

# --- 6. ping matrix, throughput, status ---------------------------------------------------------
ping_netns() {   # I J: workload I pings workload J
    local nsi ipj
    read -r _ _ nsi _ <<< "${WL[$1]}"
    read -r _ _ _ ipj <<< "${WL[$2]}"
    ip netns exec "$nsi" ping -c 1 -W 2 -q "$ipj"
}
ping_matrix ping_netns

if command -v iperf3 >/dev/null; then
    read -r _ _ srv_ns srv_ip <<< "${WL[WORKLOADS]}"   # first workload of h2
    read -r _ _ cli_ns _ <<< "${WL[0]}"                # first workload of h1
    ip netns exec "$srv_ns" iperf3 -s -1 --logfile "$DIR/iperf3-server.log" &
    PIDS+=($!)
    for ((i = 0; i < 50; i++)); do
        [[ -n $(ip netns exec "$srv_ns" ss -Hltn 'sport = :5201' 2>/dev/null) ]] && break
        sleep 0.1
    done
    rate=$(timeout --foreground 15 ip netns exec "$cli_ns" iperf3 -c "$srv_ip" -t 2 --connect-timeout 2000 2>&1 |
        awk '/receiver/ { print $(NF-2), $(NF-1) }' || true)
    step "TCP throughput h1w1 -> h2w1 (iperf3, 2 s): ${rate:-failed}"
fi
step "wgmesh status on h1:"
"$BIN" status --socket "$DIR/h1.sock" | sed 's/^/    /'

# --- 7. wait, then clean up (trap) -------------------------------------------------------------
((failed == 0)) || demo_failure_logs
step "ready after $(elapsed) s"
if ((!NO_WAIT)) && [[ -t 0 ]]; then
    read -r _ _ _ hint_ip <<< "${WL[WORKLOADS + 1]}"   # second workload of h2
    echo "    Everything is still up: try e.g.  ip netns exec $P-h1w1 ping $hint_ip"
    echo "                                      $BIN status --socket $DIR/h2.sock"
    echo "                                      WGMESH_ADMIN=$WGMESH_ADMIN ip netns exec $P-h1 $BIN node list"
    read -r -p "    Press Enter to clean up... " _ || true
fi
((failed == 0)) || exit 1
exit 0
