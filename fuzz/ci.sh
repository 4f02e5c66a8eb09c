#!/usr/bin/env bash
# Fuzzes every target for a short fixed time, within one budget for all of it
# (install and build included), and prints executions per target.
#
# With libFuzzer: nightly and cargo-fuzz are used if present, installed if not
# (`rustup toolchain install nightly --profile minimal`, `cargo install
# cargo-fuzz --locked`: about 35 s on the CI machine); the targets are built
# once, then each is fuzzed for an equal share of what is left of the budget,
# two at a time (two cores), from its committed seeds and regressions.
# Without it (install failed, or too little budget left after the build): the
# stable mutation fuzzer of tests/fuzz_mutate.rs runs for what is left.
# Saved inputs are replayed by `cargo test` (tests/fuzz_replay.rs) either way.
#
#   STROM_FUZZ_BUDGET_SECS   all of it, install and build included (default 300)
#   STROM_FUZZ_TARGET_SECS   fixed seconds per target instead of a share of the budget
#   STROM_FUZZ_STABLE=1      skip libFuzzer, run the stable mutation fuzzer
#   STROM_FUZZ_TARGETS       space-separated targets (default: all)
#   STROM_FUZZ_JOBS          targets fuzzed at once (default 2)
#
# A crash fails the script and names the input (fuzz/artifacts/TARGET/...):
# fix the bug, then copy the input into fuzz/regressions/TARGET/ so that
# `cargo test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")"

budget_secs=${STROM_FUZZ_BUDGET_SECS:-300}
logs=$(mktemp -d)
started=$(date +%s)
elapsed() { echo $(($(date +%s) - started)); }
left() { echo $((budget_secs - $(elapsed))); }

all_targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^strom-fuzz$')
targets=${STROM_FUZZ_TARGETS:-$all_targets}
n_targets=$(echo "$targets" | wc -w)
# Below this many seconds per target libFuzzer barely gets past loading its corpus.
min_target_secs=4

stable_fallback() {
    local secs
    secs=$(($(left) - 5))
    ((secs < 10)) && secs=10
    # Two workers share the targets, so each target gets 2 * secs / targets.
    local ms=$((secs * 2000 / n_targets))
    echo "== fuzz: stable mutation fuzzer, ${ms} ms per target ($1)"
    cd ..
    set +e +o pipefail
    STROM_FUZZ_MS=$ms STROM_FUZZ_ITERS=100000000 cargo test --release --test fuzz_mutate -- --nocapture 2>&1 |
        grep -v '^\s*$' | grep -v '^running\|^test result\|Finished\|Running'
    exit "${PIPESTATUS[0]}"
}

[[ ${STROM_FUZZ_STABLE:-0} == 1 ]] && stable_fallback "STROM_FUZZ_STABLE=1"

# Each install step gets at most what the budget can spare.
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "== fuzz: installing nightly"
    timeout 120 rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || stable_fallback "no nightly toolchain"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== fuzz: installing cargo-fuzz"
    timeout 150 cargo install cargo-fuzz --locked >/dev/null 2>&1 || stable_fallback "cargo-fuzz did not install"
fi
echo "== fuzz: $(cargo +nightly --version), $(cargo fuzz --version), ready after $(elapsed) s"

# Leave every target its minimum after the build, and the fallback its 20 s if the build fails.
build_secs=$(($(left) - n_targets * min_target_secs / 2 - 20))
((build_secs > 0)) || stable_fallback "no budget left to build"
build_targets() {
    if [[ "$targets" == "$all_targets" ]]; then
        cargo +nightly fuzz build -O
    else
        for t in $targets; do cargo +nightly fuzz build -O "$t" || return 1; done
    fi
}
export -f build_targets
export targets all_targets
timeout "$build_secs" bash -c build_targets >/dev/null 2>"$logs/build.log" || {
    tail -5 "$logs/build.log"
    stable_fallback "the libFuzzer build failed or took over ${build_secs} s"
}
echo "== fuzz: built after $(elapsed) s"

jobs=${STROM_FUZZ_JOBS:-2}
# Fewer targets than jobs: each target still gets only its share of the budget.
((jobs > n_targets)) && jobs=$n_targets
target_secs=${STROM_FUZZ_TARGET_SECS:-$(($(left) * jobs / n_targets - 2))}
((target_secs < min_target_secs)) && stable_fallback "only ${target_secs} s per target left"
echo "== fuzz: libFuzzer, ${target_secs} s per target, ${jobs} at a time"

host=$(rustc +nightly -vV | sed -n 's/^host: //p')
run_one() {
    local t=$1
    mkdir -p "corpus/$t" "regressions/$t" "artifacts/$t"
    # -malloc_limit_mb: one allocation over 16 MiB is a crash (inputs are a few KiB, so only a
    # size taken from a declared count gets there); -timeout: an input taking 10 s is a hang.
    # The binary itself, not `cargo fuzz run`, which would rebuild (and wait on the build lock).
    "target/$host/release/$t" "corpus/$t" "regressions/$t" \
        -artifact_prefix="artifacts/$t/" -max_total_time="$target_secs" -malloc_limit_mb=16 -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
        >"$logs/$t.log" 2>&1
}

failed=()
pids=()
names=()
for t in $targets; do
    run_one "$t" &
    pids+=($!)
    names+=("$t")
    if ((${#pids[@]} >= jobs)); then
        wait "${pids[0]}" || failed+=("${names[0]}")
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
    fi
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${names[$i]}")
done

printf '%-22s %12s %10s\n' target executions exec/s
for t in $targets; do
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$logs/$t.log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$logs/$t.log" | tail -1)
    printf '%-22s %12s %10s\n' "$t" "${runs:-?}" "${speed:-?}"
done
echo "== fuzz: done after $(elapsed) s (budget ${budget_secs} s)"
if ((${#failed[@]} > 0)); then
    for t in "${failed[@]}"; do
        echo "== fuzz: $t FAILED:"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|malloc\(' "$logs/$t.log" | head -10
    done
    exit 1
fi
