#!/usr/bin/env bash
# The core benchmark of docs/benchmarks.md: Spool's produce and consume throughput with
# librdkafka, beside the machine's own limits measured in the same run (dd with and without
# fdatasync, an iperf3 loopback stream).
#
#   cargo build --release && bench/core.sh [TOTAL_MIB] [WORK_DIR]
#
# TOTAL_MIB defaults to 4096 (the issue's 4 GiB); WORK_DIR to target/bench (on the disk under
# test). Needs dd and iperf3 (apt-get install iperf3). Prints one line per figure.
set -euo pipefail

total_mib=${1:-4096}
work=${2:-target/bench}
spool=${SPOOL:-target/release/spool}
port=${BENCH_PORT:-19192}
mkdir -p "$work"

mbps() { awk '{ printf "%.0f MB/s", $1 / 1e6 }'; }

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r)"
echo "# disk: $(df -h "$work" | awk 'NR == 2 { print $1 " (" $2 ")" }')"

dd_run() {
    local flags=$1
    rm -f "$work/dd.tmp"
    sync
    # dd reports bytes and seconds on its last line of stderr.
    LC_ALL=C dd if=/dev/zero of="$work/dd.tmp" bs=1M count="$total_mib" $flags 2>&1 |
        awk '/bytes/ { print $1 / $(NF-3) }' | mbps
    rm -f "$work/dd.tmp"
}
echo "dd bs=1M conv=fdatasync: $(dd_run conv=fdatasync)"
echo "dd bs=1M (page cache):   $(dd_run '')"

iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
iperf_pid=$!
sleep 0.5
bps=$(iperf3 -c 127.0.0.1 -p 5299 -t 10 -J | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
wait "$iperf_pid" || true
echo "iperf3 loopback, one stream: $(echo "$bps / 8" | bc -l | mbps)"

run_spool() {
    local client=$1 acks=$2 extra=$3
    local data="$work/spool-data"
    rm -rf "$data"
    "$spool" serve --data-dir "$data" --kafka-addr "127.0.0.1:$port" --log-level warn &
    local pid=$!
    "$spool" bench --bootstrap "127.0.0.1:$port" --total-mib "$total_mib" --partitions 16 \
        --record-size 1024 --acks "$acks" --client "$client" $extra | sed "s/^/  /"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$data"
}
for client in librdkafka wire; do
    for acks in 1 all; do
        echo "spool, $client client, acks=$acks, default flush policy:"
        run_spool "$client" "$acks" ""
        echo "spool, $client client, acks=$acks, fsync before every acknowledgement:"
        run_spool "$client" "$acks" --fsync-each
    done
done
