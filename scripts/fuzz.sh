#!/usr/bin/env bash
# Coverage-guided fuzzing of wgmesh's untrusted-input code with libFuzzer, on the stable
# toolchain and plain cargo (no cargo-fuzz, no nightly): the targets are in fuzz/src (one
# binary, the target chosen by WGMESH_FUZZ_TARGET).
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]   each target for SECONDS (default 60), all by default
# Prints a table (target, runs, coverage, crashes). A crash's input is kept under
# $WGMESH_FUZZ_DIR/crashes/<target>/; fix the bug, then copy the input to
# fuzz/regressions/<target>/ so that `cargo test -p wgmesh-fuzz` replays it forever.
# Exits non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(datagram gro tso netmap token api store plugin)
fi

# The instrumented build has its own target directory: its RUSTFLAGS differ from every other
# build's, and sharing one would rebuild both each time.
build_dir="${WGMESH_FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
work="${WGMESH_FUZZ_DIR:-$build_dir/work}"
host=$(rustc -vV | sed -n 's/^host: //p')
# SanitizerCoverage as libFuzzer expects it (what cargo-fuzz passes, on stable): edge counters,
# the PC table and comparison tracing. Debug assertions and overflow checks stay on, so an
# arithmetic overflow is a crash. `--target` keeps the flags off build scripts and proc macros.
# No `--cfg fuzzing`: it changes what some dependencies compile (tokio), and nothing here
# needs it.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
export CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  CARGO_PROFILE_RELEASE_INCREMENTAL=false
echo "fuzz.sh: building the instrumented fuzzer in $build_dir"
CARGO_TARGET_DIR="$build_dir" cargo build --locked --release -p wgmesh-fuzz \
  --features libfuzzer --bin wgmesh-fuzz --target "$host"
bin="$build_dir/$host/release/wgmesh-fuzz"

max_len() {
  case "$1" in
    token) echo 512 ;; datagram|api) echo 2048 ;; gro|netmap) echo 4096 ;; *) echo 8192 ;;
  esac
}

results=()
failed=0
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "fuzz.sh: no target $t (fuzz/corpus/$t)" >&2; exit 2; }
  corpus="$work/corpus/$t"
  crashes="$work/crashes/$t"
  log="$work/logs/$t.log"
  mkdir -p "$corpus" "$crashes" "$(dirname "$log")"
  before=$(find "$crashes" -type f | wc -l)
  echo "fuzz.sh: $t for ${seconds}s"
  set +e
  # The first corpus directory collects what the run finds (kept between runs); the
  # checked-in seeds are only read. -fork=0 and -jobs=0: one process, two shared cores.
  WGMESH_FUZZ_TARGET="$t" "$bin" "$corpus" "fuzz/corpus/$t" \
    -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$crashes/" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  found=$(( $(find "$crashes" -type f | wc -l) - before ))
  if [ "$rc" -ne 0 ]; then
    failed=1
    [ "$found" -gt 0 ] || found="?"
    echo "fuzz.sh: $t failed (exit $rc); the end of $log:" >&2
    tail -40 "$log" >&2
  fi
  results+=("$(printf '%-10s %12s %10s %10s %8s' \
    "$t" "${runs:-?}" "${cov:-?}" "${ft:-?}" "$found")")
done

echo
printf '%-10s %12s %10s %10s %8s\n' target runs coverage features crashes
printf '%s\n' "${results[@]}"
exit "$failed"
