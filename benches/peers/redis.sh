#!/usr/bin/env bash
# Redis Streams with `appendfsync always` beside Strom's loadgen, on the same
# workload shapes, in one run of this script: see benches/peers/README.md.
#
# Both sides get the same arrangement: the server alone on CPU 0, the load
# generator on the other CPUs, talking over loopback TCP, data on the same
# filesystem (a directory under the repo's target/), every ack sent only
# after the write is fdatasync'ed. The figures are only worth reading as
# same-run ratios: the host is shared and noisy.
set -euo pipefail
shopt -s inherit_errexit

usage() {
    cat <<'EOF'
Usage: benches/peers/redis.sh [--duration SECS] [--rounds N] [--shape NAME]... [--time-limit SECS]
                              [--no-install] [--keep] [--help]

Runs a private Redis (appendonly yes, appendfsync always, save "") and
redis-benchmark XADD, then Strom's loadgen --embedded, on the same shapes,
and prints them side by side: ack latency p50/p99 and MB/s of 1 KiB values.

Shapes (default: all):
  one        one record at a time: 1 client, 1 request in flight, 1 stream /
             1 partition  (redis-benchmark -c 1 -P 1; loadgen --producers 1
             --inflight 1 --partitions 1, one 1 KiB record per batch)
  pipelined  pipelined 1 KiB records: 4 clients x 16 in flight over 4 streams /
             4 partitions  (redis-benchmark -c 4 -P 16 -r 4; loadgen
             --producers 4 --inflight 16 --partitions 4, one record per batch)

Options:
  --duration SECS     seconds measured per shape and side (default 5)
  --shape NAME        run only this shape (repeatable)
  --rounds N          run every shape N times, Redis then Strom each time, a row
                      per round (default 1): on a noisy host, read the spread
  --time-limit SECS   the whole script stops itself after this long (default 600)
  --no-install        never install Redis; fail if redis-server or
                      redis-benchmark is missing
  --keep              keep the data directories under target/peers/
  --help              this text

Without Redis on PATH, as root, it installs the Debian packages
redis-server and redis-tools with apt-get (and says so); as another user it
stops and tells you what to install. The servers it starts (Redis, and the
broker inside loadgen) are stopped on exit, whatever the exit.
Environment: STROM_LOADGEN=PATH uses that loadgen binary instead of
building one with `cargo build --release -p loadgen`.
EOF
}

orig_args=("$@")
duration_secs=5
rounds=1
time_limit_secs=600
install=auto
keep=0
shapes=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) duration_secs="${2:?--duration needs SECS}"; shift 2 ;;
        --rounds) rounds="${2:?--rounds needs N}"; shift 2 ;;
        --shape) shapes+=("${2:?--shape needs NAME}"); shift 2 ;;
        --time-limit) time_limit_secs="${2:?--time-limit needs SECS}"; shift 2 ;;
        --no-install) install=no; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "redis.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ ${#shapes[@]} -gt 0 ]] || shapes=(one pipelined)
for s in "${shapes[@]}"; do
    [[ $s == one || $s == pipelined ]] || { echo "redis.sh: unknown shape '$s' (one, pipelined)" >&2; exit 2; }
done
[[ $duration_secs =~ ^[1-9][0-9]*$ ]] || { echo "redis.sh: --duration must be whole seconds >= 1" >&2; exit 2; }
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "redis.sh: --rounds must be a whole number >= 1" >&2; exit 2; }
[[ $time_limit_secs =~ ^[1-9][0-9]*$ ]] || { echo "redis.sh: --time-limit must be whole seconds >= 1" >&2; exit 2; }

# Stop ourselves, whatever hangs: timeout(1) signals its whole process group
# (this script, redis-server, redis-benchmark, loadgen), and the EXIT trap
# below still stops Redis by its pid. The inner timeouts are --foreground so
# that they stay in that group rather than making groups of their own.
if [[ -z ${PEERS_UNDER_TIMEOUT:-} ]]; then
    export PEERS_UNDER_TIMEOUT=1
    exec timeout -k 15 "$time_limit_secs" bash "$0" "${orig_args[@]}"
fi

