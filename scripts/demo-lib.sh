# What demo.sh and demo-docker.sh share (sourced, not run): arguments, the cleanup trap, the
# binary, the underlay of hosts and a control plane in network namespaces, the join token,
# the agents, and the cross-host ping matrix.
#
# The caller sets DEMO (its name, for messages), HOSTS, WORKLOADS and P (the prefix of every
# namespace it makes) before sourcing, and may define cleanup_extra (run first by the cleanup
# trap, to stop what only it starts) and agent_extra_config H (prints more agent.toml lines
# for host H). Processes are only ever signalled by the PIDs this shell started (ours).

NO_WAIT=0
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"   # `su` without `-` leaves them out
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
START=$(date +%s.%N)
DIR=""             # the temp dir (configs, keys, sockets, state, logs)
NETNS=()           # namespaces made, in creation order
PIDS=()            # processes started, in order (control plane first, then the agents)
CTL_IP=198.18.0.254
CTL_URL="https://$CTL_IP:7443"
CLEANED=""

step() { printf '==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$DEMO" "$*" >&2; exit 2; }
elapsed() { awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

# demo_args "$@": --no-wait, --help (prints lines 2-15 of the script); anything else: exit 2.
demo_args() {
    local arg
    for arg in "$@"; do
        case $arg in
            --no-wait) NO_WAIT=1 ;;
            -h | --help) sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 0 ;;
            *) echo "$DEMO: unknown argument: $arg (try --help)" >&2; exit 2 ;;
        esac
    done
    [[ $HOSTS =~ ^[0-9]+$ ]] && ((HOSTS >= 2 && HOSTS <= 200)) ||
        { echo "$DEMO: WGMESH_DEMO_HOSTS must be 2..200" >&2; exit 2; }
}

# A PID is only signalled while it is a live child of this shell (so never a process we did
# not start, even if a PID were reused): /proc/PID/stat has "PID (comm) STATE PPID ...".
ours() {
    local st ppid
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    read -r st ppid _ <<< "${st##*) }"
    [[ $ppid == "$$" && $st != Z ]]
}

cleanup_extra() { :; }
agent_extra_config() { :; }

