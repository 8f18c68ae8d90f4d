#!/usr/bin/env bash
# Writes the MobileFaceNet-sized embedding model with random weights (fixed seed) that the
# face benchmark swaps in for the reference embedding model, and that a test loads:
#   scripts/gen-mobilefacenet.sh [out-dir]     (default target/generated)
# gives out-dir/mobilefacenet-sized.onnx and out-dir/mobilefacenet-sized.json (parameters,
# bytes, MACs, FLOPs, sha256), by scripts/gen-mobilefacenet.py in the Python venv of
# scripts/face-assets.sh, with the pinned `onnx` package from PyPI added to it. The model is
# regenerated every time (under a second; the same seed gives the same bytes) and never
# committed. Its scores mean nothing: it is for latency only.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly ONNX_VERSION=1.23.2
out=${1:-target/generated}

eval "$(scripts/face-assets.sh --print-env 2>/dev/null)" ||
  { echo "scripts/gen-mobilefacenet.sh: scripts/face-assets.sh failed; run it alone to see why" >&2; exit 1; }
if ! "$LOCKERFLEET_PYTHON" -c "import onnx, sys; sys.exit(onnx.__version__ != '$ONNX_VERSION')" 2>/dev/null; then
  echo "== installing onnx==$ONNX_VERSION into $LOCKERFLEET_PYTHON's venv (PyPI)" >&2
  "$LOCKERFLEET_PYTHON" -m pip install --quiet --disable-pip-version-check "onnx==$ONNX_VERSION" ||
    { echo "scripts/gen-mobilefacenet.sh: pip install onnx==$ONNX_VERSION failed; check that PyPI is reachable (pip config list)" >&2; exit 1; }
fi
mkdir -p "$out"
"$LOCKERFLEET_PYTHON" scripts/gen-mobilefacenet.py "$out/mobilefacenet-sized.onnx" --stats "$out/mobilefacenet-sized.json"
