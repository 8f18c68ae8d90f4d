#!/usr/bin/env bash
# The face benchmark on real photos, one command:
#   scripts/bench-face.sh [out-dir]        (default target/bench-face)
# Fetches the photos (face_recognition's test images and dlib's "johns", from PyPI and
# Debian's archive), builds the release edge-agent, then on one core (taskset -c 0):
#   1. calibrate: every usable face embedded, genuine/impostor score distributions,
#      FAR/FRR with confidence intervals, thresholds for 1, 10 and 50 open templates,
#      per-stage latency p50/p99;
#   2. frame -> decision latency of the cabinet's matcher with 1 and 50 open templates;
#   3. a DET plot (PNG) with matplotlib in the assets' Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench-face}
mkdir -p "$out"

scripts/face-assets.sh --johns
eval "$(scripts/face-assets.sh --print-env 2>/dev/null)"
cargo build --release --locked -p edge-agent
bin=target/release/edge-agent
one_core=(taskset -c 0)
command -v taskset >/dev/null 2>&1 || one_core=()

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" | tee "$out/report.txt"
echo "== calibrate (one core)" | tee -a "$out/report.txt"
"${one_core[@]}" "$bin" calibrate --photos "$LOCKERFLEET_PHOTOS/johns" --photos "$LOCKERFLEET_PHOTOS/face_recognition" \
  --scores-out "$out" | tee -a "$out/report.txt"
for n in 1 50; do
  echo "== frame -> decision, $n open templates (one core)" | tee -a "$out/report.txt"
  "${one_core[@]}" "$bin" bench-decision --enrol "$LOCKERFLEET_PHOTOS/face_recognition/obama.jpg" \
    --probe "$LOCKERFLEET_PHOTOS/face_recognition/obama2.jpg" --templates "$n" --runs 200 | tee -a "$out/report.txt"
done

if ! "$LOCKERFLEET_PYTHON" -c 'import matplotlib' 2>/dev/null; then
  "$LOCKERFLEET_PYTHON" -m pip install --quiet 'matplotlib==3.10.*'
fi
"$LOCKERFLEET_PYTHON" scripts/det_plot.py "$out"
echo "== written: $out/report.txt, $out/det.png, $out/{genuine,impostor}.txt, $out/latency.csv"