die() { echo "redis.sh: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work_dir="$root_dir/target/peers/run-$$"
redis_pid=""
redis_port=""

cleanup() {
    local rc=$?
    if [[ -n $redis_pid ]] && kill -0 "$redis_pid" 2>/dev/null; then
        # SHUTDOWN NOSAVE: no RDB (save ""); the AOF is only closed.
        timeout --foreground 5 redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || kill "$redis_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$redis_pid" 2>/dev/null || true
    fi
    # Reap it, so that no zombie outlives the script.
    [[ -z $redis_pid ]] || wait "$redis_pid" 2>/dev/null || true
    if [[ $keep == 0 ]]; then rm -rf "$work_dir"; else echo "kept: $work_dir" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "redis.sh: stopped by SIGTERM (--time-limit $time_limit_secs s, or a kill)" >&2; exit 143' TERM
trap 'exit 130' INT

ensure_redis() {
    if have redis-server && have redis-benchmark && have redis-cli; then return; fi
    [[ $install == auto ]] || die "redis-server, redis-cli or redis-benchmark is not on PATH, and --no-install was given"
    if [[ $(id -u) != 0 ]]; then
        die "Redis is not installed and this is not root, so nothing was changed. Install it
    (Debian/Ubuntu: sudo apt-get install -y redis-server redis-tools), then run this again."
    fi
    have apt-get || die "Redis is not installed and there is no apt-get: install redis-server and redis-benchmark yourself"
    echo "redis.sh: installing redis-server and redis-tools with apt-get (root; --no-install to refuse)" >&2
    timeout --foreground 300 apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive timeout --foreground 600 apt-get install -y -qq redis-server redis-tools >&2
    have redis-server && have redis-benchmark || die "apt-get ran but redis-server or redis-benchmark is still missing"
}

free_port() {
    local p
    for p in $(shuf -i 20000-60000 -n 64); do
        # Nothing answers a connect: free (a race is caught by the PING below).
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    die "no free loopback port found in 64 tries"
}

# Server on CPU 0, clients on the rest: the arrangement loadgen --embedded
# --cores 1 uses for Strom's broker and its own threads.
ncpu=$(nproc)
server_cpus=0
client_cpus="1-$((ncpu - 1))"
[[ $ncpu -ne 2 ]] || client_cpus=1
server_pin=()
client_pin=()
if [[ $ncpu -ge 2 ]] && have taskset; then
    server_pin=(taskset -c "$server_cpus")
    client_pin=(taskset -c "$client_cpus")
fi

start_redis() {
    mkdir -p "$work_dir/redis"
    redis_port=$(free_port)
    # auto-aof-rewrite-percentage 0: no background rewrite (a fork and a
    # second writer) in the middle of a measurement; Strom has no such pause.
    # taskset execs redis-server, so $! is Redis itself, for the EXIT trap.
    "${server_pin[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --protected-mode yes \
        --dir "$work_dir/redis" --appendonly yes --appendfsync always --save "" \
        --auto-aof-rewrite-percentage 0 --daemonize no --logfile "$work_dir/redis/redis.log" &
    redis_pid=$!
    for _ in $(seq 100); do
        [[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]] && break
        kill -0 "$redis_pid" 2>/dev/null || die "redis-server exited at start: $(tail -5 "$work_dir/redis/redis.log")"
        sleep 0.1
    done
    [[ $(redis-cli -p "$redis_port" config get appendfsync | tail -1) == always ]] ||
        die "redis-server on port $redis_port does not run with appendfsync always"
}

value_1kib=$(head -c 1024 /dev/zero | tr '\0' x)

# redis-benchmark --csv: "test","rps","avg","min","p50","p95","p99","max"
# (latencies in ms). Prints: requests/s p50_us p99_us.
redis_bench() {
    local clients=$1 pipeline=$2 streams=$3 requests=$4 key="peers:s" rand=()
    if [[ $streams -gt 1 ]]; then key="peers:s:__rand_int__"; rand=(-r "$streams"); fi
    "${client_pin[@]}" timeout --foreground 300 redis-benchmark -p "$redis_port" -c "$clients" -P "$pipeline" \
        -n "$requests" "${rand[@]}" --csv --precision 3 XADD "$key" '*' f "$value_1kib" |
        tail -1 | tr -d '"' | awk -F, '{ printf "%s %.0f %.0f\n", $(NF-6), $(NF-3) * 1000, $(NF-1) * 1000 }'
}

# One shape on Redis: a short run (also the warm-up) sizes the measured run
# to about --duration seconds; the streams are dropped after it, so memory
# stays bounded (at most 500,000 entries of 1 KiB).
redis_shape() {
    local clients=$1 pipeline=$2 streams=$3 warm rps requests
    warm=$(redis_bench "$clients" "$pipeline" "$streams" $((clients * pipeline * 50)))
    rps=${warm%% *}
    requests=$(awk -v r="$rps" -v d="$duration_secs" 'BEGIN { n = int(r * d); if (n < 1000) n = 1000; if (n > 500000) n = 500000; print n }')
    redis_bench "$clients" "$pipeline" "$streams" "$requests"
    redis-cli -p "$redis_port" flushall >/dev/null
}

build_loadgen() {
    if [[ -n ${STROM_LOADGEN:-} ]]; then loadgen=$STROM_LOADGEN; return; fi
    echo "redis.sh: building loadgen (cargo build --release -p loadgen)" >&2
    (cd "$root_dir" && timeout --foreground 1200 cargo build --release -p loadgen --quiet)
    loadgen="${CARGO_TARGET_DIR:-$root_dir/target}/release/loadgen"
}

# One shape on Strom. loadgen's batch is exact: 1,094 bytes hold one record
# with a 1,024-byte value (61 bytes of batch header, 9 of record framing).
# Prints: records/s p50_us p99_us MB/s verify_clean.
strom_shape() {
    local producers=$1 inflight=$2 partitions=$3 json="$work_dir/strom-$4.json" rc=0
    timeout --foreground $((duration_secs + 180)) "$loadgen" --embedded --cores 1 --fsync always \
        --producers "$producers" --inflight "$inflight" --partitions "$partitions" \
        --batch-bytes 1094 --msg-size 1024 --consumers 0 --duration "$duration_secs" --warmup 1 \
        --no-ceiling --quiet --json "$json" --data-dir "$work_dir/strom-$4" >&2 || rc=$?
    [[ -s $json ]] || die "loadgen exited $rc without a report"
    # The log is not needed after the run: keep the disk use to one shape's.
    [[ $keep == 1 ]] || rm -rf "$work_dir/strom-$4"
    jq -r '[.produce.records_per_sec, .produce.ack_latency_us.p50, .produce.ack_latency_us.p99,
            .produce.mb_per_sec, .verify.clean] | map(tostring) | join(" ")' "$json"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

# One shape, Redis first then Strom, printed as one row of the table.
one_shape() {
    local shape=$1 round=$2 label strom redis s_rps s_p50 s_p99 s_mbs s_clean r_rps r_p50 r_p99 r_mbs
    case $shape in
        one) label="one at a time (1 x 1, 1 stream)"
             redis=$(redis_shape 1 1 1); strom=$(strom_shape 1 1 1 "one-$round") ;;
        pipelined) label="pipelined (4 x 16, 4 streams)"
             redis=$(redis_shape 4 16 4); strom=$(strom_shape 4 16 4 "pipelined-$round") ;;
    esac
    read -r s_rps s_p50 s_p99 s_mbs s_clean <<<"$strom"
    read -r r_rps r_p50 r_p99 <<<"$redis"
    r_mbs=$(awk -v r="$r_rps" 'BEGIN { printf "%.1f", r * 1024 / 1e6 }')
    s_mbs=$(awk -v m="$s_mbs" 'BEGIN { printf "%.1f", m }')
    printf '%-34s | %7s us %7s us %7s MB/s | %7s us %7s us %7s MB/s | %s %s %s%s\n' "$label" \
        "$s_p50" "$s_p99" "$s_mbs" "$r_p50" "$r_p99" "$r_mbs" \
        "$(ratio "$s_p50" "$r_p50")" "$(ratio "$s_p99" "$r_p99")" "$(ratio "$s_mbs" "$r_mbs")" \
        "$([[ $s_clean == true ]] || echo "   (Strom verify NOT clean)")"
    echo "  records/s: Strom ${s_rps%.*}, Redis ${r_rps%.*}; round $round of $rounds"
}

main() {
    have jq || die "jq is needed to read loadgen's JSON report (apt-get install jq)"
    ensure_redis
    mkdir -p "$work_dir"
    local fs round shape
    fs=$(df -T "$work_dir" | awk 'NR == 2 { print $2 }')
    [[ $fs != tmpfs ]] || die "$work_dir is on tmpfs: neither fsync nor O_DIRECT means anything there"
    build_loadgen
    start_redis
    echo "peers: $(redis-server --version | cut -d' ' -f1-3) (appendonly yes, appendfsync always) vs Strom loadgen --embedded" \
        "(1 core, fsync always); servers on CPU $server_cpus, clients on CPU $client_cpus; data on $fs under $work_dir;" \
        "${duration_secs} s per shape and side; 1 KiB values, MB = 10^6 bytes of values; ratios under 1x: Strom's latency is lower"
    printf '%-34s | %-30s | %-30s | %s\n' "shape" "Strom ack p50 / p99, MB/s" "Redis ack p50 / p99, MB/s" \
        "Strom/Redis p50, p99, MB/s"
    for round in $(seq "$rounds"); do
        for shape in "${shapes[@]}"; do one_shape "$shape" "$round"; done
    done
}

main
