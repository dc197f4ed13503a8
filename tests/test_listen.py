"""`kws listen` (kwscli/listen.py): live detection from a block source — a wav played as the
microphone, or the microphone through sounddevice (here a fake module with its callback API) —
finds what `kws detect` finds in the same audio, each detection as soon as it is final."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kwscli.cli import app
from kwscli.detections import DetectionTracker, StreamOutput, find_detections
from tests.conftest import WITHOUT_TORCH

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "sheila_example.wav"
SAID = [k["start"] for k in json.loads((ROOT / "examples" / "sheila_example.json").read_text())[
    "keyword_times"]]  # fmt: skip
runner = CliRunner()


def kws(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def detected(*args: str) -> tuple[list[dict], float]:
    """`kws detect EXAMPLE --json ARGS`: its detections and its step (s)."""
    res = kws("detect", EXAMPLE, "--json", *args)
    assert res.exit_code == 0, res.output
    (out,) = json.loads(res.stdout)
    return out["detections"], out["settings"]["step_s"]


def assert_same(heard: list[dict], reference: list[dict], step: float, peak_tol: float = 5e-3):
    assert len(heard) == len(reference) >= 1, (heard, reference)
    for h, r in zip(heard, reference, strict=True):
        assert abs(h["time"] - r["time"]) <= step, (h, r)
        assert abs(h["peak"] - r["peak"]) <= peak_tol, (h, r)
        assert h["keyword"] == "sheila"
        assert min(abs(h["time"] - s) for s in SAID) < 1.0  # where the keyword was really said


# ---------------------------------------------------------------- a fake sounddevice


class Flags:
    """sounddevice.CallbackFlags: false unless something went wrong."""

    def __init__(self, overflow: bool = False) -> None:
        self.input_overflow = overflow

    def __bool__(self) -> bool:
        return self.input_overflow


class FakeSoundDevice(types.ModuleType):
    """What kws uses of sounddevice: an output-only device 0 and an input device 1 that records
    `audio` (16 kHz, recorded at `rate`) and then silence, `pace` s per block, from a thread
    through the InputStream callback; `interrupt_after` s into it, Ctrl-C."""

    def __init__(self, audio: np.ndarray, rate: int = 16_000, pace: float = 0.001) -> None:
        super().__init__("sounddevice")
        if rate != 16_000:
            from kwscli.audio import resample

            audio = resample(audio, 16_000, rate)
        self.audio, self.rate, self.pace = audio, rate, pace
        self.interrupt_after: float | None = None
        self.overflow_blocks: set[int] = set()
        self.devices = [
            {"name": "Speakers", "index": 0, "hostapi": 0, "max_input_channels": 0,
             "default_samplerate": 48_000.0},
            {"name": "Fake USB Mic", "index": 1, "hostapi": 0, "max_input_channels": 1,
             "default_samplerate": float(rate)},
        ]  # fmt: skip

    def query_hostapis(self, index=None):
        return ({"name": "ALSA"},)

    def query_devices(self, device=None, kind=None):
        if device is None and kind is None:
            return [dict(d) for d in self.devices]
        device = 1 if device is None else device
        found = [d for d in self.devices
                 if d["index"] == device or str(device).lower() in d["name"].lower()]  # fmt: skip
        if not found:
            raise ValueError(f"No input device matching {device!r}")
        if kind == "input" and not found[0]["max_input_channels"]:
            raise ValueError(f"Not an input device: {found[0]['name']!r}")
        return dict(found[0])

    def check_input_settings(self, device=None, channels=None, dtype=None, samplerate=None):
        if samplerate != self.rate:
            raise Exception("Error opening InputStream: Invalid sample rate [PaErrorCode -9997]")

    def InputStream(self, **kw):  # noqa: N802 (sounddevice's name)
        return FakeStream(self, **kw)


class FakeStream:
    def __init__(self, sd, samplerate, blocksize, device, channels, dtype, callback):
        assert (samplerate, device, channels, dtype) == (sd.rate, 1, 1, "float32")
        self.sd, self.n, self.callback, self.active = sd, blocksize, callback, False

    def __enter__(self):
        self.active = True
        self.thread = threading.Thread(target=self._record, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.active = False
        self.thread.join()

    def _record(self) -> None:
        sd, start, i = self.sd, 0, 0
        while self.active:
            block = np.zeros((self.n, 1), np.float32)
            part = sd.audio[start : start + self.n]
            block[: len(part), 0] = part
            self.callback(block, self.n, None, Flags(i in sd.overflow_blocks))
            start, i = start + self.n, i + 1
            time.sleep(sd.pace)
            if sd.interrupt_after is not None and start >= sd.interrupt_after * sd.rate:
                self._caught_up()
                os.kill(os.getpid(), signal.SIGINT)
                return

    def _caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the listener has taken every block (its queue is empty), however busy the
        machine."""
        pending = self.callback.__self__.queue  # the Microphone's
        deadline = time.monotonic() + timeout
        while not pending.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the last block through the detector


