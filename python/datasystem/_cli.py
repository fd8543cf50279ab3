"""Console scripts for a pip install: exec the programs bundled in _bin/."""

import os
import sys
from pathlib import Path

BIN = Path(__file__).resolve().parent / "_bin"


def _exec(name: str) -> None:
    path = BIN / name
    if not path.exists():
        sys.exit(f"{name}: not bundled with this install ({path} is missing)")
    os.execv(str(path), [name] + sys.argv[1:])


def tq() -> None:
    _exec("tq")


def dscli() -> None:
    _exec("dscli")
