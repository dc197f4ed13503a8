"""Regenerate the example recording and its answer key (kwscli/assets/sheila_example.wav and
.json, shipped in the package for `kws detect --example`; examples/ links to them).

    python examples/make_example.py

45 s of pink noise and other synthetic speech (never the keyword), with "sheila" said clearly
(plain voices, conversational level) at the times in KEYWORD_TIMES. Deterministic: the same
bytes every time. Harder material is what `benchmarks/` measures.
"""

from __future__ import annotations

import json

from kwscli.bundled import bundled_example
from kwscli.data.recording import make_recording

KEYWORD_TIMES = (5.0, 16.5, 27.0, 38.5)

if __name__ == "__main__":
    wav = bundled_example()
    events = make_recording(
        wav, 45.0, "sheila", KEYWORD_TIMES, seed=7, snr_db=15.0, clear_keyword=True
    )
    key = {
        "audio": wav.name,
        "keyword": "sheila",
        "keyword_times": [e.to_dict() for e in events if e.keyword],
        "other_speech": [e.to_dict() for e in events if not e.keyword],
        "made_by": "python examples/make_example.py",
    }
    wav.with_suffix(".json").write_text(json.dumps(key, indent=2) + "\n")
    print(f"{wav}: {len(events)} utterances, keyword at {KEYWORD_TIMES}")
