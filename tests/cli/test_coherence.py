"""Settings that each look fine but do not work together (launcher/coherence.py and the models:
rules of launcher/models.py), through the real CLI: `plan` and `up` refuse them with one line and
exit 2 before anything starts, or print one warning line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_errors import one_error_line, processes_mentioning, run_cli


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A local model whose config.json says 6 attention heads."""
    path = tmp_path / "m6"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"num_attention_heads": 6}))
    return path


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


CASES = [
    # (name, backend, config yaml, extra args, text the one line must hold)
    ("one-served-name", "mocker",
     "models:\n  - {name: a, served_name: x}\n  - {name: b, served_name: x}\n", [],
     "served name 'x' also used by models[0] (a)"),
    ("one-endpoint", "mocker",
     "models:\n  - {name: a, served_name: x}\n  - {name: a, served_name: y}\n", [],
     "one endpoint dyn://NS.a.generate for two models"),
    ("reserved-name", "mocker", "models:\n  - {name: frontend}\n", [], "is a process of the stack"),
    ("page-size-flag", "mocker",
     "models:\n  - {name: a, page_size: 16, extra_args: ['--block-size', '32']}\n", [],
     "extra_args has --block-size 32 but its page_size is 16"),
    ("router-modes-disagree", "mocker",
     "models:\n  - {name: a, router_mode: kv}\n  - {name: b, router_mode: round-robin}\n", [],
     "router modes disagree"),
    ("model-and-models", "mocker",
     "model: {served_name: z}\nmodels:\n  - {name: a}\n", [], "set together with models:"),
    ("structured-output", "sglang", "model: {structured_output: true}\n", ["--gpus", "0"],
     "structured_output: true with --skip-tokenizer-init"),
    ("gpu-shared-unset", "sglang",
     "models:\n  - {name: a, served_name: a, gpus: ['0']}\n"
     "  - {name: b, served_name: b, gpus: ['0'], extra_args: ['--mem-fraction-static', '0.5']}\n",
     ["--gpus", "0"], "GPU 0 is shared by a-0, b-0: give each model --mem-fraction-static"),
    ("gpu-shared-by-workers-over", "sglang",
     "models:\n  - {name: a, workers: 3, gpus: ['0'],"
     " extra_args: ['--mem-fraction-static', '0.4']}\n",
     ["--gpus", "0"], "GPU 0 is shared by a-0, a-1, a-2, whose --mem-fraction-static add up to"),
    ("gpu-pin-not-a-multiple-of-tp", "sglang",
     "models:\n  - {name: a, workers: 2, tp: 2, gpus: ['0', '1', '2']}\n",
     ["--gpus", "0,1,2"], "2 worker(s) x tp 2 needs 4 GPU(s), 3 left for it"),
    ("gpu-shared-over", "sglang",
     "models:\n  - {name: a, gpus: ['0'], extra_args: ['--mem-fraction-static', '0.6']}\n"
     "  - {name: b, gpus: ['0'], extra_args: ['--mem-fraction-static', '0.5']}\n",
     ["--gpus", "0"], "add up to 1.10 (> 1.0 of its memory)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("backend", "text", "args", "said"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("command", ["plan", "up"])
def test_incoherent_config_is_refused(
    tmp_path: Path, home: Path, command: str, backend: str, text: str, args: list[str], said: str
) -> None:
    marker = str(tmp_path / "state")
    path = config(tmp_path, text)
    result = run_cli([command, backend, "-c", path, "--state-dir", marker, *args], home)
    line = one_error_line(result, 2)
    assert said in line, line
    assert not Path(marker).exists()  # nothing created
    assert processes_mentioning(marker) == []


def test_tp_must_divide_the_attention_heads(home: Path, model_dir: Path) -> None:
    args = ["plan", "sglang", "--model-path", str(model_dir), "--gpus", "0,1,2,3"]
    line = one_error_line(run_cli([*args, "--tp", "4"], home), 2)
    assert "tp 4 does not divide the model's 6 attention heads" in line, line
    assert run_cli([*args, "--tp", "2"], home).returncode == 0


def test_shared_gpu_within_its_memory_and_odd_page_size_warn_or_pass(
    tmp_path: Path, home: Path
) -> None:
    shared = config(
        tmp_path,
        "models:\n"
        "  - {name: a, gpus: ['0'], extra_args: ['--mem-fraction-static', '0.4']}\n"
        "  - {name: b, gpus: ['0'], extra_args: ['--mem-fraction-static', '0.5']}\n",
    )
    ok = run_cli(["plan", "sglang", "-c", shared, "--gpus", "0", "--json"], home)
    assert ok.returncode == 0, ok.stderr
    plan = json.loads(ok.stdout)
    gpus = {p["name"]: p["gpus"] for p in plan["processes"] if p["role"] == "worker"}
    assert gpus == {"a-0": ["0"], "b-0": ["0"]}
    assert plan["gpu_waves"] == {"a-0": 0, "b-0": 1}  # b-0 starts once a-0 is healthy
    # The workers of one model pinned to fewer GPUs than they need share them, in turn.
    workers = config(
        tmp_path,
        "models:\n  - {name: a, workers: 3, tp: 2, gpus: ['0', '1', '2', '3'],"
        " extra_args: ['--mem-fraction-static', '0.3']}\n",
    )
    ok = run_cli(["plan", "sglang", "-c", workers, "--gpus", "0,1,2,3", "--json"], home)
    assert ok.returncode == 0, ok.stderr
    plan = json.loads(ok.stdout)
    got = {p["name"]: p["env"]["CUDA_VISIBLE_DEVICES"] for p in plan["processes"]
           if p["role"] == "worker"}  # fmt: skip
    assert got == {"a-0": "0,1", "a-1": "2,3", "a-2": "0,1"}
    assert plan["gpu_waves"] == {"a-0": 0, "a-1": 0, "a-2": 1}
    alone = run_cli(["plan", "sglang", "--gpus", "0,1", "--workers", "2", "--json"], home)
    assert "gpu_waves" not in json.loads(alone.stdout)  # nothing shared: all at once
    odd = run_cli(["plan", "mocker", "--page-size", "24"], home)
    assert odd.returncode == 0, odd.stderr
    warnings = [line for line in odd.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, odd.stderr
    assert "page_size 24 is not a power of two" in warnings[0]


def test_sglang_kv_events_bind_warning(home: Path) -> None:
    """SGLang binds its KV-event publisher only on a wildcard endpoint: kv says so, once, with
    the ports; round-robin has no KV-event port and no such line."""
    args = ["plan", "sglang", "--gpus", "0,1", "--workers", "2", "--json"]
    kv = run_cli(args, home, env={"DYNLAUNCH_FRONTEND__ROUTER_MODE": "kv"})
    assert kv.returncode == 0, kv.stderr
    ports = [str(p["ports"]["kv_events"]) for p in json.loads(kv.stdout)["processes"]
             if p["role"] == "worker"]  # fmt: skip
    said = [line for line in kv.stderr.splitlines() if "binds all interfaces" in line]
    assert len(said) == 1, kv.stderr
    assert f"(port {', '.join(ports)})" in said[0]
    rr = run_cli(args, home, env={"DYNLAUNCH_FRONTEND__ROUTER_MODE": "round-robin"})
    assert "binds all interfaces" not in rr.stderr
