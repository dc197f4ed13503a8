"""Speech engines (`kws data synth --engines`): pronunciation checks, determinism, each engine
present and absent, and the acoustic variety applied to every clip."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kwscli.cli import app
from kwscli.data import acoustics
from kwscli.data.engines import (
    EXPECTED_PHONEMES,
    broad,
    check_pronunciation,
    load_engines,
    parse_engines,
    to_misaki,
)
from kwscli.data.synthetic import synthesize_dataset
from kwscli.errors import ConfigError
from tests.piper_voice import make_piper_voice

runner = CliRunner()
SR = 16_000


# ---------------------------------------------------------------- phonemes


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("ʃˈiːlə", "ʃˈilə", True),  # length and stress marks do not matter
        ("ʃˈiːlə", "ʃˈAlə", False),  # hibari's "shay-la" (misaki's A = eɪ)
        ("ʃˈAlə", "ʃˈeɪlə", True),
        ("hˈɛloʊ", "hˈɛlO", True),
        ("fˈiːlɚ", "fˈiːləɹ", True),
    ],
)
def test_broad_compares_pronunciations_across_alphabets(a, b, same):
    assert (broad(a) == broad(b)) is same


def test_to_misaki_writes_diphthongs_as_hibaris_letters():
    assert to_misaki("ʃˈiːlə") == "ʃˈilə"
    assert to_misaki("ʃˈeɪlə") == "ʃˈAlə"
    assert to_misaki("dʒˈoʊ") == "ʤˈO"


def test_espeak_says_sheila_as_expected():
    (said,) = check_pronunciation(load_engines(["espeak"]), "sheila", EXPECTED_PHONEMES["sheila"])
    assert said.phonemes == "ʃˈiːlə" and said.matches and not said.driven


@pytest.mark.slow
def test_hibari_mispronounces_sheila_and_is_driven_from_phonemes():
    pytest.importorskip("hibari")
    said = check_pronunciation(load_engines(["hibari"]), "sheila", EXPECTED_PHONEMES["sheila"])
    assert said and all(not p.matches and p.driven for p in said)
    assert broad(said[0].phonemes) == "ʃeɪlə"


def test_flite_phones_convert_to_and_from_ipa():
    from kwscli.data.engines import arpabet_to_ipa, ipa_to_arpabet

    assert arpabet_to_ipa("pau sh iy l ax pau") == "ʃilə"
    assert ipa_to_arpabet("ʃˈiːlə") == "pau sh iy l ax pau"
    assert ipa_to_arpabet("ʃˈeɪlə") == "pau sh ey l ax pau"
    assert ipa_to_arpabet("ʃˈiːlx") is None  # a sound with no CMU phone: not driven


def test_flite_says_sheila_as_expected_with_every_voice():
    import shutil

    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite)")
    said = check_pronunciation(load_engines(["flite"]), "sheila", EXPECTED_PHONEMES["sheila"])
    assert {p.voice for p in said} >= {"kal16", "slt"} and all(p.matches for p in said)


def test_parse_engines():
    assert parse_engines("espeak, Hibari,espeak") == ["espeak", "hibari"]
    for bad in ("", "festival", "espeak,,nope"):
        with pytest.raises(ConfigError):
            parse_engines(bad)


# ---------------------------------------------------------------- datasets from every engine


@pytest.mark.slow
def test_every_engine_speaks_deterministically_whatever_the_workers(tmp_path):
    pytest.importorskip("hibari")
    pytest.importorskip("piper")
    voice = make_piper_voice(tmp_path / "voice")
    kw = dict(
        num_clips=150,
        engines=["espeak", "hibari", "piper"],
        piper_voices=[voice],
        neural_share=0.3,
        keyword_fraction=0.2,
        noise_seconds=5,
    )
    one = synthesize_dataset(tmp_path / "a", workers=1, **kw)
    two = synthesize_dataset(tmp_path / "b", workers=2, **kw)
    assert one.per_engine == two.per_engine == {"espeak": 60, "hibari": 45, "piper": 45}
    wavs = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.wav"))
    assert len(wavs) == 150 + 4  # the clips and the 4 background noises
    for rel in wavs:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    info = json.loads((tmp_path / "a" / "SYNTH.json").read_text())
    assert info["engines"] == ["espeak", "hibari", "piper"]
    assert info["drive"] == {"hibari:heart": "ʃˈilə"}  # hibari's "shay-la" is overridden
    assert any("hibari (heart) says 'sheila'" in w for w in one.warnings)
    # every engine said the keyword: speaker ids name the engine's speakers
    speakers = {p.name.split("_")[0] for p in (tmp_path / "a" / "sheila").glob("*.wav")}
    assert len(speakers) >= 3
    # another seed, other audio
    other = synthesize_dataset(tmp_path / "c", seed=1, workers=1, **kw)
    assert other.per_engine == one.per_engine
    assert sorted((tmp_path / "c").rglob("sheila/*.wav")) != sorted(
        (tmp_path / "a").rglob("sheila/*.wav")
    )


@pytest.mark.slow
def test_flite_speaks_deterministically_whatever_the_workers(tmp_path):
    import shutil

    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite)")
    kw = dict(num_clips=130, engines=["espeak", "flite"], neural_share=0.5, noise_seconds=5)
    one = synthesize_dataset(tmp_path / "a", workers=1, **kw)
    synthesize_dataset(tmp_path / "b", workers=2, **kw)
    assert one.per_engine == {"espeak": 65, "flite": 65} and not one.warnings
    for p in sorted((tmp_path / "a").rglob("*.wav")):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()


@pytest.mark.slow
def test_silence_folder_holds_noise_and_near_silence_only(tmp_path):
    rep = synthesize_dataset(tmp_path / "d", num_clips=80, silence_fraction=0.25, noise_seconds=5)
    clips = sorted((tmp_path / "d" / "silence").glob("*.wav"))
    assert len(clips) == 20 == rep.per_word["silence"]
    levels = []
    for p in clips:
        audio, sr = sf.read(p, dtype="float32")
        assert sr == SR and len(audio) == SR
        levels.append(20 * np.log10(np.sqrt(np.mean(audio**2)) + 1e-12))
    assert max(levels) < -15 and min(levels) < -55  # never loud; some near-silent


@pytest.mark.parametrize(
    "args, code, says",
    [
        (["--engines", "hibari"], 1, 'pip install "kws[voices]"'),
        (["--engines", "espeak,piper", "--piper-voice", "v.onnx"], 1, 'pip install "kws[voices]"'),
        (["--engines", "festival"], 2, "expected a comma-separated list"),
        (["--engines", "espeak,flite"], 1, "apt-get install flite"),
    ],
)
def test_a_missing_engine_is_one_line_naming_the_extra(tmp_path, monkeypatch, args, code, says):
    import shutil

    monkeypatch.setitem(sys.modules, "hibari", None)  # import hibari → ImportError
    monkeypatch.setitem(sys.modules, "piper", None)
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no flite program
    out = tmp_path / "ds"
    res = runner.invoke(app, ["data", "synth", "--out", str(out), "--clips", "20", *args])
    assert res.exit_code == code, res.output
    assert says in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_piper_needs_a_readable_voice(tmp_path):
    pytest.importorskip("piper")
    out = ["data", "synth", "--out", str(tmp_path / "ds"), "--clips", "20"]
    res = runner.invoke(app, [*out, "--engines", "piper"])
    assert res.exit_code == 2 and "--piper-voice" in res.output
    res = runner.invoke(app, [*out, "--engines", "piper", "--piper-voice", str(tmp_path / "x")])
    assert res.exit_code == 1 and "Piper voice file not found" in res.output
    res = runner.invoke(app, [*out, "--piper-voice", str(tmp_path / "x")])
    assert res.exit_code == 2 and "piper is not in --engines" in res.output
    assert not (tmp_path / "ds").exists()


# ---------------------------------------------------------------- acoustic variety


def _peak_hz(audio: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / SR)[np.argmax(spec)])


@pytest.mark.parametrize("factor", [0.85, 1.0, 1.15])
def test_change_speed_scales_length_and_frequency(factor):
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 500 * t).astype(np.float32)
    out = acoustics.change_speed(tone, factor)
    assert len(out) == round(SR / factor)
    assert _peak_hz(out) == pytest.approx(500 * factor, abs=3)


def test_band_limited_eq_removes_what_is_outside_the_band(monkeypatch):
    monkeypatch.setattr(acoustics, "LOWPASS_HZ", (4000.0, 4000.0))
    monkeypatch.setattr(acoustics, "HIGHPASS_HZ", (200.0, 200.0))
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(SR).astype(np.float32)
    out = acoustics.random_eq(noise, np.random.default_rng(1), band_limit=True)
    freqs = np.fft.rfftfreq(SR, 1 / SR)
    power_in, power_out = np.abs(np.fft.rfft(noise)) ** 2, np.abs(np.fft.rfft(out)) ** 2
    outside = (freqs > 4000 * 2**0.25) | (freqs < 200 * 2**-0.25)  # past the transition bands
    mid = (freqs > 1000) & (freqs < 2000)
    assert power_out[outside].sum() < 1e-9 * power_in[outside].sum()
    ratio_db = 10 * np.log10(power_out[mid].sum() / power_in[mid].sum())
    assert abs(ratio_db) <= acoustics.EQ_DB + 0.5  # the smooth EQ stays within its range


def test_reverb_adds_a_tail_decaying_at_a_room_rate():
    impulse = np.zeros(SR, np.float32)
    impulse[100] = 1.0
    out = acoustics.reverb(impulse, np.random.default_rng(3))
    tail = out[100 + 40 :]  # after the direct sound and the 2 ms gap
    # 10 ms windows over the first 0.1 s: inside the tail of even the shortest room
    energy = np.array([np.sum(tail[i : i + 160] ** 2) for i in range(0, 1600, 160)])
    slope_db_per_s = np.polyfit(np.arange(len(energy)) * 0.01, 10 * np.log10(energy), 1)[0]
    rt60 = -60 / slope_db_per_s
    assert acoustics.RT60_S[0] * 0.6 < rt60 < acoustics.RT60_S[1] * 1.4
    assert out[100] < 1.0  # the dry part is shared with the wet one
