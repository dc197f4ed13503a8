"""`kws sweep SWEEP.yaml`: teacher, distillation and compression runs from one file, each named
from its settings, all validated before any work, and picked up where they stopped.

A sweep file is YAML with a `base:` mapping (settings under every run, with the keys of a
`--config` file; its `distill:` section only reaches students) and a `runs:` list:

    base:
      data: {path: data/synth}
    runs:
      - stage: teacher                   # as `kws teacher`
        train: {num_epochs: 20}
      - stage: distill                   # as `kws distill`, from the sweep's teacher
        distill: {loss: kl, temperature: 4}
        compress: [fp16, int8]           # then `kws fp16`, `kws quantize`: RUN/model.fp16.pt, ...
      - stage: distill
        config: ../examples/student.yaml # a --config file under the entry (path from this file)
        grid:                            # one run per combination of these values
          distill.loss: [mse, kl]
          train.seed: [0, 1]

An entry's keys: `stage` (teacher or distill, required); the settings of a `--config` file (`name`,
`data`, `features`, `model`, `train`, `distill`); `config: FILE`; `teacher: NAME`, the run of this
sweep a student learns from (default: the file's first teacher) — or `distill.teacher: FILE.pt`, a
checkpoint, as in a `--config` file; `compress:` steps fp16, int8, int8-fp16conv, int8-int8conv
(`kws quantize --conv`); `grid:` dotted keys (any of the above) with lists of values. Settings
layer as for the commands: defaults (a student's: its teacher's features and data, the final
student shape) ← base ← config ← entry ← grid point. Paths in settings are relative to where `kws`
runs, as on the command line.

A run is named from its settings as `kws teacher` and `kws distill` name it (`teacher`,
`student-kl-T4`, `student-mse-amp`); a later run whose name is taken gets the settings that tell
it apart (`student-kl-T4-seed1`); entries with the same settings are one run, their compress steps
joined (KD+MSE and KD+MSE-then-fp16 train once). `name:` pins a folder: OUT/NAME/.

A run whose folder already holds it, finished, is skipped; one with saved epochs resumes as with
`--resume`; a folder holding a run with other settings is an error before any work. So a sweep
that stopped (Ctrl-C, a failed run, a lost machine) continues where it stopped when run again.
This module reads and validates (nothing is written); kwscli/sweep_run.py runs the runs, `--workers`
at once.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwscli.config import RunConfig, build_config, deep_merge, read_config_file
from kwscli.errors import ConfigError, KwsError

STAGES = ("teacher", "distill")
# a compress step → the kind and the conv precision of `kws fp16` / `kws quantize --conv`
COMPRESSIONS = {
    "fp16": ("fp16", "float"),
    "int8": ("int8", "float"),
    "int8-fp16conv": ("int8", "fp16"),
    "int8-int8conv": ("int8", "int8"),
}
ENTRY_KEYS = ("stage", "teacher", "config", "compress")
SETTINGS = tuple(k for k in RunConfig.model_fields if k != "runs_dir")  # name, data, ...


@dataclass
class SweepRun:
    """One run of a sweep: its resolved settings, where it comes from in the file, its state."""

    label: str  # runs[3] (distill.loss=kl)
    stage: str
    cfg: RunConfig
    compress: list[str]
    teacher: str | None = None  # the run of this sweep it distils from
    status: str = "new"  # new, resume or finished
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def folder(self) -> Path:
        return Path(self.cfg.runs_dir) / self.cfg.name

    def model(self, step: str | None = None) -> Path:
        """RUN/model.pt, or the file of a compress step: RUN/model.fp16.pt."""
        return self.folder / ("model.pt" if step is None else f"model.{step}.pt")

    def stale_steps(self) -> list[str]:
        """The compress steps with no output yet, or one older than the model."""
        model = self.model()
        if not model.is_file():
            return list(self.compress)
        made = model.stat().st_mtime
        return [s for s in self.compress if not _newer(self.model(s), made)]


@dataclass
class Sweep:
    file: Path
    out: Path
    runs: list[SweepRun]  # a teacher before the students it teaches
    # (teacher checkpoint, dataset) → the FA/FR and trade-off plots of its students
    plots: dict[tuple[str, str], tuple[Path, Path]] = field(default_factory=dict)

    @property
    def command(self) -> str:
        return f"kws sweep {self.file}" + ("" if self.out == Path("runs") else f" --out {self.out}")


# ---------------------------------------------------------------- the file → runs


@dataclass
class _Draft:
    label: str
    stage: str
    settings: dict
    compress: list[str]
    teacher: str | None


def load_sweep(file: str | Path, out: str | Path = "runs") -> Sweep:
    """Read and validate every run of a sweep file; nothing is written. Errors name the entry
    and the key: `sweep.yaml: runs[2]: train.learning_rate: ...` (ConfigError)."""
    file, out = Path(file), Path(out)
    raw = read_config_file(file)
    for key in raw:
        if key not in ("base", "runs"):
            raise ConfigError(f"{file}: {key}: unknown key (a sweep file has base: and runs:)")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{file}: base: expected a mapping of settings, as in a --config file")
    entries = raw.get("runs")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"{file}: runs: expected a list of runs, each with stage: teacher/distill"
        )
    drafts = [d for i, e in enumerate(entries) for d in _expand(file, f"runs[{i}]", e, base)]
    sweep = Sweep(file, out, _resolve(file, drafts, out))
    for run in sweep.runs:
        _check_folder(file, run)
    groups = {(r.cfg.distill.teacher, r.cfg.data.path) for r in sweep.runs if r.cfg.distill}
    for key in sorted(groups):
        stem = file.name.split(".")[0] if len(groups) == 1 else _group_stem(file, key[0])
        sweep.plots[key] = (out / f"{stem}.png", out / f"{stem}.tradeoff.png")
    return sweep


def _group_stem(file: Path, teacher: str) -> str:
    t = Path(teacher)
    return f"{file.name.split('.')[0]}-{t.parent.name if t.name == 'model.pt' else t.stem}"


def _expand(file: Path, label: str, entry: Any, base: dict):
    """An entry, or one entry per point of its grid."""
    where = f"{file}: {label}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with stage: teacher or distill")
    entry = dict(entry)
    grid = entry.pop("grid", None) or {}
    if not isinstance(grid, dict):
        raise ConfigError(
            f"{where}: grid: expected dotted keys (distill.loss) with lists of values"
        )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{key}: expected a non-empty list of values")
    for values in itertools.product(*grid.values()):
        point, e = dict(zip(grid, values, strict=True)), entry
        for key, value in point.items():
            for part in reversed(str(key).split(".")):
                value = {part: value}
            e = deep_merge(e, value)
        shown = ", ".join(f"{k}={_shown(v)}" for k, v in point.items())
        yield _draft(file, f"{label} ({shown})" if point else label, e, base)


def _draft(file: Path, label: str, entry: dict, base: dict) -> _Draft:
    where = f"{file}: {label}"
    for key in entry:
        if key not in ENTRY_KEYS + SETTINGS:
            raise ConfigError(
                f"{where}: {key}: unknown key (an entry takes {', '.join(ENTRY_KEYS)}, grid and "
                f"the settings of a --config file: {', '.join(SETTINGS)})"
            )
    stage = entry.get("stage")
    if stage not in STAGES:
        got = "missing" if stage is None else f"{stage!r}"
        raise ConfigError(f"{where}: stage: {got}: expected teacher or distill")
    compress = entry.get("compress") or []
    compress = [compress] if isinstance(compress, str) else compress
    for step in compress if isinstance(compress, list) else [compress]:
        if not isinstance(step, str) or step not in COMPRESSIONS:
            raise ConfigError(
                f"{where}: compress: {step!r}: expected a list of {', '.join(COMPRESSIONS)}"
            )
    settings = {k: v for k, v in base.items() if stage == "distill" or k != "distill"}
    if "config" in entry:
        try:
            settings = deep_merge(settings, read_config_file(file.parent / str(entry["config"])))
        except ConfigError as exc:
            raise ConfigError(f"{where}: config: {exc}") from None
    settings = deep_merge(settings, {k: v for k, v in entry.items() if k in SETTINGS})
    if "runs_dir" in settings:
        raise ConfigError(f"{where}: runs_dir: set for every run by kws sweep --out")
    teacher = entry.get("teacher")
    if stage == "teacher" and (teacher is not None or settings.get("distill") is not None):
        key = "teacher" if teacher is not None else "distill"
        raise ConfigError(f"{where}: {key}: a teacher learns from labels (stage: distill for one)")
    if teacher is not None and (settings.get("distill") or {}).get("teacher") is not None:
        raise ConfigError(
            f"{where}: teacher: give a run of this sweep (teacher: NAME) or a checkpoint "
            "(distill.teacher: FILE.pt), not both"
        )
    return _Draft(label, stage, settings, list(dict.fromkeys(compress)), teacher)


def _resolve(file: Path, drafts: list[_Draft], out: Path) -> list[SweepRun]:
    """Settings and names of every run, in rounds: a student once the run it learns from is
    resolved, so the list comes out in dependency order."""
    runs: list[SweepRun] = []
    became: dict[int, SweepRun] = {}  # draft → its run (several drafts may be one run)
    teachers = [d for d in drafts if d.stage == "teacher"]
    pending = list(drafts)
    while pending:
        progressed = False
        for d in list(pending):
            source = _source(file, d, teachers, became, runs)
            if source == "wait":
                continue
            pending.remove(d)
            progressed = True
            became[id(d)] = _add(file, runs, _resolve_one(file, d, source, out), d)
        if not progressed:
            d = pending[0]
            names = ", ".join(r.name for r in runs) or "none"
            raise ConfigError(f"{file}: {d.label}: teacher: {d.teacher!r} is no run of this "
                              f"sweep (its runs: {names})")  # fmt: skip
    return runs


def _source(file, d: _Draft, teachers, became, runs):
    """The sweep run `d` learns from (by default the file's first teacher); None for a
    checkpoint (or a teacher); "wait" while that run is not resolved yet."""
    if d.stage == "teacher" or (d.settings.get("distill") or {}).get("teacher") is not None:
        return None
    if d.teacher is not None:
        return next((r for r in runs if r.name == d.teacher), "wait")
    if not teachers:
        raise ConfigError(
            f"{file}: {d.label}: teacher: missing: add a run with stage: teacher, or give a "
            "checkpoint (distill.teacher: FILE.pt)"
        )
    return became.get(id(teachers[0]), "wait")


def _resolve_one(file: Path, d: _Draft, source: SweepRun | None, out: Path) -> SweepRun:
    from kwscli.student import TeacherFacts, student_config

    settings = deep_merge(d.settings, {"runs_dir": str(out)})
    try:
        if d.stage == "teacher":
            cfg, warnings = build_config(RunConfig, overrides=settings), []
        else:
            facts = None
            if source is not None:
                settings = deep_merge(settings, {"distill": {"teacher": str(source.model())}})
                facts = TeacherFacts.of_config(source.cfg, source.model())
            cfg, warnings = student_config(None, settings, facts)
        for key, path in (("data.path", cfg.data.path), ("data.select_on", cfg.data.select_on)):
            if path is not None and not Path(path).is_dir():
                raise ConfigError(f"{key}={path}: no such folder (a dataset: <word>/*.wav)")
    except KwsError as exc:
        raise type(exc)(f"{file}: {d.label}: " + "; ".join(str(exc).splitlines())) from None
    teacher = source.name if source is not None else None
    return SweepRun(d.label, d.stage, cfg, d.compress, teacher, warnings=warnings)


def _add(file: Path, runs: list[SweepRun], run: SweepRun, d: _Draft) -> SweepRun:
    """Add `run` under a name of its own; the same settings as a run already there are that run."""
    from kwscli.run_folder import differences

    pinned = "name" in d.settings
    settings = run.cfg.model_dump(mode="json", exclude={"name"})
    for other in runs:
        if other.cfg.model_dump(mode="json", exclude={"name"}) == settings and (
            not pinned or other.name == run.name
        ):
            other.compress += [s for s in run.compress if s not in other.compress]
            return other
    taken = {r.name: r for r in runs}
    if run.name in taken:
        first = taken[run.name]
        diff = [k for k in differences(first.cfg.model_dump(mode="json"), settings) if k != "name"]
        if pinned:
            raise ConfigError(
                f"{file}: {run.label}: name: {run.name!r} is already the run of {first.label}, "
                f"with other settings ({', '.join(diff)})"
            )
        stem = "-".join([run.name, *(_token(k, _get(settings, k)) for k in diff[:3])])
        name, n = stem, 2
        while name in taken:
            name, n = f"{stem}-{n}", n + 1
        run.cfg.name = name
    runs.append(run)
    return run


def _token(key: str, value: Any) -> str:
    """A setting in a run name: seed1, hidden_size24, noaugment, kernel_size7x12, from-t2."""
    leaf = key.rsplit(".", 1)[-1]
    if key == "distill.teacher":
        path = Path(str(value))
        return "from-" + (path.parent.name if path.name == "model.pt" else path.stem)
    if isinstance(value, bool):
        return leaf if value else f"no{leaf}"
    if key.endswith(("path", "select_on")) and value:
        value = Path(str(value)).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{leaf}{_show(value)}")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "x".join(map(_show, value))
    return str(value)


def _shown(value: Any) -> str:
    """A grid value in an entry's label: 4, 0.5, [fp16, int8]."""
    if isinstance(value, list):
        return "[" + ", ".join(map(_shown, value)) + "]"
    return _show(value)


def _get(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _check_folder(file: Path, run: SweepRun) -> None:
    """new, resume or finished, from what OUT/NAME holds; a run with other settings there is an
    error (its files are never replaced by a sweep)."""
    from kwscli.run_folder import RESUMABLE_CHANGES, changed_settings, saved_a_checkpoint

    folder = run.folder
    if not saved_a_checkpoint(folder):
        return
    changed = [k for k in changed_settings(run.cfg, folder) or [] if k not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(
            f"{file}: {run.label}: {folder} holds a run with other settings "
            f"({', '.join(changed)}): give this entry a name: of its own, or move that folder"
        )
    if _epochs_done(folder) >= run.cfg.train.num_epochs:
        run.status = "finished"
    elif (folder / "last.pt").is_file():
        run.status = "resume"
    else:
        raise ConfigError(
            f"{file}: {run.label}: {folder} holds a model but no last.pt to resume it from: "
            "move that folder to train the run again"
        )


def _epochs_done(folder: Path) -> int:
    """Epochs of a run that reached its end (metrics.json, written last); 0 otherwise."""
    try:
        return int(json.loads((folder / "metrics.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _newer(path: Path, than: float) -> bool:
    try:
        return path.stat().st_mtime >= than
    except OSError:
        return False
