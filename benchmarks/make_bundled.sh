#!/usr/bin/env bash
# Rebuild the models shipped in kwscli/assets/ from the benchmark runs:
#   bash benchmarks/bench_distill.sh && bash benchmarks/bench_compress.sh   (the training)
#   python benchmarks/bench_detect.py make                                   (keyword-free hours)
#   bash benchmarks/make_bundled.sh
# The teacher ships as trained; the student as int8 (KIND=fp16 for half precision). Each gets the threshold that holds
# FA_PER_HOUR false alarms per hour on data/negatives/calibration.wav (an hour of synthetic
# speech and noise, never the keyword); data/negatives/test.wav is kept unseen for measuring.
set -euo pipefail
RUNS=${RUNS:-runs/bench}
STUDENT=${STUDENT:-tiny-k12-s5-noaug}
KIND=${KIND:-int8}   # int8: the smallest file and, on CPUs, faster than fp16 arithmetic
FA_PER_HOUR=${FA_PER_HOUR:-1}
NEG=data/negatives/calibration.wav
cmd=$([ "$KIND" = int8 ] && echo quantize || echo fp16)
[ -f "$RUNS/$STUDENT/model.$KIND.pt" ] || kws "$cmd" "$RUNS/$STUDENT/model.pt"
kws calibrate "$RUNS/teacher/model.pt" --negatives "$NEG" --fa-per-hour "$FA_PER_HOUR" \
  --out kwscli/assets/teacher.pt --force
kws calibrate "$RUNS/$STUDENT/model.$KIND.pt" --negatives "$NEG" --fa-per-hour "$FA_PER_HOUR" \
  --out kwscli/assets/student.pt --force
