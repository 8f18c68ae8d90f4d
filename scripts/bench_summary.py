#!/usr/bin/env python3
"""The budgets table of BENCHMARKS.md from the reports scripts/bench-all.sh wrote.

    python3 scripts/bench_summary.py target/bench-all

Every figure is read from a report of the run; a part that was not run shows as "not run".
"""
import json
import os
import re
import statistics
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "target/bench-all"
BROKERS = [("embedded", "rumqttd 0.20, embedded"), ("mosquitto", "Mosquitto 2, private")]


def load(path):
    try:
        with open(os.path.join(out, path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def met(ok):
    return "**yes**" if ok else "no"


rows = []  # (budget, per-broker cells or one cell, met)


def row(what, budget, cells, verdict):
    rows.append((what, budget, cells, verdict))


# 10,000 online within 60 s, memory per cabinet, nothing lost, /healthz.
fleet = {b: load(f"fleet/{b}.json") for b, _ in BROKERS}
if any(fleet.values()):
    cells, ok = [], []
    for b, _ in BROKERS:
        r = fleet[b]
        if not r:
            cells.append("not run")
            continue
        cells.append(f"{r['connected']:,} of {r['cabinets']:,} in {r['seconds_to_all_connected']:.1f} s")
        ok.append(r["connected"] == r["cabinets"] and r["seconds_to_all_connected"] <= 60)
    n = max((r["cabinets"] for r in fleet.values() if r), default=0)
    row(f"{n:,} cabinets online (default scenario)", "all within 60 s", cells, " / ".join(met(o) for o in ok))
    # Growth of the server's RSS from before the first cabinet to all connected, in every
    # 10,000-cabinet run that has it (the default scenario's and the templates').
    cells, mosquitto_kib = [], []
    for b, _ in BROKERS:
        got = []
        # memory/: the default scenario again, when a run repeats it for this reading alone.
        for part, label in [("fleet", "default run"), ("templates", "templates run"), ("memory", "default run again")]:
            r = load(f"{part}/{b}.json")
            kib = r and r.get("server_kib_per_cabinet")
            if kib is not None:
                got.append(f"{kib:.1f} KiB, RSS {r['server_rss_mib_connected']:.0f} MiB ({label})")
                if b == "mosquitto":
                    mosquitto_kib.append(kib)
        inside = " (rumqttd's connections included)" if b == "embedded" and got else ""
        cells.append("; ".join(got) + inside if got else "-")
    again = load("memory/mosquitto.json")
    if again and again.get("server_kib_per_cabinet") is not None:
        verdict = met(again["server_kib_per_cabinet"] < 5) + " in the repeated run (Mosquitto: the server alone)"
    else:
        verdict = (met(max(mosquitto_kib) < 5) if mosquitto_kib else "-") + " (Mosquitto: the server alone)"
    row("fleet-server's own memory per connected cabinet", "< 5 KiB (broker apart)", cells, verdict)
    cells = []
    for b, _ in BROKERS:
        r = fleet[b]
        cells.append("-" if not r else
                     f"{r['events_made']:,} made / {r['events_acked']:,} acked / {r['events_lost']} lost / "
                     f"{r['events_duplicated']} dup; /healthz {r['healthz_failures']} failed, slowest {r['healthz_max_ms']:.0f} ms; "
                     f"wall {r['seconds']:.0f} s")
    clean = all(r and r["events_lost"] == 0 and r["events_duplicated"] == 0 for r in fleet.values() if r)
    row("default scenario: events, responsiveness", "0 lost, 0 duplicated; /healthz answers", cells, met(clean))

# Durable ingest.
try:
    with open(os.path.join(out, "ingest.jsonl")) as f:
        ingest = [json.loads(line) for line in f if line.strip().startswith("{")]
except OSError:
    ingest = []
for db, budget in [("postgresql", 20000), ("sqlite", None)]:
    runs = [r for r in ingest if r["database"] == db]
    if not runs:
        continue
    cells, ok = [], []
    for b, _ in BROKERS:
        xs = [r["events_per_second"] for r in runs if r["broker"].startswith("rumqttd") == (b == "embedded")]
        cells.append(" · ".join(f"{x:,.0f}" for x in xs) + " events/s" if xs else "not run")
        if xs and budget:
            ok.append(statistics.median(xs) >= budget)
    what = f"durable ingest on {'PostgreSQL' if db == 'postgresql' else 'SQLite'} (3 runs, 200,000 events, 50 per message)"
    row(what, "≥ 20,000 events/s" if budget else "(no budget)", cells, " / ".join(met(o) for o in ok) if budget else "")

# Sealed templates under steady traffic.
tpl = {b: load(f"templates/{b}.json") for b, _ in BROKERS}
if any(tpl.values()):
    cells, ok = [], []
    for b, _ in BROKERS:
        r = tpl[b]
        t = r and r["template_to_cabinet"]
        if not t or not t["count"]:
            cells.append("not run")
            continue
        cells.append(f"p50 {t['p50_ms']:.0f} / p99 {t['p99_ms']:.0f} / max {t['max_ms']:.0f} ms ({t['count']:,} templates); "
                     f"{r['events_lost']} lost / {r['events_duplicated']} dup")
        ok.append(t["p99_ms"] < 100)
    n = max((r["cabinets"] for r in tpl.values() if r), default=0)
    row(f"sealed template at its cabinet after the deposit, {n:,} cabinets, 25 parcels/s (worst shard)",
        "p99 < 100 ms", cells, " / ".join(met(o) for o in ok))

# The rollout.
roll = {}
for b, _ in BROKERS:
    parts = []
    k = 0
    while (p := load(f"rollout/{b}-{k}.json")) is not None:
        parts.append(p)
        k += 1
    roll[b] = parts
if any(roll.values()):
    cells, ok = [], []
    for b, _ in BROKERS:
        parts = roll[b]
        if not parts:
            try:
                with open(os.path.join(out, "rollout.md")) as f:
                    unfinished = f"| {b} | did not finish" in f.read()
            except OSError:
                unfinished = False
            cells.append("**did not finish** (no report; see the run's logs)" if unfinished else "not run")
            if unfinished:
                ok.append(False)
            continue
        rs = [p["rollout"] for p in parts]
        lead = rs[0]
        one = len({r["rollout"] for r in rs}) == 1
        s = {k: sum(r[k] for r in rs) for k in ["updated", "failed", "stuck", "lost"]}
        waves = ", ".join(f"{w['cabinets']:,} by {w['ended_s']:.0f} s" if w["ended_s"] is not None else f"{w['cabinets']:,} unfinished"
                          for w in lead["waves"])
        cpu = lead.get("server_cpu_cores")
        done = lead["seconds_to_all_updated"]
        cells.append(f"{'one rollout' if one else f'{len(rs)} rollouts'} to {lead['cabinets']:,}: waves {waves}; "
                     f"all updated {'-' if done is None else f'{done:.0f} s'}; {s['updated']:,} updated / {s['failed']} failed / "
                     f"{s['stuck']} stuck / {s['lost']} lost; server {'-' if cpu is None else f'{cpu:.2f}'} cores")
        # Every shard's cabinets accounted for: a shard without a report is a run that did
        # not finish, whatever the others say.
        whole = sum(r.get("cabinets_here", r["cabinets"]) for r in rs) == lead["cabinets"]
        if not whole:
            cells[-1] = "**did not finish**: a simulator process wrote no report; " + cells[-1]
        ok.append(one and whole and s["stuck"] == 0 and s["lost"] == 0 and lead["phase"] == "completed")
    row("rollout, three waves (1 %, 10 %, 100 %), 100 offers/s", "none stuck or lost; orchestration never the bottleneck",
        cells, " / ".join(met(o) for o in ok))

# Face decision, one core.
try:
    with open(os.path.join(out, "face", "report.txt")) as f:
        face = f.read()
except OSError:
    face = ""
if face:
    got = {}
    for m in re.finditer(r"== round \d+, (\S+) embedding, (\d+) open templates.*\n.*?p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms", face):
        got.setdefault((m.group(1), int(m.group(2))), []).append(float(m.group(4)))
    cells, ok = [], []
    for model in ["reference", "mobilefacenet-sized"]:
        parts = []
        for n in (1, 50):
            xs = got.get((model, n))
            if xs:
                parts.append(f"{n} template{'s' if n > 1 else ''}: p99 {' · '.join(f'{x:.1f}' for x in xs)} ms")
                ok.append(max(xs) < 50)
        cells.append(f"{model}: " + "; ".join(parts))
    row("face decision, frame in → decision, one core (3 rounds of 200)", "p99 < 50 ms", ["; ".join(cells)],
        met(all(ok) and ok != []))

# The partition.
part = {b: load(f"partition/{b}-0.json") for b, _ in BROKERS}
if any(part.values()):
    cells = []
    for b, _ in BROKERS:
        r = part[b]
        p = r and r.get("partition")
        cells.append("not run" if not p else
                     f"{p['cabinets']} cut for {p['seconds_cut']:.0f} s, {p['journal_depth_at_heal']:,} events queued, "
                     f"drained {p['seconds_to_drain']:.1f} s after the heal; {r['events_lost']} lost / {r['events_duplicated']} dup")
    ok = all(r and r["events_lost"] == 0 and r["events_duplicated"] == 0 for r in part.values() if r)
    row("partition of 2,000 cabinets: a quarter cut off, then healed", "queued events drain; 0 lost, 0 duplicated",
        cells, met(ok))

try:
    with open(os.path.join(out, "machine.txt")) as f:
        machine = [line.strip() for line in f if line.strip()]
except OSError:
    machine = []
for line in machine:
    print(f"- {line}")
print()
print("| what | budget | rumqttd 0.20, embedded | Mosquitto 2 | met (rumqttd / Mosquitto) |")
print("|---|---|---|---|---|")
for what, budget, cells, verdict in rows:
    if len(cells) == 1:
        print(f"| {what} | {budget} | {cells[0]} (no broker) | | {verdict} |")
    else:
        print(f"| {what} | {budget} | {cells[0]} | {cells[1]} | {verdict} |")
