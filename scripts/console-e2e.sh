#!/usr/bin/env bash
# The operator console's end-to-end tests: a real headless Chromium (Debian's `chromium`,
# driven by playwright-core) against a fleet-server with real edge-agent processes as
# cabinets. Installs what is missing (chromium with apt-get, the npm packages from the
# lock file), builds the two binaries, runs `node --test`, and ends with a cargo-style
# `test result:` line so scripts/test.sh counts these tests with the rest.
#
# Screenshots of every page go to fleet-server/console-e2e/screenshots/ (or
# $E2E_SCREENSHOTS). E2E_KEEP=1 keeps the temp folder with the processes' logs.
set -euo pipefail
cd "$(dirname "$0")/.."

export CHROMIUM="${CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$CHROMIUM" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing chromium (the console's end-to-end tests run in it)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    CHROMIUM=$(command -v chromium)
  else
    echo "scripts/console-e2e.sh: chromium is needed (Debian: apt-get install chromium)" >&2
    exit 1
  fi
fi
for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "scripts/console-e2e.sh: $tool is needed (Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
done

e2e=fleet-server/console-e2e
if [ ! -d "$e2e/node_modules/playwright-core" ] || [ "$e2e/package-lock.json" -nt "$e2e/node_modules/.package-lock.json" ]; then
  echo "== npm ci (console e2e)"
  (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== building fleet-server and edge-agent"
cargo build --locked -p fleet-server -p edge-agent
target="${CARGO_TARGET_DIR:-$PWD/target}"
export LF_E2E_SERVER_BIN="$target/debug/fleet-server" LF_E2E_AGENT_BIN="$target/debug/edge-agent"
export E2E_SCREENSHOTS="${E2E_SCREENSHOTS:-$PWD/$e2e/screenshots}"

echo "== console end-to-end tests in $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
tap=$(mktemp)
trap 'rm -f "$tap"' EXIT
set +e
(cd "$e2e" && node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" console.test.mjs)
status=$?
set -e
pass=$(awk '/^# pass /{print $3}' "$tap")
fail=$(awk '/^# fail /{print $3}' "$tap")
skip=$(awk '/^# skipped /{print $3}' "$tap")
echo "screenshots: $E2E_SCREENSHOTS"
echo "test result: $([ "$status" = 0 ] && echo ok || echo FAILED). ${pass:-0} passed; ${fail:-1} failed; ${skip:-0} ignored; 0 measured; 0 filtered out (console e2e in Chromium)"
exit "$status"
