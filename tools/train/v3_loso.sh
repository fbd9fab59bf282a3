#!/usr/bin/env bash
# PAD v3 leave-one-source-out protocol: for each trainable source S, train the heads on every
# other trainable source (tools/train/v3_head.py --leave-out S; the three validation sources are
# never trained on), convert to Q8_0, and score S through the runtime pipeline
# (`veriframe eval --json --scores`) at the shipped threshold THR. One JSON line per fold.
#   [HEAD_ARGS=--prior] tools/train/v3_loso.sh FEATS.npz OUTDIR THR [SOURCE...]
# v4 protocol: HOLD_NUAA="0001 0002 0003" keeps those NUAA subjects out of every fold's training
# (pass --hold-nuaa in HEAD_ARGS too) and out of the NUAA test set (a symlink tree in OUTDIR).
# TRAINER=tools/train/v5_tail.py trains the folds with v5 (HEAD_ARGS then carries its options).
# MODEL=DIR scores that fixed model set instead of training folds (the pair or v2 on the same images).
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
if [ -n "${HOLD_NUAA:-}" ]; then
  for c in real attack; do
    mkdir -p "$OUT/nuaa-test/$c"
    for g in "$(realpath "$D/nuaa/$c")"/*/; do
      g=${g%/}
      case " $HOLD_NUAA " in *" $(basename "$g") "*) continue ;; esac
      ln -sfn "$g" "$OUT/nuaa-test/$c/$(basename "$g")"
    done
  done
fi
for s in "${SRC[@]}"; do
  case $s in
    nuaa) dir=$D/nuaa; [ -z "${HOLD_NUAA:-}" ] || dir=$OUT/nuaa-test ;;
    replay-crops) dir=$D/$s ;;
    *) dir=$D/replay-sets/$s ;;
  esac
  if [ -n "${MODEL:-}" ]; then
    model=$MODEL name=fixed
    mkdir -p "$OUT/fold-$s"
  else
    python3 ${TRAINER:-tools/train/v3_head.py} ${HEAD_ARGS:-} --feats "$FEATS" --leave-out "$s" --out "$OUT/fold-$s" --veriframe "$BIN" 2>/dev/null
    mkdir -p "$OUT/fold-$s/q8" && cp "$OUT/fold-$s"/*.q8_0.gguf "$OUT/fold-$s/q8/"
    model=$OUT/fold-$s/q8 name=fold
  fi
  printf '{"left_out":"%s","model":"%s","metrics":%s}\n' "$s" "$name" \
    "$("$BIN" eval --config "$OUT/threshold.toml" --model "$model" --real "$dir/real" --attack "$dir/attack" --json --scores "$OUT/fold-$s/scores.csv")"
done