@pytest.fixture
def example_audio() -> np.ndarray:
    import soundfile as sf

    audio, _ = sf.read(EXAMPLE, dtype="float32")
    return audio


@pytest.fixture
def fake_sd(monkeypatch, example_audio):
    sd = FakeSoundDevice(example_audio)
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    return sd


# ---------------------------------------------------------------- quick


def test_expire_reports_each_detection_as_the_whole_stream_would():
    """A trace fed in uneven blocks, each detection taken as soon as `expire` says it is final:
    the same detections as the whole trace at once, each at most a refractory period + a step
    after its last firing window."""
    rng = np.random.default_rng(0)
    times = np.arange(1, 2001) * 0.08
    probs = np.convolve(rng.random(2000) ** 8, np.ones(5) / 5, mode="same")
    focus = times - 0.4
    whole = find_detections(times, probs, focus, 0.25, 1.0, 1.0)
    assert len(whole) == 37  # of 194 steps above the threshold: runs that merge
    tracker, live = DetectionTracker(0.25, 1.0, 1.0), []
    for idx in np.array_split(np.arange(2000), 137):
        out = StreamOutput(times[idx], probs[idx], focus[idx])
        for d in tracker.feed(out) + tracker.expire(float(out.times[-1])):
            assert out.times[-1] - d.end <= 1.0 + 0.08 * len(idx)
            live.append(d)
    live += tracker.close()[len(live) :]
    assert live == whole


def test_a_wav_plays_at_real_time_pace(tmp_path, monkeypatch):
    """--simulate hands each 0.1 s block over when a microphone would have recorded it, `speed`
    times faster; speed 0 does not wait."""
    import soundfile as sf

    from kwscli import listen

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16_000, np.float32), 16_000)
    clock = {"now": 100.0, "slept": 0.0}

    def sleep(s):
        clock["now"] += s
        clock["slept"] += s

    monkeypatch.setattr(listen.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(listen.time, "sleep", sleep)
    for speed, expected in ((1.0, 1.0), (4.0, 0.25), (0.0, 0.0)):
        clock["slept"] = 0.0
        blocks = list(listen.WavPlayback(wav, 16_000, speed).blocks())
        assert [len(b) for b in blocks] == [1600] * 10
        assert clock["slept"] == pytest.approx(expected)


def test_a_missing_sounddevice_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import raises ImportError
    for args in ([], ["--list-devices"]):
        res = kws("listen", *args)
        assert res.exit_code == 1, res.output
        assert "error: listening to a microphone needs sounddevice" in res.output
        assert 'pip install "kws[listen]"' in res.output
        assert "--simulate" in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1


def test_a_missing_portaudio_library_is_one_line(monkeypatch):
    class NoPortAudio:
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    res = kws("listen")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "cannot load the PortAudio library (PortAudio library not found)" in res.output
    assert "apt-get install libportaudio2" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_list_devices_shows_the_input_devices(fake_sd):
    res = kws("listen", "--list-devices")
    assert res.exit_code == 0, res.output
    assert "Fake USB Mic" in res.output and "Speakers" not in res.output
    row = next(line for line in res.output.splitlines() if "Fake USB Mic" in line)
    assert row.split()[:2] == ["*", "1"] and "16000" in row


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--device", "0"], 1, "--device 0: Not an input device: 'Speakers' (kws listen --list"),
        (["--device", "nothing"], 1, "--device nothing: No input device matching 'nothing'"),
        (["--simulate", EXAMPLE, "--device", "1"], 2, "--device 1 and --simulate: give one"),
        (["--speed", "2"], 2, "--speed 2: a microphone runs in real time"),
        (["--duration", "0"], 2, "--duration 0: must be a number of seconds > 0"),
        (["--duration", "nan"], 2, "--duration nan: must be a number of seconds > 0"),
        (["--duration", "inf"], 2, "--duration inf: must be a number of seconds > 0"),
        (["--simulate", EXAMPLE, "--speed", "-1"], 2, "--speed -1: must be ≥ 0"),
        (["--simulate", "nope.wav"], 1, "nope.wav: no such file"),
        (["--simulate", ROOT / "README.md"], 1, "README.md: not a readable audio file"),
    ],
)
def test_bad_inputs_are_one_line(fake_sd, args, code, needle):
    """Each fails before a model is loaded."""
    res = kws("listen", *args)
    assert res.exit_code == code, res.output
    assert res.output.startswith("error: ") and needle in res.output, res.output
    assert "Traceback" not in res.output


