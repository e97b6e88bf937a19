"""`render k8s` never writes an etcd or NATS secret into a manifest or ConfigMap (stored in plain
text): it refuses with exit 2 and one line that names the key, not the value."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_cli_errors as cli_errors

CANARY = "canary-infra-secret-5e1"


@pytest.mark.parametrize(
    "variable",
    [
        "DYNLAUNCH_INFRA__ETCD__PASSWORD",
        "DYNLAUNCH_INFRA__NATS__PASSWORD",
        "DYNLAUNCH_INFRA__NATS__TOKEN",
    ],
)
def test_render_refuses_an_infra_secret(tmp_path: Path, variable: str) -> None:
    done = cli_errors.run_cli(["render", "k8s"], tmp_path, {variable: CANARY})
    line = cli_errors.one_error_line(done, 2)
    key = variable.removeprefix("DYNLAUNCH_").lower().replace("__", ".")
    assert line.startswith(f"dynlaunch: error: {key}: a secret is not rendered")
    assert CANARY not in done.stdout + done.stderr


def test_render_without_infra_secrets_still_renders(tmp_path: Path) -> None:
    done = cli_errors.run_cli(["render", "k8s"], tmp_path, {"DYNLAUNCH_INFRA__ETCD__USERNAME": "u"})
    assert done.returncode == 0, done.stderr
    assert "kind: DynamoGraphDeployment" in done.stdout
