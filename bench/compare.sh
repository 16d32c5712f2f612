#!/usr/bin/env bash
# The whole comparison of docs/benchmarks.md in one command: Spool against RabbitMQ (classic,
# quorum and stream queues) and NATS JetStream, every system on this machine, one after the
# other, with the same drivers; then a report with tables and plots.
#
#   cargo build --release && bench/compare.sh [OUT_DIR]
#
# Needs rabbitmq-server and nats-server (see bench/README.md). Environment:
#   TEST_SECONDS (default 30), WARMUP_SECONDS (5), RATE (the fixed rate of the latency runs;
#   default: half of what each system sustained at max rate),
#   SPOOL (default target/release/spool), TABLES (which tables to run; default "1 2 3").
# The whole run writes tens of GB (brokers keep what they were sent until their topics, queues
# or streams are deleted); it stops early when less than MIN_FREE_GB (default 30) is free.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
spool=${SPOOL:-target/release/spool}
test_s=${TEST_SECONDS:-30}
warm_s=${WARMUP_SECONDS:-5}
tables=${TABLES:-1 2 3}
work=$(mktemp -d)
mkdir -p "$out"
free_gb=$(df -P --block-size=1G "$work" | awk 'NR==2 {print $4}')
if (( free_gb < ${MIN_FREE_GB:-30} )); then
  echo "only ${free_gb} GB free under $work; the comparison needs about ${MIN_FREE_GB:-30}" >&2
  exit 1
fi
want() { [[ " $tables " == *" $1 "* ]]; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 600); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }

# Spool twice: its default flush policy, and fsync before every acknowledgement.
start_spool() { # name kafka amqp http extra...
  local name=$1 k=$2 a=$3 h=$4; shift 4
  setsid "$spool" serve --data-dir "$work/$name" --kafka-addr "127.0.0.1:$k" \
    --amqp-addr "127.0.0.1:$a" --http-addr "127.0.0.1:$h" "$@" >"$work/$name.log" 2>&1 &
  pids+=($!); last_pid=$!; wait_port "$k"; wait_port "$a"
}
# RabbitMQ as the current user with private directories (Debian's wrapper would switch user).
start_rabbitmq() {
  mkdir -p "$work/rabbit/mnesia" "$work/rabbit/log"
  echo "loopback_users.guest = false" >"$work/rabbit/rabbitmq.conf"
  RABBITMQ_NODE_PORT=35673 RABBITMQ_DIST_PORT=35674 RABBITMQ_NODENAME="bench$$@localhost" \
  RABBITMQ_MNESIA_BASE="$work/rabbit/mnesia" RABBITMQ_LOG_BASE="$work/rabbit/log" \
  RABBITMQ_CONFIG_FILE="$work/rabbit/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$work/rabbit/plugins" \
  HOME="$work/rabbit" setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$work/rabbit.log" 2>&1 &
  pids+=($!); wait_port 35673
}
start_nats() {
  setsid nats-server -js -a 127.0.0.1 -p 34222 -sd "$work/nats" >"$work/nats.log" 2>&1 &
  pids+=($!); wait_port 34222
}

run() { # result-name system driver target workload [options...]
  local name=$1 system=$2 driver=$3 target=$4 wl=$5; shift 5
  "$spool" bench run --workload "bench/workloads/$wl.toml" --driver "$driver" --target "$target" \
    --system "$system" --test-seconds "$test_s" --warmup-seconds "$warm_s" \
    --out "$out/$name.json" "$@"
}
# Half of the rate a max-rate result sustained (its consume rate): the fixed rate for latency.
half_of() { jq -r '[(.consume.msg_per_s / 2 | floor), 1] | max' "$out/$1.json"; }
# A max-rate run, then a run at half the rate it sustained (unless RATE fixes one for all).
run_max_and_half() { # result-name system driver target workload [options...]
  local name=$1; shift
  run "$name-max" "$@" || return 0
  local r=${RATE:-$(half_of "$name-max")}
  run "$name-half" "$@" --rate "$r" || true
}

