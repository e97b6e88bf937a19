"""Print a wheel's requirements for this interpreter, one a line, less the names given:
`python scripts/wheel_requires.py WHEEL [NAME ...]` (scripts/setup.sh, Dynamo 1.5+ without
aisimulate). Extras are left out; markers are evaluated for the running Python."""

from __future__ import annotations

import sys
import zipfile
from email.parser import HeaderParser

try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh venv: pip's own copy
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]


def requirements(wheel: str, leave_out: set[str]) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = HeaderParser().parsestr(archive.read(name).decode("utf-8"))
    wanted: list[str] = []
    for line in metadata.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.name.lower() in leave_out:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
        wanted.append(str(req))
    return wanted


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], {n.lower() for n in sys.argv[2:]})))
