#!/usr/bin/env bash
# The simulated-fleet benchmark: N real edge agents (the simulator) against a release
# fleet-server process on this machine, once with its embedded rumqttd and once with a
# private Mosquitto as the broker, the same scenario on the same machine in one run.
#
#   scripts/bench-fleet.sh [CABINETS] [SCENARIO]      defaults: 10000, simulator/scenarios/default.toml
#
# SHARDS=n splits the cabinets over n simulator processes run side by side (default: one
# per 4,000 cabinets): a process may hold only so many open files (20,000 here), and
# each simulated cabinet holds two (its MQTT socket and its journal).
#
# Writes (into BENCH_OUT, default target/bench-fleet/) {embedded,mosquitto}.{json,html} (and the server's final
# /metrics as {embedded,mosquitto}-metrics.txt) and prints the table that
# BENCHMARKS.md carries. The server runs on SQLite (DATABASE=postgres://… for PostgreSQL).
#
#   BROKERS="embedded mosquitto"   which halves to run (default both)
#   SERVER_EXTRA='[parcels]…'      more server configuration (TOML), e.g. a short pickup
#                                  window for a scenario's no-shows
#   SIM_DATA=disk                  the simulated cabinets' journals and state on this disk,
#                                  beside the server's database, instead of tmpfs
#   FRONT_DOOR=0                   embedded rumqttd serves the cabinets itself, without the
#                                  front door (loopback only): one descriptor per cabinet
#                                  in the server instead of three (see BENCHMARKS.md)
# The shards register their cabinets, then wait for each other, so every cabinet of the
# fleet starts connecting in the same window.
set -euo pipefail
cd "$(dirname "$0")/.."

cabinets="${1:-10000}"
scenario="${2:-simulator/scenarios/default.toml}"
target="${CARGO_TARGET_DIR:-target}"
out="${BENCH_OUT:-target/bench-fleet}"
mkdir -p "$out"
export PATH="$PATH:/usr/sbin"
command -v mosquitto >/dev/null || { echo "bench-fleet: mosquitto is needed (apt-get install mosquitto)" >&2; exit 1; }

[ "${BENCH_BUILD:-1}" = 0 ] || cargo build --release --locked -p fleet-server -p simulator
# Each cabinet holds a socket on both ends and its journal open.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

shards="${SHARDS:-$(( (cabinets + 3999) / 4000 ))}"
token="lf_bench-fleet-admin-token-000000000"
# shellcheck source=lib/bench-server.sh
. scripts/lib/bench-server.sh
pids=()
sims=()
trap bench_cleanup EXIT

brokers="${BROKERS:-embedded mosquitto}"
for broker in $brokers; do
  dir=$(mktemp -d)
  bench_cabinet_data "$dir"  # tmpfs unless SIM_DATA=disk (lib/bench-server.sh)
  # An earlier run's reports must not pass for this one's.
  rm -f "$out/$broker"-*.json "$out/$broker".json "$out/$broker"-*.html "$out/$broker-metrics.txt"
  # A fresh key-encryption key, so scenarios with face pickups (operator-held templates) run.
  kek=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')
  bench_start_server "$broker" "$dir" "[templates]
kek = \"$kek\"
${SERVER_EXTRA:-}"
  echo "== $broker: $cabinets cabinets in $shards simulator process(es), scenario $scenario (server pid $server, logs in $dir)"
  bench_split_scenario "$scenario" "$shards" > "$dir/scenario.toml"
  sims=()
  for k in $(seq 0 $((shards - 1))); do
    n=$(( cabinets / shards + (k < cabinets % shards ? 1 : 0) ))
    "$target/release/simulator" run --server "http://127.0.0.1:$http" --token "$token" \
      --mqtt-port "$mqtt" --cabinets "$n" --scenario "$dir/scenario.toml" --prefix "bench$k" \
      --data "$simdata/cabinets" --server-pid "$server" --timeout-s 1800 --barrier "$dir/barrier" --barrier-of "$shards" \
      --report "$out/$broker-$k.json" --plot "$out/$broker-$k.html" > /dev/null 2> "$dir/simulator-$k.log" &
    sims+=($!)
  done
  for p in "${sims[@]}"; do wait "$p" || echo "bench-fleet: a simulator process failed (see $dir/simulator-*.log)" >&2; done
  # The server's own histograms (write-gate waits, ingest lag, outbox delivery) for the record.
  curl -sf "http://127.0.0.1:$http/metrics" > "$out/$broker-metrics.txt" || echo "bench-fleet: no /metrics from the server" >&2
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  bench_drop_cabinet_data
done

