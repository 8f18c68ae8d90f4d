#!/usr/bin/env bash
# Frame -> decision latency of the cabinet's matcher with a MobileFaceNet-sized embedding
# model (generated, random weights) in place of the reference embedding model, side by
# side with the reference models, in one run, one command:
#   scripts/bench-face-mobilefacenet.sh [out-dir]     (default target/bench-face-mobilefacenet)
# Steps: the face assets (scripts/face-assets.sh), the model (scripts/gen-mobilefacenet.sh,
# which counts its parameters and MACs; the reference embedding model is counted the same
# way), the release edge-agent, then `edge-agent bench-decision` on one core
# (taskset -c 0) with 1 and 50 open templates, reference and generated rows interleaved,
# ROUNDS times (default 3) of RUNS decisions each (default 200).
# The detector, landmarks and liveness models stay the reference ones. The generated
# model's weights are random: its match outcome is not meaningful, only its latency.
# BENCH_BUILD=0 skips the build; CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench-face-mobilefacenet}
rounds=${ROUNDS:-3}
runs=${RUNS:-200}
mkdir -p "$out"

scripts/face-assets.sh >/dev/null
eval "$(scripts/face-assets.sh --print-env 2>/dev/null)"
report=$out/report.txt
scripts/gen-mobilefacenet.sh "$out" | tee "$report"
generated=$out/mobilefacenet-sized.onnx
echo "== reference embedding model, counted the same way:" | tee -a "$report"
"$LOCKERFLEET_PYTHON" scripts/gen-mobilefacenet.py --describe "$LOCKERFLEET_MODELS/fr_feature.onnx" | tee -a "$report"

[ "${BENCH_BUILD:-1}" = 0 ] || cargo build --release --locked -p edge-agent
bin=${CARGO_TARGET_DIR:-target}/release/edge-agent
one_core=(taskset -c 0)
command -v taskset >/dev/null 2>&1 || one_core=()

{
  echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "== commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$report"
photos=$LOCKERFLEET_PHOTOS/face_recognition
for round in $(seq 1 "$rounds"); do
  for n in 1 50; do
    for model in reference mobilefacenet-sized; do
      extra=()
      [ "$model" = reference ] || extra=(--embedding "$generated")
      echo "== round $round, $model embedding, $n open templates (one core)" | tee -a "$report"
      "${one_core[@]}" "$bin" bench-decision --enrol "$photos/obama.jpg" --probe "$photos/obama2.jpg" \
        --templates "$n" --runs "$runs" "${extra[@]}" | tee -a "$report"
    done
  done
done
echo "== load average at the end $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$report"
echo "== written: $report"
