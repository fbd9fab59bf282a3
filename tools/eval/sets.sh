#!/usr/bin/env bash
# Per-source PAD evaluation through the runtime pipeline (`veriframe eval --json`: BlazeFace,
# border retry for tight crops, crop, Q8_0 model), one JSON line per source, for the model given.
#   tools/eval/sets.sh [MODEL] [CONFIG]   MODEL: a PAD model path (file or directory) or "default"
# Sources: NUAA, replay-crops and the nine replay-sets sources under ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-default}
CONFIG=${2:-}
BIN=${VERIFRAME:-target/release/veriframe}
D=../shared/data
args=()
[ "$MODEL" = default ] || args+=(--model "$MODEL")
[ -z "$CONFIG" ] || args+=(--config "$CONFIG")
run() { # name real attack
  printf '{"source":"%s","model":"%s","metrics":%s}\n' "$1" "$MODEL" \
    "$("$BIN" eval --real "$2" --attack "$3" --json "${args[@]}")"
}
run nuaa "$D/nuaa/real" "$D/nuaa/attack"
run replay-crops "$D/replay-crops/real" "$D/replay-crops/attack"
for s in $(ls "$D/replay-sets" | grep -v json); do
  run "$s" "$D/replay-sets/$s/real" "$D/replay-sets/$s/attack"
done
