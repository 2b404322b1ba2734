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
set -euo pipefail

HOSTS=${WGMESH_DEMO_HOSTS:-3}
WORKLOADS=2
NO_WAIT=0
for arg in "$@"; do
    case $arg in
        --no-wait) NO_WAIT=1 ;;
        -h | --help) sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
[[ $HOSTS =~ ^[0-9]+$ ]] && ((HOSTS >= 2 && HOSTS <= 200)) ||
    { echo "demo.sh: WGMESH_DEMO_HOSTS must be 2..200" >&2; exit 2; }

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"   # `su` without `-` leaves them out
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
START=$(date +%s.%N)
P="wgd$$"          # prefix of every namespace this run makes
DIR=""             # the temp dir (configs, keys, sockets, state, logs)
NETNS=()           # namespaces made, in creation order
PIDS=()            # control plane, agents and iperf3 server started
CTL_IP=198.18.0.254
CTL_URL="https://$CTL_IP:7443"
CLEANED=""

step() { printf '==> %s\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 2; }
elapsed() { awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

# A PID is only signalled while it is a live child of this shell (so never a process we did
# not start, even if a PID were reused): /proc/PID/stat has "PID (comm) STATE PPID ...".
ours() {
    local st ppid
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    read -r st ppid _ <<< "${st##*) }"
    [[ $ppid == "$$" && $st != Z ]]
}

cleanup() {
    local pid ns i
    [[ -n $CLEANED ]] && return 0
    CLEANED=1
    set +e
    trap '' INT TERM
    for pid in "${PIDS[@]}"; do ours "$pid" && kill -TERM "$pid" 2>/dev/null; done
    for ((i = 0; i < 50; i++)); do            # up to 5 s for a clean shutdown
        local alive=0
        for pid in "${PIDS[@]}"; do ours "$pid" && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        if ours "$pid"; then
            echo "demo.sh: pid $pid did not stop on SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    wait 2>/dev/null                          # reap agents, iperf3, stray pings (all bounded)
    for ((i = ${#NETNS[@]} - 1; i >= 0; i--)); do
        ns=${NETNS[i]}
        [[ -e /run/netns/$ns ]] && ip netns del "$ns" 2>/dev/null
    done
    [[ -n $DIR && -d $DIR ]] && rm -rf -- "$DIR"
    [[ -n $DIR ]] && step "cleaned up: ${#PIDS[@]} processes stopped, ${#NETNS[@]} namespaces removed ($(elapsed) s in all)"
    return 0    # (an EXIT trap returning keeps the exit status of the script)
}
trap cleanup EXIT
trap 'echo; echo "demo.sh: interrupted" >&2; exit 130' INT
trap 'echo "demo.sh: terminated" >&2; exit 143' TERM
# A command killed by Ctrl-C (which reaches our whole process group) is an interruption, not
# a failure.
on_err() {
    (($1 == 130)) && { echo; echo "demo.sh: interrupted" >&2; exit 130; }
    (($1 == 143)) && { echo "demo.sh: terminated" >&2; exit 143; }
    echo "demo.sh: failed (status $1, line $2): $3" >&2
    exit 2
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

# --- 1. prerequisites --------------------------------------------------------------------------
((EUID == 0)) || die "needs root (network namespaces): sudo $0"

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v ping >/dev/null || missing+=(iputils-ping)
if ((${#missing[@]})); then
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ -n ${WGMESH_BIN:-} ]]; then
    BIN=$WGMESH_BIN
    [[ -x $BIN ]] || die "WGMESH_BIN=$BIN is not an executable"
    step "binary: $BIN (from WGMESH_BIN)"
else
    BIN=$ROOT/target/release/wgmesh
    # Under sudo, build as the owner of the checkout with their toolchain when they have one
    # (so no root-owned files land in target/); else with root's cargo.
    owner=$(stat -c %U "$ROOT/target" 2>/dev/null || stat -c %U "$ROOT")
    owner_home=$(getent passwd "$owner" | cut -d: -f6 || true)
    build_as=root cargo=""
    if [[ $owner != root && -n $owner_home && -x $owner_home/.cargo/bin/cargo ]]; then
        build_as=$owner cargo=$owner_home/.cargo/bin/cargo
    elif command -v cargo >/dev/null; then
        cargo=$(command -v cargo)
    elif [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
        cargo=${CARGO_HOME:-$HOME/.cargo}/bin/cargo
    fi
    if [[ -n $cargo ]]; then
        step "cargo build --release (as $build_as; a few minutes the first time, a second after)"
        build=(env "PATH=$(dirname "$cargo"):$PATH" "$cargo" build --release --quiet --manifest-path "$ROOT/Cargo.toml")
        if [[ $build_as != root ]]; then
            runuser -u "$build_as" -- env "HOME=$owner_home" "${build[@]}" || die "cargo build failed"
        else
            "${build[@]}" || die "cargo build failed"
        fi
    elif [[ -x $BIN ]]; then
        step "binary: $BIN (no cargo found; using the existing build)"
    else
        die "no cargo and no $BIN: install Rust (https://rustup.rs) or set WGMESH_BIN"
    fi
fi

DIR=$(mktemp -d -t wgmesh-demo.XXXXXX)
chmod 700 "$DIR"

# --- 2. underlay and hosts ---------------------------------------------------------------------
mkns() { NETNS+=("$1"); ip netns add "$1"; ip -n "$1" link set lo up; }

UL="$P-ul"
mkns "$UL"
ip -n "$UL" link add br0 type bridge
ip -n "$UL" link set br0 up
for ((h = 1; h <= HOSTS; h++)); do
    mkns "$P-h$h"
    # Both ends are created directly inside the namespaces: nothing ever appears in the root one.
    ip -n "$UL" link add "h$h" type veth peer name ul0 netns "$P-h$h"
    ip -n "$UL" link set "h$h" master br0 up
    ip -n "$P-h$h" addr add "198.18.0.$h/24" dev ul0
    ip -n "$P-h$h" link set ul0 up
done
mkns "$P-ctl"
ip -n "$UL" link add ctl type veth peer name ul0 netns "$P-ctl"
ip -n "$UL" link set ctl master br0 up
ip -n "$P-ctl" addr add "$CTL_IP/24" dev ul0
ip -n "$P-ctl" link set ul0 up
step "underlay: $HOSTS hosts ($P-h1..h$HOSTS, 198.18.0.1-$HOSTS/24) and a control plane ($P-ctl, $CTL_IP) on a bridge in $UL"

# --- 3. control plane and join token -----------------------------------------------------------
# await PID PROBE TENTHS LOG WHAT: waits until the command PROBE succeeds, up to TENTHS tenths of
# a second; if process PID exits first or time runs out, prints why with LOG and exits 2.
await() {
    local pid=$1 probe=$2 tenths=$3 log=$4 what=$5 i why
    for ((i = 0; ; i++)); do
        bash -c "$probe" >/dev/null 2>&1 && return 0
        if ! kill -0 "$pid" 2>/dev/null || ((i >= tenths)); then
            kill -0 "$pid" 2>/dev/null && why="was not ready within $((tenths / 10)) s" || why="exited"
            echo "demo.sh: $what $why; its log:" >&2
            sed 's/^/    /' "$log" >&2
            exit 2
        fi
        sleep 0.1
    done
}

printf '[control]\nlisten = "0.0.0.0:7443"\nadvertise = ["%s"]\nstate_dir = "%s"\ncluster_cidr = "10.42.0.0/16"\nhost_prefix = 24\n' \
    "$CTL_IP" "$DIR/control" > "$DIR/control.toml"
ip netns exec "$P-ctl" "$BIN" control --config "$DIR/control.toml" > "$DIR/control.log" 2>&1 &
PIDS+=($!)
export WGMESH_ADMIN=$DIR/control/admin.toml
await "$!" "grep -q 'control plane listening' '$DIR/control.log' && [[ -s '$WGMESH_ADMIN' ]]" 100 \
    "$DIR/control.log" "the control plane"
step "control plane: $CTL_URL in $P-ctl (CA, store and admin.toml in $DIR/control)"

# The admin CLI (WGMESH_ADMIN) reaches the control plane over the underlay, from host h1.
(umask 077 && ip netns exec "$P-h1" "$BIN" token create --ttl 1h --reusable --label demo=yes \
    > "$DIR/join-token") || die "wgmesh token create failed"
step "join token: $(cut -c1-16 "$DIR/join-token")… (wgmesh token create --ttl 1h --reusable; in $DIR/join-token)"

# --- 4. agents ---------------------------------------------------------------------------------
for ((h = 1; h <= HOSTS; h++)); do
    printf '[agent]\nname = "h%d"\nendpoint = "198.18.0.%d:51820"\nsocket = "%s"\nstate_dir = "%s"\n' \
        "$h" "$h" "$DIR/h$h.sock" "$DIR/h$h.state" > "$DIR/h$h.toml"
    printf '\n[control]\nurl = "%s"\njoin_token_file = "%s"\n' "$CTL_URL" "$DIR/join-token" >> "$DIR/h$h.toml"
done
t0=$(date +%s.%N)
for ((h = 1; h <= HOSTS; h++)); do
    ip netns exec "$P-h$h" "$BIN" agent --config "$DIR/h$h.toml" > "$DIR/h$h.log" 2>&1 &
    PIDS+=($!)
done
# An agent answers `status` once it has joined and applied its first netmap; then every agent
# gets the hosts that joined after it (its status lists its own key and HOSTS-1 peers' keys).
for ((h = 1; h <= HOSTS; h++)); do
    await "${PIDS[h]}" "'$BIN' status --socket '$DIR/h$h.sock'" 200 "$DIR/h$h.log" "agent h$h"
done
for ((h = 1; h <= HOSTS; h++)); do
    await "${PIDS[h]}" "(( \$('$BIN' status --json --socket '$DIR/h$h.sock' | grep -o '\"public_key\"' | wc -l) == $HOSTS ))" \
        100 "$DIR/h$h.log" "agent h$h (with all $((HOSTS - 1)) peers)"
done
step "agents: $HOSTS joined with the token, each has the other $((HOSTS - 1)) as peers (in $(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s; configs and logs in $DIR/hN.toml, hN.log)"
step "wgmesh node list:"
ip netns exec "$P-h1" "$BIN" node list | sed 's/^/    /'

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
mkdir "$DIR/ping"
PINGS=()
for ((i = 0; i < ${#WL[@]}; i++)); do
    read -r hi _ nsi _ <<< "${WL[i]}"
    for ((j = 0; j < ${#WL[@]}; j++)); do
        read -r hj _ _ ipj <<< "${WL[j]}"
        ((hi == hj)) && continue
        ( ip netns exec "$nsi" ping -c 1 -W 2 -q "$ipj" >/dev/null 2>&1 && touch "$DIR/ping/$i-$j.ok" ) &
        PINGS+=($!)
    done
done
wait "${PINGS[@]}" || true   # each ping is bounded by -W 2; results are in $DIR/ping
step "ping matrix (row pings column, once; · = same host):"
printf '    %-8s' ""
for x in "${WL[@]}"; do read -r h w _ _ <<< "$x"; printf ' %-5s' "h${h}w$w"; done
printf '\n'
ok=0 failed=0
for ((i = 0; i < ${#WL[@]}; i++)); do
    read -r hi wi _ _ <<< "${WL[i]}"
    printf '    %-8s' "h${hi}w$wi"
    for ((j = 0; j < ${#WL[@]}; j++)); do
        read -r hj _ _ _ <<< "${WL[j]}"
        if ((hi == hj)); then cell="·"
        elif [[ -e $DIR/ping/$i-$j.ok ]]; then cell="✓"; ok=$((ok + 1))
        else cell="✗"; failed=$((failed + 1)); fi
        printf '   %s  ' "$cell"
    done
    printf '\n'
done
step "cross-host pings: $ok ok, $failed failed"

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
if ((failed)); then
    echo "demo.sh: $failed cross-host pings failed; the agents' last log lines:" >&2
    for ((h = 1; h <= HOSTS; h++)); do tail -n 5 "$DIR/h$h.log" | sed "s/\x1b\[[0-9;]*m//g; s/^/    h$h: /" >&2; done
    tail -n 5 "$DIR/control.log" | sed "s/\x1b\[[0-9;]*m//g; s/^/    control: /" >&2
fi
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
