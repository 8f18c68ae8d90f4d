#!/usr/bin/env bash
# The rollout benchmark: N real edge agents (the simulator) against a release
# fleet-server process on this machine (embedded rumqttd, SQLite): a 256 KiB release is
# signed, uploaded and rolled out in three waves to every cabinet; each downloads it,
# installs it into its other slot, restarts in the simulator's process and confirms.
#
#   scripts/bench-rollout.sh [CABINETS] [SCENARIO]   defaults: 2000, simulator/scenarios/rollout.toml
#
# SHARDS=n splits the cabinets over n simulator processes (default: one per 4,000; a
# process may hold 20,000 open files here, two per cabinet). The processes meet in a
# folder and share one rollout to the whole fleet: the first starts it once every
# cabinet is online, each checks its own cabinets at the end. BROKERS="embedded
# mosquitto" also runs it against a private Mosquitto. BENCH_BUILD=0 skips the build.
# SIM_DATA=disk keeps the simulated cabinets' files on this disk instead of tmpfs.
#
# Writes (into BENCH_OUT, default target/bench-rollout/) <broker>-<shard>.json and prints the rows BENCHMARKS.md
# carries: the fleet's waves, and the shards' cabinets added up.
set -euo pipefail
cd "$(dirname "$0")/.."

cabinets="${1:-2000}"
scenario="${2:-simulator/scenarios/rollout.toml}"
target="${CARGO_TARGET_DIR:-target}"
out="${BENCH_OUT:-target/bench-rollout}"
mkdir -p "$out"
export PATH="$PATH:/usr/sbin"

[ "${BENCH_BUILD:-1}" = 0 ] || cargo build --release --locked -p fleet-server -p simulator
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

shards="${SHARDS:-$(( (cabinets + 3999) / 4000 ))}"
token="lf_bench-rollout-admin-token-0000000"
# shellcheck source=lib/bench-server.sh
. scripts/lib/bench-server.sh
pids=()
sims=()
trap bench_cleanup EXIT

status=0
for broker in ${BROKERS:-embedded}; do
  dir=$(mktemp -d)
  # tmpfs unless SIM_DATA=disk (lib/bench-server.sh); each cabinet's update slot goes
  # there too: cabinets × artifact_kib of memory.
  bench_cabinet_data "$dir"
  # An earlier run's reports must not pass for this one's.
  rm -f "$out/$broker"-*.json "$out/$broker".json "$out/$broker"-*.html "$out/$broker-metrics.txt"
  public=$("$target/release/fleet-server" artifact keygen --out "$dir/release.key" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
  bench_start_server "$broker" "$dir" "[artifacts]
dir = \"$dir/artifacts\"
trusted_keys = [\"$public\"]"
  echo "== $broker: $cabinets cabinets in $shards simulator process(es), scenario $scenario (server pid $server, logs in $dir)"
  bench_split_scenario "$scenario" "$shards" > "$dir/scenario.toml"
  sims=()
  for k in $(seq 0 $((shards - 1))); do
    n=$(( cabinets / shards + (k < cabinets % shards ? 1 : 0) ))
    LOCKERFLEET_RELEASE_KEY="$dir/release.key" "$target/release/simulator" run --server "http://127.0.0.1:$http" \
      --token "$token" --mqtt-port "$mqtt" --cabinets "$n" --scenario "$dir/scenario.toml" --prefix "roll$k" \
      --data "$simdata/cabinets" --server-pid "$server" --timeout-s 3600 --barrier "$dir/barrier" --barrier-of "$shards" \
      --report "$out/$broker-$k.json" > /dev/null 2> "$dir/simulator-$k.log" &
    sims+=($!)
  done
  for p in "${sims[@]}"; do
    wait "$p" || { echo "bench-rollout: a simulator process failed (see $dir/simulator-*.log)" >&2; status=1; }
  done
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  bench_drop_cabinet_data
done

python3 - "$out" "$shards" ${BROKERS:-embedded} <<'PY'
import json, sys
out, shards, brokers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
f = lambda v, unit="s": "-" if v is None else f"{v:.1f} {unit}"
print("| broker | cabinets (processes) | wave 1 / 2 / 3: cabinets, start → end | all updated | updated / failed / stuck / lost | restarts (busy) | served | server CPU (cores) | server RSS max | events lost / dup |")
print("|---|---:|---|---:|---|---|---:|---:|---:|---|")
for broker in brokers:
    try:
        parts = [json.load(open(f"{out}/{broker}-{k}.json")) for k in range(shards)]
    except (OSError, ValueError):
        print(f"| {broker} | did not finish: a simulator process wrote no report (see its log) | | | | | | | | |")
        continue
    # The first shard led: it started the fleet's one rollout, and its clock and server
    # counters cover it from the start. The cabinets' outcomes are added up.
    lead = parts[0]["rollout"]
    rs = [p["rollout"] for p in parts]
    ids = {r["rollout"] for r in rs}
    if len(ids) != 1:
        print(f"| {broker} | the shards ran {len(ids)} rollouts, not one | | | | | | | | |")
        continue
    total = lambda key: sum(r[key] for r in rs)
    waves = " · ".join(f"{w['cabinets']}: {f(w['started_s'])} → {f(w['ended_s'])}" for w in lead["waves"])
    served = "-" if lead["bytes_served"] is None else f"{lead['bytes_served'] / 2**20:.0f} MiB"
    cpu = "-" if lead["server_cpu_s"] is None else f"{lead['server_cpu_s']:.0f} s ({lead['server_cpu_cores']:.2f})"
    rss = max((r["server_rss_mib_max"] for r in rs if r["server_rss_mib_max"] is not None), default=None)
    print(f"| {broker} | {lead['cabinets']} ({shards}) | {waves} | {f(lead['seconds_to_all_updated'])} | "
          f"{total('updated')} / {total('failed')} / {total('stuck')} / {total('lost')} | "
          f"{total('restarts')} ({total('restarts_while_busy') + total('restarts_while_door_open')}) | {served} | {cpu} | "
          f"{f(rss, 'MiB')} | {sum(p['events_lost'] for p in parts)} / {sum(p['events_duplicated'] for p in parts)} |")
PY
exit $status
