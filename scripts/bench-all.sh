#!/usr/bin/env bash
# Every budget of DESIGN.md, measured in one run on this machine, each benchmark that
# involves a broker run twice, with the embedded rumqttd and with a private Mosquitto,
# one right after the other. Writes target/bench-all/summary.md (the table at the top of
# BENCHMARKS.md) and keeps every report it was made from under target/bench-all/.
#
#   scripts/bench-all.sh                     everything (about 75 minutes here)
#   ONLY="ingest face" scripts/bench-all.sh  some of: ingest face fleet templates rollout partition
#   CABINETS=2000 scripts/bench-all.sh       a smaller fleet for a quick look (the budgets are for 10,000)
#   BENCH_BUILD=0                            use the release binaries already built
#   SUMMARY_ONLY=1                           only rebuild summary.md from the reports there
#
# Needs PostgreSQL on 127.0.0.1:5432 (PG_URL to change it) for the ingest rows, and
# mosquitto (apt-get install mosquitto). Run it on a quiet machine: a build beside it
# halves every figure.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/bench-all
mkdir -p "$out"
export PATH="$PATH:/usr/sbin"
target="${CARGO_TARGET_DIR:-target}"
cabinets="${CABINETS:-10000}"
only="${ONLY:-ingest face fleet templates rollout partition}"
pg="${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
wants() { [[ " $only " == *" $1 "* ]]; }
# A part that fails (a broker that wedges, say) is reported and the run goes on; the
# summary shows what each part left.
failed=()
part_failed() {
  echo "bench-all: $1 failed; going on" >&2
  [[ " ${failed[*]:-} " == *" $1 "* ]] || failed+=("$1")
}
log() { echo "== $(date -u +%T) $*"; }

if [ "${SUMMARY_ONLY:-0}" != 1 ]; then
  {
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "started: $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "mosquitto: $( (mosquitto -h 2>/dev/null || true) | head -1)"
    echo "postgresql: $(psql --version 2>/dev/null || echo '?')"
  } > "$out/machine.txt"
  if [ "${BENCH_BUILD:-1}" != 0 ]; then
    log "release build"
    cargo build --release --locked -p fleet-server -p simulator -p edge-agent
  fi
  export BENCH_BUILD=0

  if wants ingest; then
    log "ingest: PostgreSQL and SQLite, each broker, 3 runs of 200,000 events"
    : > "$out/ingest.jsonl"
    port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n' \
      "$port" > "$out/mosquitto-ingest.conf"
    mosquitto -c "$out/mosquitto-ingest.conf" > "$out/mosquitto-ingest.log" 2>&1 &
    mosq=$!
    trap 'kill $mosq 2>/dev/null || true' EXIT
    for db in "$pg" sqlite; do
      for broker in embedded "mqtt://127.0.0.1:$port"; do
        for run in 1 2 3; do
          "$target/release/simulator" bench-ingest --db "$db" --broker "$broker" --cabinets 100 \
            --events 200000 --batch 50 2>> "$out/ingest.log" | tee -a "$out/ingest.jsonl" || part_failed "ingest-${db%%:*}-${broker%%:*}"
        done
      done
    done
    kill $mosq 2>/dev/null || true
    trap - EXIT
  fi

  if wants face; then
    log "face: frame to decision on one core, reference and MobileFaceNet-sized embedding"
    scripts/bench-face-mobilefacenet.sh "$out/face" > "$out/face.log" || part_failed face
  fi

  if wants fleet; then
    rm -rf "${out:?}/fleet" "${out:?}/memory"   # no report of an earlier run mixed in
    log "fleet: $cabinets cabinets, default scenario, both brokers"
    BENCH_OUT="$out/fleet" FRONT_DOOR=0 SHARDS=3 scripts/bench-fleet.sh "$cabinets" simulator/scenarios/default.toml \
      | tee "$out/fleet.md" || part_failed fleet
  fi

  if wants templates; then
    rm -rf "${out:?}/templates"   # no report of an earlier run mixed in
    log "templates: $cabinets cabinets, 25 face parcels a second, both brokers"
    BENCH_OUT="$out/templates" FRONT_DOOR=0 SHARDS=3 scripts/bench-fleet.sh "$cabinets" \
      simulator/scenarios/templates-paced.toml | tee "$out/templates.md" || part_failed templates
  fi

  if wants rollout; then
    rm -rf "${out:?}/rollout"   # no report of an earlier run mixed in
    log "rollout: one rollout to $cabinets cabinets, three waves, both brokers"
    BENCH_OUT="$out/rollout" FRONT_DOOR=0 SHARDS=3 BROKERS="embedded mosquitto" scripts/bench-rollout.sh "$cabinets" \
      | tee "$out/rollout.md" || part_failed rollout
  fi

  if wants partition; then
    rm -rf "${out:?}/partition"   # no report of an earlier run mixed in
    log "partition: 2,000 cabinets, a quarter cut off and healed, both brokers"
    BENCH_OUT="$out/partition" SHARDS=1 scripts/bench-fleet.sh 2000 simulator/scenarios/partition.toml \
      | tee "$out/partition.md" || part_failed partition
  fi
  echo "finished: $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)${failed[*]:+; failed: ${failed[*]}}" >> "$out/machine.txt"
fi

python3 scripts/bench_summary.py "$out" | tee "$out/summary.md"
