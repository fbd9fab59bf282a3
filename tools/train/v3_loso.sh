#!/usr/bin/env bash
# PAD v3 leave-one-source-out protocol: for each trainable source S, train the heads on every
# other trainable source (tools/train/v3_head.py --leave-out S; the three validation sources are
# never trained on), convert to Q8_0, and score S through the runtime pipeline
# (`veriframe eval --json --scores`) at the shipped threshold THR. One JSON line per fold.
#   [HEAD_ARGS=--prior] tools/train/v3_loso.sh FEATS.npz OUTDIR THR [SOURCE...]
set -euo pipefail
cd "$(dirname "$0")/../.."
FEATS=$1 OUT=$2 THR=$3
shift 3
SRC=("$@")
[ ${#SRC[@]} -gt 0 ] || SRC=(nuaa replay-crops aksultan jtboing krzysiek354 neonipun shivamyadav shubhamlala)
BIN=${VERIFRAME:-target/release/veriframe}
D=../shared/data
mkdir -p "$OUT"
printf '[detect]\nlive_threshold = %s\n' "$THR" > "$OUT/threshold.toml"
for s in "${SRC[@]}"; do
  case $s in
    nuaa|replay-crops) dir=$D/$s ;;
    *) dir=$D/replay-sets/$s ;;
  esac
  python3 tools/train/v3_head.py ${HEAD_ARGS:-} --feats "$FEATS" --leave-out "$s" --out "$OUT/fold-$s" --veriframe "$BIN" 2>/dev/null
  mkdir -p "$OUT/fold-$s/q8" && cp "$OUT/fold-$s"/*.q8_0.gguf "$OUT/fold-$s/q8/"
  printf '{"left_out":"%s","model":"v3-fold","metrics":%s}\n' "$s" \
    "$("$BIN" eval --config "$OUT/threshold.toml" --model "$OUT/fold-$s/q8" --real "$dir/real" --attack "$dir/attack" --json --scores "$OUT/fold-$s/scores.csv")"
done
