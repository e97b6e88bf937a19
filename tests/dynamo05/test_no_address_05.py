"""Dynamo 0.5 on a host with no address of scope global: its frontend panics
(`LocalIpAddressNotFound`), and `up` says so at once (exit 3) instead of waiting out
startup_timeout_s for a model that never appears."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from launcher_run import Launcher

from testkit.net import free_port

pytestmark = pytest.mark.integration

# A namespace of its own inside the leg's: only `lo`, up, with 127.0.0.1 and no global address.
ONLY_LO = ("unshare", "--net", "--", "sh", "-ec", 'ip link set lo up\nexec "$@"', "only-lo")


def test_no_global_address_fails_at_once_naming_the_cause(
    tmp_path: Path, dynamo05_python: Path
) -> None:
    args = ["mocker", "--namespace", f"d05-{uuid.uuid4().hex[:8]}",
            "--http-port", str(free_port()), "--startup-timeout", "300"]  # fmt: skip
    launcher = Launcher(args, tmp_path, {"DYNLAUNCH_DYNAMO__PYTHON": str(dynamo05_python)},
                        prefix=ONLY_LO)  # fmt: skip
    began = time.monotonic()
    try:
        code = launcher.wait(200)
    finally:
        launcher.kill()
    took = time.monotonic() - began
    errors = [x for x in launcher.err if x.startswith("dynlaunch: error:")]
    assert code == 3, launcher.dump()
    assert len(errors) == 1, launcher.dump()
    assert "LocalIpAddressNotFound" in errors[0]
    assert "needs an address of scope global" in errors[0]
    assert took < 200  # not the 300 s start-up deadline
