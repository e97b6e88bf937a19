"""`dynlaunch clear-namespace` imports what it uses and nothing of the other commands: the config's
pydantic models, httpx, the planner and the supervisor took ~0.3 s before any command ran."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "httpx",
    "launcher.config",
    "launcher.k8s",
    "launcher.plan",
    "launcher.ports",
    "launcher.probes",
    "launcher.resolve",
    "launcher.stack",
    "launcher.supervision.supervisor",
    "asyncio",  # natsjs: only with a NATS to ask
)


def loaded_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout))


def test_clear_namespace_loads_none_of_the_other_commands_modules() -> None:
    loaded = loaded_after(
        "from launcher import cli\n"
        "from launcher.cli import clear as cli_clear\n"
        "from launcher.registrations import runner\n"
        "cli_clear.endpoints('ns', {}, etcd='http://127.0.0.1:1', nats=None, discovery=None,\n"
        "                    file_kv=None, state_dir=None)"
    )
    assert {
        "launcher.cli",
        "launcher.registrations.runner",
        "launcher.registrations.etcd",
    } <= loaded
    assert sorted(loaded & set(HEAVY)) == []
