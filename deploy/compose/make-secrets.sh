#!/usr/bin/env sh
# Makes the secrets of the compose stack: random keys and passwords, one file each, in
# deploy/compose/secrets/ (or the folder given as the first argument). Files that exist
# are kept, so running it again never rotates a key by accident.
#
# The folder is 0700; the files are 0644 because Compose bind-mounts them unchanged and
# the containers read them as their own unprivileged users.
set -eu
dir="${1:-$(dirname "$0")/secrets}"
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
random_b64() { head -c 32 /dev/urandom | base64 | tr -d '\n'; }

put() {
  if [ -e "$dir/$1" ]; then
    echo "kept    $dir/$1"
  else
    printf '%s\n' "$2" > "$dir/$1"
    chmod 0644 "$dir/$1"
    echo "made    $dir/$1"
  fi
}

put postgres_password "$(random_hex 24)"
pg=$(cat "$dir/postgres_password")
put FLEET_DATABASE__URL "postgres://lockerfleet:$pg@postgres:5432/lockerfleet"
put FLEET_MQTT__PASSWORD "$(random_hex 24)"
mqtt=$(cat "$dir/FLEET_MQTT__PASSWORD")
# EMQX's built-in database is seeded from this file on first start (existing users are
# not overwritten). Cabinets are added at provisioning, username = cabinet id.
put emqx_users.csv "user_id,password,is_superuser
lockerfleet-server,$mqtt,false"
put FLEET_AUTH__BOOTSTRAP_TOKEN "$(random_hex 32)"
put FLEET_TEMPLATES__KEK "$(random_b64)"
put FLEET_COURIERS__PASS_SIGNING_KEY "$(random_b64)"
put grafana_admin_password "$(random_hex 16)"
