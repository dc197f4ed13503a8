"""Make the bundled checkpoints portable: every absolute path in their provenance becomes
relative to the project (or just its name), so no file in kwscli/assets/ names this machine.

    python benchmarks/ship.py kwscli/assets/teacher.pt kwscli/assets/student.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

from kwscli.checkpoint import Provenance, load_checkpoint, save_checkpoint, without_machine_paths

ROOT = Path(__file__).resolve().parents[1]

for file in sys.argv[1:]:
    ckpt = load_checkpoint(file)
    ckpt.provenance = Provenance.model_validate(
        without_machine_paths(ckpt.provenance.to_dict(), ROOT)
    )
    save_checkpoint(ckpt, file)
    print(f"{file}: provenance paths made relative to the project")
