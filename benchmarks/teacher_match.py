"""How closely a student copies its teacher, on training clips and on validation clips.

    python benchmarks/teacher_match.py runs/bench/tiny-k12-s5/model.pt [--temperature 4]

Prints T²·KL(teacher ‖ student) at temperature T on clean (unaugmented) clips, keyword and other
clips apart, for the validation split and for the training split (all its keyword clips and 6,000
others drawn with a fixed seed). About equal on both splits means the student underfits the
teacher's function rather than overfitting its training clips: more regularisation cannot help.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def kl_by_class(student_path: str, split: str, temperature: float) -> tuple[float, float]:
    from kwscli.checkpoint import load_checkpoint
    from kwscli.evaluate import load_split
    from kwscli.inference import build_model, predict_logits
    from kwscli.student import load_teacher

    ckpt = load_checkpoint(student_path)
    teacher = build_model(load_teacher(ckpt.provenance.teacher.path))
    data = load_split(ckpt, None, split)
    x, y = data.features, data.labels.astype(bool)
    if split == "train":
        rng = np.random.default_rng(0)
        others = rng.choice(np.flatnonzero(~y), min(6000, int((~y).sum())), replace=False)
        keep = np.concatenate([np.flatnonzero(y), others])
        x, y = x[keep], y[keep]
    t = temperature
    z_t = predict_logits(teacher, x).float() / t
    z_s = predict_logits(build_model(ckpt), x).float() / t
    kl = (torch.softmax(z_t, -1) * (z_t.log_softmax(-1) - z_s.log_softmax(-1))).sum(-1) * t * t
    return float(kl[torch.from_numpy(y)].mean()), float(kl[torch.from_numpy(~y)].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("students", nargs="+")
    ap.add_argument("--temperature", type=float, default=4.0)
    args = ap.parse_args()
    print("| student | split | T²·KL keyword clips | T²·KL other clips |")
    print("|---|---|---|---|")
    for path in args.students:
        for split in ("train", "val"):
            pos, neg = kl_by_class(path, split, args.temperature)
            print(f"| {path} | {split} | {pos:.4f} | {neg:.4f} |")


if __name__ == "__main__":
    main()
