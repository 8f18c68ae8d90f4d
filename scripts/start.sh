#!/usr/bin/env bash
# Starts the fleet-server on the embedded default: rumqttd inside the process on
# 127.0.0.1:1884, SQLite in ./lockerfleet.db, the API on http://127.0.0.1:8080.
# This is the README's start command. Extra arguments go to the server
# (e.g. `scripts/start.sh --config fleet-server.toml`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/start.sh: cargo is not installed; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi

exec cargo run --release --locked -p fleet-server -- "$@"
