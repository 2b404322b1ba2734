#!/usr/bin/env bash
# wgmesh local multi-host Docker demo: the main demo (scripts/demo.sh), with a real dockerd per host.
#
# Builds HOSTS hosts (network namespaces) and a control plane on a shared underlay, runs one
# agent per host that joins with a reusable token and serves Docker's network and IPAM plugin
# ([docker] networks = ["appnet"]: the agent creates appnet on its dockerd), then one dockerd per
# host (its own private mount namespace whose /run/docker/plugins is that host's plugin folder).
# Runs two labelled busybox containers per host on appnet, shows `wgmesh node list`, `wgmesh
# status` and a cross-host ping matrix between the containers, and removes everything.
#
#   sudo ./scripts/demo-docker.sh [--no-wait]
#
# Environment: WGMESH_BIN (use this binary instead of building), WGMESH_DEMO_HOSTS (default 3).
# Exit status: 0 when every cross-host ping got through, 1 when one did not, 2 on a setup error
# (with "dockerd cannot run here: ..." when dockerd is missing or does not start).
set -eEuo pipefail

DEMO=demo-docker.sh
HOSTS=${WGMESH_DEMO_HOSTS:-3}
WORKLOADS=2
P="wgk$$"          # prefix of every namespace this run makes
DOCKERD=/usr/sbin/dockerd
DOCKER=/usr/bin/docker   # Debian's docker.io client, not whichever `docker` comes first in PATH
BUSYBOX=/bin/busybox
IMAGE=wgbox:1
NET=appnet
DPIDS=()           # dockerd of host h is DPIDS[h-1]
# shellcheck source=scripts/demo-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/demo-lib.sh"
demo_args "$@"
demo_traps

cannot_run() { printf '%s: dockerd cannot run here: %s\n' "$DEMO" "$*" >&2; exit 2; }

# dk H ARGS...: the docker client against host H's dockerd, killed after 60 s.
dk() {
    local h=$1
    shift
    DOCKER_HOST="unix://$DIR/d$h/docker.sock" DOCKER_CONFIG="$DIR/d$h/cli" \
        timeout -k 5 60 "$DOCKER" "$@"
}

