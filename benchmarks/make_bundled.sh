#!/usr/bin/env bash
# Rebuild the models shipped in kwscli/assets/ from nothing (2 CPU cores: about 25 minutes):
#   pip install -e ".[voices]"   # hibari-tts; and flite, a system program: apt-get install flite
#   bash benchmarks/make_bundled.sh
# 1. a synthetic dataset spoken by espeak-ng and hibari-tts, with acoustic variety
# 2. two keyword-free synthetic hours (calibration, test) for false alarms per hour
# 3. the teacher (course CRNN), the epoch chosen on a small real set (--select-on REAL)
# 4. the student (examples/student.yaml's shape and loss), distilled on the same data, chosen
#    on REAL too, then int8
# 5. each calibrated for FA_PER_HOUR false alarms per hour on the calibration hour, in both
#    state modes, with the false rejects on REAL's keyword clips stored beside the threshold
# REAL is a small set of real recordings in the Speech Commands layout (default: the mini
# sample beside the project); it only picks epochs and measures, it is never trained on.
set -euo pipefail
REAL=${REAL:-../shared/data/speech_commands_mini}
DATA=${DATA:-data/synth-3}
RUNS=${RUNS:-runs/voices}
FA_PER_HOUR=${FA_PER_HOUR:-1}
SELECT=(--select-on "$REAL")
[ -d "$REAL" ] || { echo "no real set at $REAL: set REAL=DIR (or SELECT= to skip)"; exit 1; }

kws data synth --out "$DATA" --clips 48000 --engines espeak,hibari,flite --neural-share 0.3 \
  --keyword-fraction 0.08
[ -f data/negatives/calibration.wav ] || python benchmarks/bench_detect.py make
kws teacher --config examples/teacher-voices.yaml --data "$DATA" --runs-dir "$RUNS" \
  --name teacher "${SELECT[@]}" --force
kws distill --config examples/student-voices.yaml --teacher "$RUNS/teacher/model.pt" \
  --data "$DATA" --runs-dir "$RUNS" --name student "${SELECT[@]}" --force
kws fp16 "$RUNS/student/model.pt" --force
NEG=data/negatives/calibration.wav
kws calibrate "$RUNS/teacher/model.pt" --negatives "$NEG" --fa-per-hour "$FA_PER_HOUR" \
  --positives "$REAL" --out kwscli/assets/teacher.pt --force
kws calibrate "$RUNS/student/model.fp16.pt" --negatives "$NEG" --fa-per-hour "$FA_PER_HOUR" \
  --positives "$REAL" --out kwscli/assets/student.pt --force
python benchmarks/ship.py kwscli/assets/teacher.pt kwscli/assets/student.pt
# the default detector where torch is not installed (kwscli/runtime.py): the student, exported
kws export kwscli/assets/student.pt --format onnx --out kwscli/assets/student.onnx --force
kws export kwscli/assets/student.pt --format onnx --state carry \
  --out kwscli/assets/student.carry.onnx --force