start_spool spool 39092 35672 38080
spool_pid=$last_pid
start_spool spool-fsync 39192 35772 38180 --flush-messages 1
spool_fsync_pid=$last_pid
start_rabbitmq
start_nats
amqp_spool=amqp://guest:guest@127.0.0.1:35672/%2f
amqp_spool_fsync=amqp://guest:guest@127.0.0.1:35772/%2f
amqp_rabbit=amqp://guest:guest@127.0.0.1:35673/%2f
nats=nats://127.0.0.1:34222
stream=1-topic-16-partitions-1kb-max-rate

# 1. Streams: 1 topic x 16 partitions x 1 KiB, at max rate and at half of it.
if want 1; then
run_max_and_half 1-stream-spool "Spool" kafka 127.0.0.1:39092 "$stream" --broker-pid "$spool_pid"
run_max_and_half 1-stream-rabbitmq-stream "RabbitMQ stream" amqp "$amqp_rabbit" "$stream" \
  --queue-type stream --broker-process beam.smp
run_max_and_half 1-stream-nats "NATS JetStream" nats "$nats" "$stream" --broker-process nats-server
fi

# 2. Task queue: each system's strongest per-message durability, then its default.
if want 2; then
run_max_and_half 2-queue-strong-spool "Spool, fsync before confirm" amqp "$amqp_spool_fsync" \
  task-queue --broker-pid "$spool_fsync_pid" \
  --durability-note "spool --flush-messages 1: fsync before every confirm"
run_max_and_half 2-queue-strong-rabbitmq-quorum "RabbitMQ quorum" amqp "$amqp_rabbit" task-queue \
  --queue-type quorum --broker-process beam.smp --durability-note "quorum queue: fsync before confirm"
run_max_and_half 2-queue-default-spool "Spool" amqp "$amqp_spool" task-queue \
  --broker-pid "$spool_pid" --durability-note "spool default: written before confirm, fsync every flush.ms"
run_max_and_half 2-queue-default-rabbitmq-classic "RabbitMQ classic" amqp "$amqp_rabbit" task-queue \
  --queue-type classic --broker-process beam.smp
run_max_and_half 2-queue-default-nats "NATS JetStream" nats "$nats" task-queue \
  --broker-process nats-server --durability-note "nats-server 2.9 has no per-message fsync option"
fi

# 3. One Spool topic shape read as a stream (Kafka) and worked off as a queue (AMQP), and
#    both again over HTTP.
if want 3; then
run 3-same-topic-kafka-stream "Spool, stream (kafka)" kafka 127.0.0.1:39092 task-queue \
  --pattern stream --broker-pid "$spool_pid" || true
run 3-same-topic-amqp-queue "Spool, queue (amqp)" amqp "$amqp_spool" task-queue \
  --broker-pid "$spool_pid" || true
run 3-same-topic-http-stream "Spool, stream (http)" http http://127.0.0.1:38080 task-queue \
  --pattern stream --broker-pid "$spool_pid" || true
run 3-same-topic-http-queue "Spool, queue (http)" http http://127.0.0.1:38080 task-queue \
  --broker-pid "$spool_pid" || true
fi

report() { # name title results...
  local name=$1 title=$2; shift 2
  "$spool" bench report "$@" --out "$out/$name" --title "$title"
}
if want 1; then
  report 1-stream-max-rate "Streams, max rate" "$out"/1-stream-*-max.json
  report 1-stream-half-rate "Streams, half of each system's max rate" "$out"/1-stream-*-half.json
fi
if want 2; then
  report 2-task-queue-max-rate "Task queue, max rate" "$out"/2-queue-*-max.json
  report 2-task-queue-half-rate "Task queue, half of each system's max rate" "$out"/2-queue-*-half.json
fi
want 3 && report 3-same-topic "One topic, two models" "$out"/3-same-topic-*.json
echo "reports in $out/*/report.md"
