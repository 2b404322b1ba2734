# Helpers the benchmark scripts share (sourced, not run). They use the caller's PIDS array:
# the processes the script started, the only ones it ever kills.

proc_alive() {  # running and not a zombie
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

kill_started() {  # TERM, up to 5 s, then KILL, every process in PIDS
    local p i alive
    ((${#PIDS[@]})) || return 0
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for i in $(seq 50); do
        alive=0
        for p in "${PIDS[@]}"; do proc_alive "$p" && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do proc_alive "$p" && kill -KILL "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    PIDS=()
}

cpu_ticks() {  # utime+stime of the given PIDs (all threads)
    local p t=0 x
    for p in "$@"; do
        x=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}') || x=0
        t=$((t + ${x:-0}))
    done
    echo "$t"
}

calc() { awk "BEGIN{ printf \"$1\", $2 }"; }

wait_for() {  # wait_for SECONDS CMD...
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do ((SECONDS < end)) || return 1; sleep 0.1; done
}