# Before the agents and namespaces go: each dockerd's containers (while the plugin still
# answers), then the dockerd itself (SIGTERM by its PID, up to 30 s), then what it left: its
# containerd and shims, found by their command lines naming its directory.
cleanup_extra() {
    local h pid i ids mark
    for ((h = 1; h <= ${#DPIDS[@]}; h++)); do
        pid=${DPIDS[h - 1]}
        ours "$pid" || continue
        ids=$(dk "$h" ps -aq 2>/dev/null)
        # shellcheck disable=SC2086
        [[ -n $ids ]] && dk "$h" rm -f $ids >/dev/null 2>&1
        kill -TERM "$pid" 2>/dev/null
    done
    for ((i = 0; i < 300; i++)); do
        local alive=0
        for pid in "${DPIDS[@]}"; do ours "$pid" && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${DPIDS[@]}"; do
        ours "$pid" && { echo "$DEMO: dockerd $pid did not stop on SIGTERM; sending SIGKILL" >&2; kill -KILL "$pid"; }
    done
    wait "${DPIDS[@]}" 2>/dev/null
    ((${#DPIDS[@]})) && step "stopped ${#DPIDS[@]} dockerd (their containers removed first)"
    [[ -n $DIR ]] || return 0
    for ((h = 1; h <= ${#DPIDS[@]}; h++)); do
        mark="$DIR/d$h/"
        for pid in /proc/[0-9]*; do
            { tr '\0' ' ' < "$pid/cmdline"; } 2>/dev/null | grep -qF -- "$mark" || continue
            echo "$DEMO: killing ${pid#/proc/} left by dockerd of h$h" >&2
            kill -KILL "${pid#/proc/}" 2>/dev/null
        done
    done
    return 0
}

# The agent's [docker] table: this host's plugin folder and Docker socket, and appnet.
agent_extra_config() {
    printf '\n[docker]\nplugin_dir = "%s"\nsocket = "%s"\nnetworks = ["%s"]\n' \
        "$DIR/d$1/plugins" "$DIR/d$1/docker.sock" "$NET"
}

# --- 1. prerequisites --------------------------------------------------------------------------
demo_prerequisites
[[ -x $DOCKERD ]] || cannot_run "$DOCKERD is missing (apt-get install docker.io)"
[[ -x $DOCKER ]] || cannot_run "$DOCKER is missing (apt-get install docker.io)"
[[ -x $BUSYBOX ]] || cannot_run "$BUSYBOX is missing, the image is built from it (apt-get install busybox-static)"
if LC_ALL=C grep -qaE '/ld-(linux|musl)' <(head -c 65536 "$BUSYBOX"); then
    cannot_run "$BUSYBOX is dynamically linked: the image needs a static one (apt-get install busybox-static)"
fi
for tool in nsenter unshare tar timeout; do
    command -v "$tool" >/dev/null || cannot_run "\`$tool\` is missing"
done
demo_binary
demo_dir

# --- 2. underlay and hosts ---------------------------------------------------------------------
demo_underlay

# --- 3. control plane and join token -----------------------------------------------------------
demo_control

# --- 4. agents (the plugin's side first), then a dockerd per host ------------------------------
for ((h = 1; h <= HOSTS; h++)); do
    mkdir -p "$DIR/d$h/plugins" "$DIR/d$h/cli"
    echo '{}' > "$DIR/d$h/daemon.json"
done
demo_agents

t0=$(date +%s.%N)
for ((h = 1; h <= HOSTS; h++)); do
    d=$DIR/d$h
    nsenter --net="/run/netns/$P-h$h" unshare -m --propagation private \
        sh -c 'mkdir -p /run/docker/plugins && mount --bind "$0/plugins" /run/docker/plugins && exec "$@"' "$d" \
        "$DOCKERD" --config-file "$d/daemon.json" --data-root "$d/data" --exec-root "$d/x" \
        --pidfile "$d/d.pid" -H "unix://$d/docker.sock" \
        --containerd-namespace "$P-h$h" --containerd-plugins-namespace "$P-h${h}p" \
        > "$DIR/dockerd-h$h.log" 2>&1 < /dev/null &
    DPIDS+=($!)
done
for ((h = 1; h <= HOSTS; h++)); do
    for ((i = 0; ; i++)); do
        dk "$h" info >/dev/null 2>&1 && break
        if ! ours "${DPIDS[h - 1]}" || ((i >= 300)); then
            sed 's/^/    /' "$DIR/dockerd-h$h.log" | tail -n 20 >&2
            cannot_run "dockerd of h$h $(ours "${DPIDS[h - 1]}" && echo "did not answer within 30 s" || echo exited) (its log above)"
        fi
        sleep 0.1
    done
done
# The image: busybox with a /bin symlink per applet (nothing can be pulled here).
mkdir -p "$DIR/rootfs/bin" "$DIR/rootfs/tmp" "$DIR/rootfs/etc"
cp "$BUSYBOX" "$DIR/rootfs/bin/busybox"
for a in $("$BUSYBOX" --list); do [[ $a == busybox ]] || ln -sf busybox "$DIR/rootfs/bin/$a"; done
tar -C "$DIR/rootfs" -cf "$DIR/wgbox.tar" .
for ((h = 1; h <= HOSTS; h++)); do
    dk "$h" import -c 'CMD ["/bin/sh"]' "$DIR/wgbox.tar" "$IMAGE" >/dev/null || die "docker import on h$h failed"
done
step "dockerd: one per host, ready in $(since "$t0") s (roots, sockets and logs in $DIR/dN, dockerd-hN.log); image $IMAGE imported from $BUSYBOX"

# Each agent creates appnet on its dockerd once dockerd answers.
t0=$(date +%s.%N)
for ((h = 1; h <= HOSTS; h++)); do
    for ((i = 0; ; i++)); do
        [[ $(dk "$h" network inspect -f '{{.Driver}}' "$NET" 2>/dev/null) == wgmesh ]] && break
        if ((i >= 300)); then
            echo "$DEMO: the agent of h$h did not create $NET on its dockerd within 30 s; its log:" >&2
            tail -n 20 "$DIR/h$h.log" | sed 's/^/    /' >&2
            exit 2
        fi
        sleep 0.1
    done
done
step "docker network: $NET (driver wgmesh, IPAM wgmesh) on every host, created by the agents in $(since "$t0") s"
dk 1 network ls --filter driver=wgmesh | sed 's/^/    h1: /'

# --- 5. containers -----------------------------------------------------------------------------
WL=()   # "h w container ip"
ROLES=(web db)
for ((h = 1; h <= HOSTS; h++)); do
    for ((w = 1; w <= WORKLOADS; w++)); do
        name="h${h}c$w"
        dk "$h" run -d --pull never --name "$name" --network "$NET" --stop-timeout 1 \
            --label "role=${ROLES[(w - 1) % 2]}" --label demo=yes "$IMAGE" sleep 86400 >/dev/null ||
            die "docker run $name on h$h failed"
        ip=$(dk "$h" inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$name")
        [[ -n $ip ]] || die "container $name on h$h has no address on $NET"
        WL+=("$h $w $name $ip")
    done
done
step "containers: $(for x in "${WL[@]}"; do read -r h w name ip <<< "$x"; printf '%s=%s ' "$name" "$ip"; done | sed 's/ $//') (docker run --network $NET --label role=web|db)"

# --- 6. ping matrix, status ----------------------------------------------------------------------
ping_container() {   # I J: container I pings container J (docker exec)
    local hi ci ipj
    read -r hi _ ci _ <<< "${WL[$1]}"
    read -r _ _ _ ipj <<< "${WL[$2]}"
    dk "$hi" exec "$ci" ping -c 1 -W 2 -q "$ipj"
}
# The first packets of a pair may wait for a handshake: one round to warm up, then the matrix.
for ((j = WORKLOADS; j < ${#WL[@]}; j += WORKLOADS)); do ping_container 0 "$j" >/dev/null 2>&1 || true; done
ping_matrix ping_container
step "wgmesh status on h1:"
"$BIN" status --socket "$DIR/h1.sock" | sed 's/^/    /'

# --- 7. wait, then clean up (trap) -------------------------------------------------------------
((failed == 0)) || demo_failure_logs
step "ready after $(elapsed) s"
if ((!NO_WAIT)) && [[ -t 0 ]]; then
    read -r _ _ _ hint_ip <<< "${WL[WORKLOADS + 1]}"   # second container of h2
    echo "    Everything is still up: try e.g.  DOCKER_HOST=unix://$DIR/d1/docker.sock $DOCKER exec h1c1 ping $hint_ip"
    echo "                                      $BIN status --socket $DIR/h2.sock"
    echo "                                      WGMESH_ADMIN=$WGMESH_ADMIN ip netns exec $P-h1 $BIN node list"
    read -r -p "    Press Enter to clean up... " _ || true
fi
((failed == 0)) || exit 1
exit 0
