#!/bin/sh
# Container entrypoint of the fleet-server: turns secret files into configuration
# variables, then runs the server with the given arguments (default `serve`).
#
# Every regular file in $LOCKERFLEET_SECRETS_DIR (default /run/secrets, where Compose and Swarm
# mount secrets) whose name is a configuration variable, FLEET_<SECTION>__<KEY>, becomes
# that variable with the file's content (trailing newlines dropped), e.g.
#   /run/secrets/FLEET_TEMPLATES__KEK  ->  FLEET_TEMPLATES__KEK
# so keys never sit in the image, the compose file or `docker inspect`. A variable that
# is already set wins over the file. Other file names are ignored with a warning.
# (The script's own settings are not named FLEET_*: the server reads every FLEET_*
# variable as a configuration key and refuses unknown ones.)
set -eu

dir="${LOCKERFLEET_SECRETS_DIR:-/run/secrets}"
if [ -d "$dir" ]; then
  for f in "$dir"/*; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    case "$name" in
      FLEET_*__*) ;;
      *) echo "lockerfleet-entrypoint: ignoring $f (not named FLEET_<SECTION>__<KEY>)" >&2; continue ;;
    esac
    case "$name" in
      *[!A-Z0-9_]*) echo "lockerfleet-entrypoint: ignoring $f (not a variable name)" >&2; continue ;;
    esac
    if eval "[ -n \"\${$name+set}\" ]"; then
      continue
    fi
    value=$(cat "$f")
    export "$name=$value"
  done
fi

# LOCKERFLEET_SERVER_BIN exists for testing this script (scripts/check-deploy.sh).
exec "${LOCKERFLEET_SERVER_BIN:-/usr/local/bin/fleet-server}" "$@"
