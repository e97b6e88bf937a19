#!/usr/bin/env python3
"""Make the tiny offline model that `dynlaunch up mocker` serves (no weights, no network).

Usage: make_tiny_model.py [DIR]   (default: ~/.cache/dynlaunch/tiny-model, where `up mocker` looks)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher import tinymodel
from launcher.config import tiny_model_dir


def main() -> int:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else tiny_model_dir(os.environ))
    tinymodel.make(target)
    print(f"tiny model written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
