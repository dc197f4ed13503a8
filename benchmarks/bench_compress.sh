#!/usr/bin/env bash
# Compression table: the teacher; the SPEC user's final student (KD + T, then fp16); and the
# smallest students, distilled then compressed, all judged against the teacher (evaluate
# --baseline: memory and MACs on 2 s, au_fa_fr on the synthetic val split).
#   bash benchmarks/bench_compress.sh     (after benchmarks/bench_distill.sh)
set -euo pipefail
RUNS=${RUNS:-runs/bench}
EPOCHS=${EPOCHS:-60}
T="$RUNS/teacher/model.pt"
common=(--teacher "$T" --runs-dir "$RUNS" --epochs "$EPOCHS" --lr 3e-3 --loss kl --temperature 4)
# tiny students: one GRU layer, wide conv stride (SPEC §3: "hidden 14, 1 GRU layer" reached 10x)
[ -f "$RUNS/tiny-h16/model.pt" ] || kws distill "${common[@]}" --name tiny-h16 \
  --cnn-out-channels 3 --kernel-size 7 20 --stride 7 12 --hidden-size 16 --gru-num-layers 1
[ -f "$RUNS/tiny-h12/model.pt" ] || kws distill "${common[@]}" --name tiny-h12 \
  --cnn-out-channels 2 --kernel-size 10 20 --stride 10 12 --hidden-size 12 --gru-num-layers 1
# the best tiny recipe found: attention distillation on top of KL, trained longer
[ -f "$RUNS/tiny-h16-att-long/model.pt" ] || kws distill "${common[@]}" --name tiny-h16-att-long \
  --epochs "${LONG_EPOCHS:-150}" --attention-weight 1 \
  --cnn-out-channels 3 --kernel-size 7 20 --stride 7 12 --hidden-size 16 --gru-num-layers 1
for m in "$RUNS/student-kl-T4/model.pt" "$RUNS/tiny-h16/model.pt" "$RUNS/tiny-h12/model.pt" \
         "$RUNS/tiny-h16-att-long/model.pt"; do
  for kind in fp16 quantize; do
    out="${m%.pt}.$([ $kind = quantize ] && echo int8 || echo fp16).pt"
    [ -f "$out" ] || kws "$kind" "$m"
  done
done
kws evaluate "$RUNS"/student-kl-T4/model.pt "$RUNS"/student-kl-T4/model.fp16.pt \
  "$RUNS"/student-kl-T4/model.int8.pt "$RUNS"/tiny-h16/model.pt "$RUNS"/tiny-h16/model.fp16.pt \
  "$RUNS"/tiny-h16/model.int8.pt "$RUNS"/tiny-h12/model.pt "$RUNS"/tiny-h12/model.fp16.pt \
  "$RUNS"/tiny-h12/model.int8.pt "$RUNS"/tiny-h16-att-long/model.fp16.pt \
  "$RUNS"/tiny-h16-att-long/model.int8.pt --baseline "$T" --plot "$RUNS/compress.png" --json \
  > "$RUNS/compress.json"
kws evaluate "$RUNS"/student-kl-T4/model.fp16.pt "$RUNS"/tiny-h16/model.fp16.pt \
  "$RUNS"/tiny-h12/model.fp16.pt "$RUNS"/tiny-h16-att-long/model.fp16.pt --baseline "$T" \
  --no-latency
