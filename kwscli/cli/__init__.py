"""`kws` command line: options → validated config → one core call → render.

No tensor code here, and no torch import at module level, so `kws --help` stays fast. `app.py`
holds the app and what the commands share; each other module holds a family of commands, and
importing it registers them: this order is the order of `kws --help`.
"""

# isort: off
from kwscli.cli import train, models, detect, data  # noqa: F401  (registers the commands)

# isort: on
from kwscli.cli.app import app, main

__all__ = ["app", "main"]