# ---------------------------------------------------------------- whole streams


@pytest.mark.slow
@pytest.mark.parametrize("state", ["window", "carry"])
def test_simulate_finds_what_detect_finds(state):
    """`kws listen --simulate` (JSON lines on stdout, the header and summary on stderr) gives
    `kws detect`'s detections: times within one step."""
    reference, step = detected("--state", state)
    res = kws("listen", "--simulate", EXAMPLE, "--speed", "0", "--json", "--state", state)
    assert res.exit_code == 0, res.output
    assert_same(json_lines(res.stdout), reference, step)
    assert f"state {state}" in res.stderr and "listening to" in res.stderr
    assert f"done: {len(reference)} detections of 'sheila' in 45.0 s listened" in res.stderr


@pytest.mark.slow
def test_the_table_names_the_model_and_prints_each_detection():
    reference, _ = detected()
    res = kws("listen", "--simulate", EXAMPLE, "--speed", "0", "--model", "teacher")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("model ") and "teacher.pt" in lines[0] and "threshold" in lines[0]
    assert lines[1] == f"listening to {EXAMPLE} as the microphone (no waiting); Ctrl-C stops"
    heard = [line.split() for line in lines[2:-1]]
    assert [h[0] for h in heard] == [str(i) for i in range(1, len(heard) + 1)]
    assert all(h[2].startswith("P(sheila)") for h in heard) and len(heard) == 4
    assert lines[-1].startswith("done: 4 detections of 'sheila' in 45.0 s")


@pytest.mark.slow
def test_duration_stops_early():
    reference, step = detected()
    res = kws("listen", "--simulate", EXAMPLE, "--speed", "0", "--json", "--duration", "20")
    assert res.exit_code == 0, res.output
    heard = json_lines(res.stdout)
    assert_same(heard, [d for d in reference if d["end"] < 20], step)
    assert "in 20.0 s listened" in res.stderr and "for 20 s" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_the_microphone_source_through_a_fake_sounddevice(fake_sd, example_audio, rate):
    """The real microphone code (InputStream callback → queue → detector); a device that cannot
    record at 16 kHz is recorded at its own rate and resampled."""
    fake_sd.__init__(example_audio, rate)
    fake_sd.overflow_blocks = {3}
    reference, step = detected()
    res = kws("listen", "--json", "--duration", "45", "--device", "usb")
    assert res.exit_code == 0, res.output
    assert_same(json_lines(res.stdout), reference, step, peak_tol=5e-3 if rate == 16_000 else 2e-2)
    assert f"microphone 1 (Fake USB Mic) at {rate} Hz" in res.stderr
    assert "1 block came with an overflow" in res.stderr
    assert ("resampled" in res.stderr) == (rate != 16_000)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_a_summary(fake_sd, python_sigint):
    fake_sd.interrupt_after = 20.0
    reference, step = detected()
    res = kws("listen")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[-1].startswith("stopped (Ctrl-C): 1 detection of 'sheila' in ")
    seconds = float(lines[-1].split(" in ")[1].split()[0])
    assert 20.0 <= seconds <= 20.5 and "Traceback" not in res.output
    first = lines[-2].split()
    assert first[0] == "1" and first[1] == f"0:{reference[0]['time']:05.2f}"


@pytest.mark.slow
def test_listen_runs_with_torch_absent():
    """torch made unimportable: `kws listen --model student.onnx --simulate` runs on onnxruntime
    and gives `kws detect`'s detections with the same model."""
    code = (
        WITHOUT_TORCH
        + """
import sys, json
from kwscli.cli import app
from typer.testing import CliRunner
model = ["--model", "kwscli/assets/student.onnx"]
det = CliRunner().invoke(app, ["detect", sys.argv[1], "--json", *model])
res = CliRunner().invoke(
    app, ["listen", "--simulate", sys.argv[1], "--speed", "0", "--json", *model]
)
assert det.exit_code == res.exit_code == 0, (det.output, res.output)
assert "torch" not in sys.modules and "onnx" in res.stderr
print(json.dumps([json.loads(det.stdout)[0], res.stdout]))
"""
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    det, heard = json.loads(res.stdout)
    assert_same(json_lines(heard), det["detections"], det["settings"]["step_s"], peak_tol=1e-6)
