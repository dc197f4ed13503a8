#!/usr/bin/env bash
# Issue table for distillation: the course teacher and the SPEC's final student trained four ways
# on the Speech-Commands-size synthetic dataset, official split. Reproduce with:
#   bash benchmarks/bench_distill.sh [DATA=data/synth-full] [RUNS=runs/bench] [STUDENT_EPOCHS=40]
set -euo pipefail
DATA=${DATA:-data/synth-full}
RUNS=${RUNS:-runs/bench}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-20}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-40}
[ -d "$DATA" ] || kws data synth --out "$DATA" --clips 64727 --seed 0
T="$RUNS/teacher/model.pt"
[ -f "$T" ] || kws teacher --data "$DATA" --runs-dir "$RUNS" --name teacher --epochs "$TEACHER_EPOCHS"
common=(--teacher "$T" --runs-dir "$RUNS" --epochs "$STUDENT_EPOCHS" --lr 3e-3)
# (a) from scratch: the same student, labels only (--alpha 0 skips the teacher entirely)
[ -f "$RUNS/student-scratch/model.pt" ] || kws distill "${common[@]}" --alpha 0 --name student-scratch
[ -f "$RUNS/student-kl-T4/model.pt" ] || kws distill "${common[@]}" --loss kl --temperature 4
[ -f "$RUNS/student-mse/model.pt" ] || kws distill "${common[@]}" --loss mse
[ -f "$RUNS/student-kl-T4-att1/model.pt" ] || kws distill "${common[@]}" --loss kl --temperature 4 --attention-weight 1
kws runs "$RUNS" --sort name
kws runs "$RUNS" --json > "$RUNS/runs.json"
