# Shared by scripts/bench-fleet.sh and scripts/bench-rollout.sh (sourced, not run):
# starting a release fleet-server for one benchmark half, with its embedded rumqttd or a
# private Mosquitto, and dividing a scenario's fleet-wide rates among simulator shards.
#
# Needs: $target (the cargo target dir), $token (the bootstrap admin token) and the
# arrays pids and sims (processes bench_cleanup, the caller's EXIT trap, kills).

shm=""  # the running half's tmpfs folder, if any

# bench_cabinet_data DIR
#   Sets simdata, where the simulated cabinets keep their own files (journals, desired
#   state, update slots): a tmpfs folder, or DIR with SIM_DATA=disk. A real cabinet
#   fsyncs its own flash; thousands of simulated ones on the server's disk queue every
#   fsync of the fleet (and the server's) behind each other and stall the simulator.
bench_cabinet_data() {
  if [ "${SIM_DATA:-tmpfs}" = disk ] || [ ! -d /dev/shm ]; then simdata=$1; else simdata=$(mktemp -d -p /dev/shm); shm=$simdata; fi
}

# bench_drop_cabinet_data: removes the tmpfs folder bench_cabinet_data made, if any.
bench_drop_cabinet_data() { [ -z "$shm" ] || rm -rf "$shm"; shm=""; }

# bench_cleanup: the EXIT trap; stops every process started and frees the tmpfs folder.
bench_cleanup() {
  for p in "${pids[@]}" "${sims[@]}"; do kill "$p" 2>/dev/null || true; done
  bench_drop_cabinet_data
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# bench_start_server BROKER DIR [EXTRA_TOML]
#   BROKER: embedded | mosquitto. Sets http, mqtt (ports) and server (pid); the server's
#   log is DIR/server.log. EXTRA_TOML is appended to the server's configuration.
#   FRONT_DOOR=0: the embedded rumqttd serves the cabinets itself (loopback only).
#   DATABASE=postgres://…: instead of a fresh SQLite file in DIR.
bench_start_server() {
  local broker=$1 dir=$2 extra=${3:-} broker_cfg
  http=$(free_port)
  mqtt=$(free_port)
  if [ "$broker" = mosquitto ]; then
    command -v mosquitto >/dev/null || { echo "bench: mosquitto is needed (apt-get install mosquitto)" >&2; return 1; }
    # Queues sized for bursts (BENCHMARKS.md, ingest): the stock limits drop a lagging
    # subscriber's messages.
    # set_tcp_nodelay: Mosquitto's default leaves Nagle's algorithm on, and a message it
    # forwards right after another waits for the receiver's delayed ACK (up to 40 ms).
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\n' \
      "$mqtt" > "$dir/mosquitto.conf"
    mosquitto -c "$dir/mosquitto.conf" > "$dir/mosquitto.log" 2>&1 &
    pids+=($!)
    broker_cfg="mode = \"external\"
url = \"mqtt://127.0.0.1:$mqtt\""
  else
    broker_cfg="mode = \"embedded\"
listen = \"127.0.0.1:$mqtt\"
front_door = $([ "${FRONT_DOOR:-1}" = 0 ] && echo false || echo true)"
  fi
  cat > "$dir/fleet-server.toml" <<TOML
[http]
listen = "127.0.0.1:$http"
[mqtt]
$broker_cfg
[database]
url = "${DATABASE:-sqlite://$dir/fleet.db?mode=rwc}"
[auth]
bootstrap_token = "$token"
token_file = "$dir/admin.token"
[log]
level = "warn"
$extra
TOML
  "$target/release/fleet-server" --config "$dir/fleet-server.toml" > "$dir/server.log" 2>&1 &
  server=$!
  pids+=($server)
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$http/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "bench: the fleet-server did not become ready within 20 s (see $dir/server.log)" >&2
  return 1
}

# bench_split_scenario SCENARIO SHARDS > OUT
#   A scenario's admission and parcel rates are for the whole fleet: each shard gets its
#   part. (A rollout's rate is not divided: the shards share one rollout, see
#   simulator/src/barrier.rs.)
bench_split_scenario() {
  python3 - "$1" "$2" <<'PY'
import re, sys
text, shards = open(sys.argv[1]).read(), int(sys.argv[2])
print(re.sub(r"(?m)^(connect_per_s|parcels_per_s)\s*=\s*([0-9.]+)", lambda m: f"{m.group(1)} = {float(m.group(2)) / shards}", text))
PY
}