python3 - "$out" "$shards" "$brokers" <<'PY'
import json, sys
out, shards = sys.argv[1], int(sys.argv[2])
rows = []
for broker in sys.argv[3].split():
    parts = [json.load(open(f"{out}/{broker}-{k}.json")) for k in range(shards)]
    # Sums, and for times and tail latencies the worst shard (an upper bound of the whole).
    r = {key: sum(p[key] for p in parts) for key in
         ["cabinets", "connected", "events_made", "events_acked", "events_lost", "events_duplicated", "healthz_failures"]}
    # From the first cabinet of any shard started to the last of all connected.
    r["seconds_to_all_connected"] = (max(p["all_connected_unix_ms"] for p in parts)
                                     - min(p["connect_started_unix_ms"] for p in parts)) / 1000
    r["seconds"] = max(p["seconds"] for p in parts)
    r["healthz_max_ms"] = max(p["healthz_max_ms"] for p in parts)
    for lat in ["assignment_to_cabinet", "code_to_cabinet", "template_to_cabinet"]:
        r[lat] = {q: max(p[lat][q] for p in parts) for q in ["p50_ms", "p99_ms", "max_ms"]}
        r[lat]["count"] = sum(p[lat]["count"] for p in parts)
    before = min((p["server_rss_mib_before"] for p in parts if p.get("server_rss_mib_before")), default=None)
    after = max((p["server_rss_mib_connected"] for p in parts if p.get("server_rss_mib_connected")), default=None)
    r["server_rss_mib_connected"] = after
    r["server_kib_per_cabinet"] = (after - before) * 1024 / r["connected"] if before and after and r["connected"] else None
    days = [p["day"] for p in parts if p.get("day")]
    if days:
        d = {key: sum(x[key] for x in days) for key in
             ["parcels_arrived", "parcels_deposited", "parcels_refused_no_room", "parcels_refused_unplanned",
              "parcels_picked_up", "no_shows", "items", "items_late_over_1s"]}
        for key in ["simulated_hours", "speed", "real_seconds_planned", "real_seconds",
                    "lateness_p50_s", "lateness_p99_s", "lateness_max_s"]:
            d[key] = max(x[key] for x in days)
        d["kept_up"] = all(x["kept_up"] for x in days)
        d["pickup_window_simulated_h"] = days[0].get("pickup_window_simulated_h")
        r["day"] = d
    json.dump(r, open(f"{out}/{broker}.json", "w"), indent=2)
    rows.append((broker, r))
# Sealed-template latencies only when the scenario has face parcels.
faces = any(r["template_to_cabinet"]["count"] for _, r in rows)
print("| broker | cabinets | all connected | made / acked / lost / dup | assignment p50 / p99 | code p50 / p99 | "
      + ("template p50 / p99 / max | " if faces else "") + "server RSS connected | per cabinet | /healthz fails, max | wall |")
print("|---|---:|---:|---|---|---|" + ("---|" if faces else "") + "---:|---:|---|---:|")
for broker, r in rows:
    a, c, t = r["assignment_to_cabinet"], r["code_to_cabinet"], r["template_to_cabinet"]
    templates = f"{t['p50_ms']:.0f} / {t['p99_ms']:.0f} / {t['max_ms']:.0f} ms | " if faces else ""
    kib = r.get("server_kib_per_cabinet")
    rss = r.get("server_rss_mib_connected")
    print(f"| {broker} | {r['connected']}/{r['cabinets']} | {r['seconds_to_all_connected']:.1f} s | "
          f"{r['events_made']} / {r['events_acked']} / {r['events_lost']} / {r['events_duplicated']} | "
          f"{a['p50_ms']:.0f} / {a['p99_ms']:.0f} ms | {c['p50_ms']:.0f} / {c['p99_ms']:.0f} ms | {templates}"
          f"{'-' if rss is None else f'{rss:.0f} MiB'} | {'-' if kib is None else f'{kib:.1f} KiB'} | "
          f"{r['healthz_failures']}, {r['healthz_max_ms']:.0f} ms | {r['seconds']:.0f} s |")
# A scenario on simulated time ([day]): how the fleet kept up with its clock.
if any("day" in r for _, r in rows):
    print()
    print("| broker | simulated h at speed | real s planned / taken | arrived / deposited / refused (no room) | "
          "picked up / no-shows | lateness p50 / p99 / max | kept up | pickup window |")
    print("|---|---|---|---|---|---|---|---|")
    for broker, r in rows:
        d = r.get("day")
        if not d:
            continue
        w = d.get("pickup_window_simulated_h")
        print(f"| {broker} | {d['simulated_hours']:.1f} h at {d['speed']:g}x | "
              f"{d['real_seconds_planned']:.0f} / {d['real_seconds']:.0f} s | "
              f"{d['parcels_arrived']} / {d['parcels_deposited']} / "
              f"{d['parcels_refused_no_room'] + d['parcels_refused_unplanned']} | "
              f"{d['parcels_picked_up']} / {d['no_shows']} | "
              f"{d['lateness_p50_s']:.2f} / {d['lateness_p99_s']:.2f} / {d['lateness_max_s']:.2f} s | "
              f"{'yes' if d['kept_up'] else 'no'} | {'-' if w is None else f'{w:.1f} simulated h'} |")
PY
