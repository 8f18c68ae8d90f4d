#!/usr/bin/env python3
"""Cross-file checks of deploy/ that no single tool makes (run by scripts/check-deploy.sh).

Usage: check_deploy.py COMMAND [ARGS]

  compose-mounts RESOLVED.yml SECRETS_DIR
      RESOLVED.yml is `docker compose config` output. Every bind-mounted file or folder
      and every secret file must exist, where files under deploy/compose/secrets/ count as
      existing when make-secrets.sh made them in SECRETS_DIR.
  compose-env RESOLVED.yml SERVICE
      Prints SERVICE's environment as NAME=VALUE lines (to run check-config with it).
  compose-command RESOLVED.yml SERVICE
      Prints SERVICE's command, one argument a line.
  emqx RESOLVED.yml deploy/emqx/emqx.conf deploy/k8s/configmap.yaml
      emqx.conf parses (HOCON) and agrees with compose and Kubernetes: the ACL and user
      files are read from where compose mounts them, unmatched requests are denied,
      logins are by username, and the fleet-server's broker URL names the server listener.
  k8s-config deploy/k8s/configmap.yaml OUT.toml
      Writes the fleet-server.toml of the ConfigMap to OUT.toml.
  k8s-secret deploy/k8s/secret.yaml
      Prints the Secret's stringData as NAME=VALUE lines.
  kustomization deploy/k8s
      kustomization.yaml lists every other manifest of the folder, and only those.
  dashboard-promql OUT.yml
      Writes every PromQL expression of dashboards/*.json as a recording rule into OUT.yml
      (Grafana's variables replaced by plain values), for `promtool check rules` to parse.

Each command prints what it checked and exits 1 on the first problem.
"""

import sys
from pathlib import Path
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parent.parent


def fail(msg):
    print(f"FAILED: {msg}")
    sys.exit(1)


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def compose_mounts(resolved, secrets_dir):
    doc = load(resolved)
    made = {p.name for p in Path(secrets_dir).iterdir()}
    secrets_home = (ROOT / "deploy/compose/secrets").resolve()
    checked = 0

    def exists(src, what):
        nonlocal checked
        p = Path(src).resolve()
        if p.parent == secrets_home:
            if p.name not in made:
                fail(f"{what}: {src} is not made by deploy/compose/make-secrets.sh")
        elif not p.exists():
            fail(f"{what}: {src} does not exist")
        checked += 1

    for name, svc in doc.get("services", {}).items():
        for v in svc.get("volumes", []):
            if isinstance(v, dict):
                if v.get("type") == "bind":
                    exists(v["source"], f"service {name} volume")
            else:
                src = v.split(":", 1)[0]
                if src.startswith(("/", ".")):
                    exists(src, f"service {name} volume")
        for s in svc.get("secrets", []):
            sname = s["source"] if isinstance(s, dict) else s
            if sname not in doc.get("secrets", {}):
                fail(f"service {name} uses secret {sname}, which is not declared")
    for sname, s in doc.get("secrets", {}).items():
        exists(s["file"], f"secret {sname}")
    print(f"ok: {checked} bind mounts and secret files of the compose stack exist or are made by make-secrets.sh")


def compose_env(resolved, service):
    env = load(resolved)["services"][service].get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    for k, v in sorted(env.items()):
        print(f"{k}={v}")


def compose_command(resolved, service):
    command = load(resolved)["services"][service].get("command", [])
    for arg in command if isinstance(command, list) else command.split():
        print(arg)


def mount_target(doc, service, source_suffix):
    for v in doc["services"][service].get("volumes", []):
        src, dst = (v["source"], v["target"]) if isinstance(v, dict) else v.split(":")[:2]
        if str(src).endswith(source_suffix):
            return dst
    fail(f"compose service {service} mounts no {source_suffix}")


