"""Where a model's au_fa_fr comes from: the non-keyword words that outscore keyword clips.

    python benchmarks/confusions.py runs/bench/teacher/model.pt runs/bench/tiny-k12-s5/model.pt

au_fa_fr (trapezoids over every threshold) equals, up to ties, #(negative, positive) pairs in
which the negative scores at least as high as the positive, divided by N². So each negative
clip's share is the number of keyword clips it outscores; summed per word folder, that says
which words the model confuses with the keyword. Split and dataset as the model was trained
(val by default).
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np


def confusions(path: str, split: str, data: str | None) -> tuple[float, int, Counter]:
    from kwscli.checkpoint import load_checkpoint
    from kwscli.data.features import load_features
    from kwscli.evaluate import training_split
    from kwscli.inference import build_model, predict
    from kwscli.metrics import au_fa_fr

    ckpt = load_checkpoint(path)
    index = training_split(ckpt, data or ckpt.data_path, every_clip=split == "all")
    fs = load_features(index, ckpt.features)
    paths = [index.paths[i] for i in index.splits[split]]
    rows = fs.subset(paths)
    probs, _ = predict(build_model(ckpt), fs.features[rows])
    labels = fs.labels[rows].numpy().astype(bool)
    words = np.array([str(p).replace("\\", "/").split("/")[-2] for p in paths])
    pos = np.sort(probs[labels])
    outscored = np.searchsorted(pos, probs[~labels], side="right")  # keyword clips ≤ each negative
    per_word: Counter = Counter()
    for word, n in zip(words[~labels], outscored, strict=True):
        per_word[word] += int(n)
    return au_fa_fr(probs, labels), int(outscored.sum()), per_word


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--split", default="val")
    ap.add_argument("--data", default=None)
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    print("| model | au_fa_fr | pairs | top confusions (pairs, share) |")
    print("|---|---|---|---|")
    for path in args.models:
        score, pairs, per_word = confusions(path, args.split, args.data)
        top = ", ".join(
            f"{w} {n} ({n / max(pairs, 1):.0%})" for w, n in per_word.most_common(args.top)
        )
        print(f"| {path} | {score:.3e} | {pairs} | {top} |")


if __name__ == "__main__":
    main()