cleanup() {
    local pid ns i
    [[ -n $CLEANED ]] && return 0
    CLEANED=1
    set +e
    trap - ERR    # (errtrace would run it inside these functions; cleanup must run to the end)
    trap '' INT TERM
    cleanup_extra
    for pid in "${PIDS[@]}"; do ours "$pid" && kill -TERM "$pid" 2>/dev/null; done
    for ((i = 0; i < 50; i++)); do            # up to 5 s for a clean shutdown
        local alive=0
        for pid in "${PIDS[@]}"; do ours "$pid" && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        if ours "$pid"; then
            echo "$DEMO: pid $pid did not stop on SIGTERM; sending SIGKILL" >&2
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

# A command killed by Ctrl-C (which reaches our whole process group) is an interruption, not
# a failure.
on_err() {
    (($1 == 130)) && { echo; echo "$DEMO: interrupted" >&2; exit 130; }
    (($1 == 143)) && { echo "$DEMO: terminated" >&2; exit 143; }
    echo "$DEMO: failed (status $1, line $2): $3" >&2
    exit 2
}

demo_traps() {
    trap cleanup EXIT
    trap 'echo; echo "$DEMO: interrupted" >&2; exit 130' INT
    trap 'echo "$DEMO: terminated" >&2; exit 143' TERM
    trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR
}

# Root, iproute2 and ping (installed when missing).
demo_prerequisites() {
    ((EUID == 0)) || die "needs root (network namespaces): sudo $0"
    local missing=()
    command -v ip >/dev/null || missing+=(iproute2)
    command -v ping >/dev/null || missing+=(iputils-ping)
    if ((${#missing[@]})); then
        step "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Sets BIN: WGMESH_BIN, or a release build of the checkout.
demo_binary() {
    if [[ -n ${WGMESH_BIN:-} ]]; then
        BIN=$WGMESH_BIN
        [[ -x $BIN ]] || die "WGMESH_BIN=$BIN is not an executable"
        step "binary: $BIN (from WGMESH_BIN)"
        return
    fi
    BIN=$ROOT/target/release/wgmesh
    # Under sudo, build as the owner of the checkout with their toolchain when they have one
    # (so no root-owned files land in target/); else with root's cargo.
    local owner owner_home build_as=root cargo="" build
    owner=$(stat -c %U "$ROOT/target" 2>/dev/null || stat -c %U "$ROOT")
    owner_home=$(getent passwd "$owner" | cut -d: -f6 || true)
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
}

demo_dir() {
    DIR=$(mktemp -d -t wgmesh-demo.XXXXXX)
    chmod 700 "$DIR"
}

mkns() { NETNS+=("$1"); ip netns add "$1"; ip -n "$1" link set lo up; }

# A bridge in $P-ul, hosts $P-h1..hHOSTS (198.18.0.N/24) and the control plane's $P-ctl on it.
demo_underlay() {
    local UL="$P-ul" h
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
}

# await PID PROBE TENTHS LOG WHAT: waits until the command PROBE succeeds, up to TENTHS tenths of
# a second; if process PID exits first or time runs out, prints why with LOG and exits 2.
await() {
    local pid=$1 probe=$2 tenths=$3 log=$4 what=$5 i why
    for ((i = 0; ; i++)); do
        bash -c "$probe" >/dev/null 2>&1 && return 0
        if ! kill -0 "$pid" 2>/dev/null || ((i >= tenths)); then
            kill -0 "$pid" 2>/dev/null && why="was not ready within $((tenths / 10)) s" || why="exited"
            echo "$DEMO: $what $why; its log:" >&2
            sed 's/^/    /' "$log" >&2
            exit 2
        fi
        sleep 0.1
    done
}

# The control plane in $P-ctl, and a reusable join token from the admin CLI (run in h1).
demo_control() {
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
}

# One agent per host that joins with the token; returns once each has every other as a peer.
# The agents' PIDs are PIDS[1..HOSTS].
demo_agents() {
    local h t0
    for ((h = 1; h <= HOSTS; h++)); do
        printf '[agent]\nname = "h%d"\nendpoint = "198.18.0.%d:51820"\nsocket = "%s"\nstate_dir = "%s"\n' \
            "$h" "$h" "$DIR/h$h.sock" "$DIR/h$h.state" > "$DIR/h$h.toml"
        printf '\n[control]\nurl = "%s"\njoin_token_file = "%s"\n' "$CTL_URL" "$DIR/join-token" >> "$DIR/h$h.toml"
        agent_extra_config "$h" >> "$DIR/h$h.toml"
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
    step "agents: $HOSTS joined with the token, each has the other $((HOSTS - 1)) as peers (in $(since "$t0") s; configs and logs in $DIR/hN.toml, hN.log)"
    step "wgmesh node list:"
    ip netns exec "$P-h1" "$BIN" node list | sed 's/^/    /'
}

# ping_matrix PINGER: WL holds "h w name ip" per workload; PINGER I J pings workload J from
# workload I once (exit status: answered). Prints the matrix; sets ok and failed.
ping_matrix() {
    local pinger=$1 i j hi wi hj ipj cell x h w
    local pings=()
    mkdir -p "$DIR/ping"
    for ((i = 0; i < ${#WL[@]}; i++)); do
        read -r hi _ _ _ <<< "${WL[i]}"
        for ((j = 0; j < ${#WL[@]}; j++)); do
            read -r hj _ _ ipj <<< "${WL[j]}"
            ((hi == hj)) && continue
            ( "$pinger" "$i" "$j" >/dev/null 2>&1 && touch "$DIR/ping/$i-$j.ok" ) &
            pings+=($!)
        done
    done
    wait "${pings[@]}" || true   # each ping is bounded (-W 2); results are in $DIR/ping
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
}

# The agents' and the control plane's last log lines, after a failed ping.
demo_failure_logs() {
    local h
    echo "$DEMO: $failed cross-host pings failed; the agents' last log lines:" >&2
    for ((h = 1; h <= HOSTS; h++)); do tail -n 5 "$DIR/h$h.log" | sed "s/\x1b\[[0-9;]*m//g; s/^/    h$h: /" >&2; done
    tail -n 5 "$DIR/control.log" | sed "s/\x1b\[[0-9;]*m//g; s/^/    control: /" >&2
}
