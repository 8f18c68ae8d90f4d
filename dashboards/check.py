#!/usr/bin/env python3
"""Check the dashboards and alert rules against the metrics a fleet-server really exports.

Usage:
    curl -s http://127.0.0.1:8080/metrics > metrics.txt
    python3 dashboards/check.py metrics.txt [more-files...]

Every metric name referenced in the dashboards (every *.json here; any string: PromQL
expressions, variable queries, descriptions), alerts.yml and its tests alerts.test.yml
must appear in one of the given files. The files are read as plain text and every `lockerfleet_*` / `process_*`
token in them counts as exported, so a Prometheus text-exposition dump works, and so
does `fleet-server/src/metrics.rs`.

Note: the prometheus crate leaves a labelled counter out of /metrics until it has been
incremented once, so a dump from a freshly started server lacks e.g.
`lockerfleet_ingest_refused_transitions_total`. Pass `fleet-server/src/metrics.rs` as a
second file to count those too (process_* names only ever come from a dump).

Also checks that every JSON file parses and that alerts.yml has the expected shape
(`groups:` first, every `- alert:` with an `expr:`), without PyYAML.

Exit status: 0 all good, 1 unknown names or a broken file, 2 usage error.
"""

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DASHBOARDS = tuple(sorted(p.name for p in HERE.glob("*.json")))
RULES = "alerts.yml"
RULE_TESTS = "alerts.test.yml"

NAME = re.compile(r"(?<![A-Za-z0-9_])(lockerfleet_[a-z0-9_]+|process_[a-z0-9_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def names_in(text):
    # A trailing underscore is a prefix in prose ("every name starts with lockerfleet_").
    return {m for m in NAME.findall(text) if not m.endswith("_")}


def walk_strings(node, path="$"):
    """Yields (json path, string) for every string value in a parsed JSON document."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from walk_strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_strings(v, f"{path}[{i}]")


def panel_title(doc, path):
    m = re.match(r"\$\.panels\[(\d+)\]", path)
    if m:
        panels = doc.get("panels", [])
        i = int(m.group(1))
        if i < len(panels):
            return f'panel "{panels[i].get("title", "?")}"'
    return path


def check_dashboard(path, refs, errors):
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        errors.append(f"{path.name}: does not parse: {e}")
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("panels"), list) or not doc["panels"]:
        errors.append(f"{path.name}: no panels")
        return
    if not any(i.get("name") == "DS_PROMETHEUS" for i in doc.get("__inputs", [])):
        errors.append(f"{path.name}: __inputs has no DS_PROMETHEUS")
    for panel in doc["panels"]:
        for t in panel.get("targets", []):
            if not str(t.get("expr", "")).strip():
                errors.append(f'{path.name}: panel "{panel.get("title")}" has a target without expr')
    for where, s in walk_strings(doc):
        for name in names_in(s):
            refs.setdefault(name, set()).add(f"{path.name} {panel_title(doc, where)}")


def check_rules(path, refs, errors):
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        errors.append(f"{path.name}: cannot read: {e}")
        return
    lines = text.splitlines()
    if "\t" in text:
        errors.append(f"{path.name}: contains tabs (YAML indents with spaces)")
    meaningful = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not meaningful or meaningful[0].rstrip() != "groups:":
        errors.append(f"{path.name}: the first line must be `groups:`")
    if not any(re.match(r"^\s*- name:\s*\S", ln) for ln in lines):
        errors.append(f"{path.name}: no group (`- name:`)")

    # Split into rules: each starts at a `- alert:` line and ends before the next
    # line at the same or a lower indentation that starts a new list item or key.
    alerts = []
    current = None
    for no, ln in enumerate(lines, 1):
        m = re.match(r"^(\s*)- alert:\s*(.*?)\s*$", ln)
        if m:
            current = {"name": m.group(2), "line": no, "indent": len(m.group(1)), "expr": False}
            alerts.append(current)
            continue
        if current is None or not ln.strip():
            continue
        indent = len(ln) - len(ln.lstrip())
        if indent <= current["indent"]:
            current = None
            continue
        if re.match(r"^\s*expr:\s*", ln) and indent == current["indent"] + 2:
            current["expr"] = True
    if not alerts:
        errors.append(f"{path.name}: no `- alert:` rules")
    seen = set()
    for a in alerts:
        if not a["name"]:
            errors.append(f"{path.name}:{a['line']}: alert without a name")
        if not a["expr"]:
            errors.append(f"{path.name}:{a['line']}: alert {a['name']} has no expr:")
        if a["name"] in seen:
            errors.append(f"{path.name}:{a['line']}: alert {a['name']} defined twice")
        seen.add(a["name"])

    for no, ln in enumerate(lines, 1):
        for name in names_in(ln):
            refs.setdefault(name, set()).add(f"{path.name}:{no}")


def is_known(name, exported):
    if name in exported:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in exported:
            return True
    return False


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    exported = set()
    for f in argv[1:]:
        try:
            exported |= names_in(Path(f).read_text(encoding="utf-8", errors="replace"))
        except OSError as e:
            print(f"cannot read {f}: {e}", file=sys.stderr)
            return 2
    if not exported:
        print(f"no lockerfleet_* or process_* names in {', '.join(argv[1:])}: is that a /metrics dump?", file=sys.stderr)
        return 2

    refs = {}
    errors = []
    for d in DASHBOARDS:
        check_dashboard(HERE / d, refs, errors)
    check_rules(HERE / RULES, refs, errors)
    for no, ln in enumerate((HERE / RULE_TESTS).read_text(encoding="utf-8").splitlines(), 1):
        for name in names_in(ln):
            refs.setdefault(name, set()).add(f"{RULE_TESTS}:{no}")

    unknown = sorted(n for n in refs if not is_known(n, exported))
    for e in errors:
        print(f"ERROR {e}")
    for n in unknown:
        print(f"UNKNOWN {n}  (used in: {'; '.join(sorted(refs[n]))})")
    if unknown and not any(n.startswith("process_") for n in unknown):
        print("hint: a labelled counter that was never incremented is absent from /metrics; "
              "add fleet-server/src/metrics.rs as another argument to count it")
    if errors or unknown:
        print(f"FAILED: {len(errors)} structural error(s), {len(unknown)} unknown metric name(s)")
        return 1
    print(f"ok: {len(refs)} metric names referenced, all exported; "
          f"{', '.join(DASHBOARDS)} parse; {RULES} well formed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