def emqx(resolved, conf, configmap):
    from pyhocon import ConfigFactory

    c = ConfigFactory.parse_file(conf)
    doc = load(resolved)
    authz = c["authorization"]
    if authz.get("no_match") != "deny":
        fail("emqx.conf: authorization.no_match must be deny (the ACL ends with a deny, but other sources may not)")
    files = [s for s in authz["sources"] if s.get("type") == "file"]
    if len(files) != 1 or not files[0].get("enable", True):
        fail("emqx.conf: exactly one enabled file authorization source expected")
    acl_target = mount_target(doc, "emqx", "deploy/emqx/acl.conf")
    if files[0]["path"] != acl_target:
        fail(f"emqx.conf reads the ACL from {files[0]['path']}, compose mounts it at {acl_target}")
    authn = c["authentication"][0]
    if authn["backend"] != "built_in_database" or authn["user_id_type"] != "username":
        fail("emqx.conf: cabinets must log in by username in the built-in database")
    users_target = mount_target(doc, "emqx", "secrets/emqx_users.csv")
    if authn["bootstrap_file"] != users_target:
        fail(f"emqx.conf seeds users from {authn['bootstrap_file']}, compose mounts them at {users_target}")
    conf_target = mount_target(doc, "emqx", "deploy/emqx/emqx.conf")
    if conf_target != "/opt/emqx/etc/emqx.conf":
        fail(f"compose mounts emqx.conf at {conf_target}, EMQX reads /opt/emqx/etc/emqx.conf")
    server = c["listeners"]["tcp"]["server"]
    port = int(str(server["bind"]).rsplit(":", 1)[-1])
    if server.get("zone") != "server" or "server" not in c["zones"]:
        fail("emqx.conf: the server listener must use zone `server`")
    urls = {}
    for name in ("fleet-1", "fleet-2"):
        urls[f"compose {name}"] = doc["services"][name]["environment"]["FLEET_MQTT__URL"]
    import tomllib

    toml = tomllib.loads(load(configmap)["data"]["fleet-server.toml"])
    urls["k8s ConfigMap"] = toml["mqtt"]["url"]
    for where, url in urls.items():
        if urlparse(url).port != port:
            fail(f"{where}: mqtt.url {url} is not the EMQX server listener (port {port})")
    print(f"ok: emqx.conf parses; ACL at {acl_target} and users at {users_target} as compose mounts them; "
          f"no_match = deny; logins by username; {len(urls)} fleet-server broker URLs use the server listener :{port}")


def k8s_config(configmap, out):
    Path(out).write_text(load(configmap)["data"]["fleet-server.toml"], encoding="utf-8")


def k8s_secret(secret):
    for k, v in sorted(load(secret)["stringData"].items()):
        print(f"{k}={v}")


def kustomization(folder):
    folder = Path(folder)
    listed = set(load(folder / "kustomization.yaml")["resources"])
    present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    if listed != present:
        fail(f"kustomization.yaml lists {sorted(listed - present)} that do not exist "
             f"and misses {sorted(present - listed)}")
    print(f"ok: kustomization.yaml lists all {len(listed)} manifests")


def dashboard_promql(out):
    import json
    import re

    rules = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for panel in doc["panels"]:
            for t in panel.get("targets", []):
                expr = t["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m")
                expr = re.sub(r'"\$\{?\w+\}?"', '".*"', expr)
                if "$" in expr:
                    fail(f"{path.name} panel {panel['title']!r}: unknown variable in {t['expr']}")
                name = re.sub(r"[^a-z0-9]+", "_", f"{path.stem} {panel['id']} {t['refId']}".lower())
                rules.append({"record": f"dashboard:{name}", "expr": expr})
    Path(out).write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    print(f"{len(rules)} dashboard expressions written to {out}")


def main(argv):
    commands = {
        "compose-mounts": (compose_mounts, 2),
        "compose-env": (compose_env, 2),
        "compose-command": (compose_command, 2),
        "emqx": (emqx, 3),
        "k8s-config": (k8s_config, 2),
        "k8s-secret": (k8s_secret, 1),
        "kustomization": (kustomization, 1),
        "dashboard-promql": (dashboard_promql, 1),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    commands[argv[1]][0](*argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
