#!/usr/bin/env bash
# Rebuild the models shipped in kwscli/assets/ from the benchmark runs:
#   bash benchmarks/bench_distill.sh && bash benchmarks/bench_compress.sh   (the training)
#   python benchmarks/bench_detect.py make                                   (keyword-free hours)
#   bash benchmarks/make_bundled.sh
# The teacher ships as trained; the student as fp16. Each gets the threshold that holds
# FA_PER_HOUR false alarms per hour on data/negatives/calibration.wav (an hour of synthetic
# speech and noise, never the keyword); data/negatives/test.wav is kept unseen for measuring.
set -euo pipefail
RUNS=${RUNS:-runs/bench}
STUDENT=${STUDENT:-student-kl-T4-att1}
FA_PER_HOUR=${FA_PER_HOUR:-1}
NEG=data/negatives/calibration.wav
[ -f "$RUNS/$STUDENT/model.fp16.pt" ] || kws fp16 "$RUNS/$STUDENT/model.pt"
kws calibrate "$RUNS/teacher/model.pt" --negatives "$NEG" --fa-per-hour "$FA_PER_HOUR" \
  --out kwscli/assets/teacher.pt --force
kws calibrate "$RUNS/$STUDENT/model.fp16.pt" --negatives "$NEG" --fa-per-hour "$FA_PER_HOUR" \
  --out kwscli/assets/student.pt --force
