"""`kws detect` on a stream of real voices: every clip of a real Speech-Commands-layout sample
(by default ../shared/data/speech_commands_mini: 10 real "sheila" among other words) played one
after another with faint noise between them; the keyword's times are known.

    python benchmarks/real_stream.py                        # the bundled teacher and student
    python benchmarks/real_stream.py --model runs/x/model.pt --state carry

Prints found / missed / false alarms (and per hour) at each model's stored threshold, for the
window and carry state modes. The stream is written to data/real_stream/<sample>.wav with its
events beside it as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech_commands_mini"


def main() -> None:
    from kwscli.bundled import bundled_model
    from kwscli.data.recording import score_stream, stream_from_clips
    from kwscli.detect import detect_files

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=MINI)
    ap.add_argument("--model", action="append", help="checkpoint (repeat); default: bundled")
    ap.add_argument("--state", action="append", choices=("window", "carry"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = Path("data/real_stream") / f"{args.data.name}-{args.seed}.wav"
    out.parent.mkdir(parents=True, exist_ok=True)
    events = stream_from_clips(args.data, "sheila", out, seed=args.seed)
    out.with_suffix(".json").write_text(json.dumps([e.to_dict() for e in events], indent=1))
    models = args.model or [str(bundled_model("teacher")), str(bundled_model("student"))]
    rows = []
    for model in models:
        for state in args.state or ("window", "carry"):
            run = detect_files([out], Path(model), state=state)
            r = run.results[0]
            score = score_stream([d.time for d in r.detections], events, r.duration)
            rows.append({"model": model, "state": state, "threshold": run.settings["threshold"],
                         **score.to_dict()})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    n_kw = sum(e.keyword for e in events)
    print(f"{out}: {events[-1].end / 60:.1f} min, {len(events)} real clips, {n_kw} keywords")
    print(f"{'model':<40} {'state':<7} {'threshold':>9} {'found':>6} {'missed':>6} "
          f"{'FA':>4} {'FA/h':>6}")  # fmt: skip
    for r in rows:
        print(
            f"{r['model']:<40} {r['state']:<7} {r['threshold']:>9.4f} {r['found']:>6} "
            f"{r['missed']:>6} {r['false_alarms']:>4} {r['false_alarms_per_hour']:>6.1f}"
        )


if __name__ == "__main__":
    main()
