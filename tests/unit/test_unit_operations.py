"""The pure planning of operations on a running stack (launcher/operations.py): where an SGLang
worker's replacement runs during `restart` and `reload` (free GPUs: start first, on them; too few:
stop first, on its own), `restart --no-rolling`'s steps, and what a role pod refuses. No GPU is
used: the plans are built from an explicit host (tests/unit/test_unit_plan.py's helpers) and the
replacement's spec is made by the same `respec` the operation's thread uses."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from test_unit_plan import make_host, sglang_cfg

from launcher import operations
from launcher.errors import ConfigError
from launcher.operations import Running, Step
from launcher.plan import Plan, build_plan


def sglang_plan(workers: int, tp: int, gpus: Sequence[str]) -> Plan:
    cfg = sglang_cfg({"workers": {"count": workers, "tp": tp}})
    return build_plan(cfg, "sglang", make_host(cfg, gpu_ids=gpus))


def running(plan: Plan) -> list[Running]:
    return [Running(p.name, p.role, p.gpus, p.model, p) for p in plan.processes]


def replacement_env(plan: Plan, step: Step) -> str:
    """CUDA_VISIBLE_DEVICES of the replacement the operation's thread would start for ``step``
    (rolling.Runner._step: respec of the old spec with the step's GPUs)."""
    old = next(p for p in plan.processes if p.name == step.name)
    spec = operations.respec(old, operations.next_name(step.name), {}, gpus=step.gpus)
    assert spec.gpus == step.gpus
    return spec.env["CUDA_VISIBLE_DEVICES"]


def test_enough_free_gpus_start_each_replacement_first_on_free_ones() -> None:
    plan = sglang_plan(workers=2, tp=1, gpus=("0", "1", "2", "3"))
    assert [p.gpus for p in plan.by_role("worker")] == [("0",), ("1",)]
    steps = operations.restart_steps("worker", running(plan), "sglang", free_gpus=("2", "3"))
    assert [(s.name, s.start_first, s.gpus) for s in steps] == [
        ("worker-0", True, ("2",)),
        ("worker-1", True, ("3",)),
    ]
    assert [replacement_env(plan, s) for s in steps] == ["2", "3"]  # never the same free GPU
    assert steps[0].words() == "replace worker-0 (new one first, GPUs 2)"


def test_one_free_gpu_is_reused_step_after_step_as_old_workers_free_theirs() -> None:
    plan = sglang_plan(workers=3, tp=1, gpus=("0", "1", "2", "3"))
    steps = operations.restart_steps("worker", running(plan), "sglang", free_gpus=("3",))
    # step 1 takes GPU 3 and frees 0 (worker-0's) for step 2, which frees 1 for step 3
    assert [(s.start_first, s.gpus) for s in steps] == [(True, ("3",)), (True, ("0",)),
                                                        (True, ("1",))]  # fmt: skip
    used = [g for s in steps for g in s.gpus or ()]
    assert len(used) == len(set(used))


def test_no_free_gpu_stops_first_and_the_replacement_takes_the_old_gpus() -> None:
    plan = sglang_plan(workers=2, tp=1, gpus=("0", "1"))
    steps = operations.restart_steps("worker", running(plan), "sglang", free_gpus=())
    assert [(s.name, s.start_first, s.gpus) for s in steps] == [
        ("worker-0", False, ("0",)),
        ("worker-1", False, ("1",)),
    ]
    assert [replacement_env(plan, s) for s in steps] == ["0", "1"]
    assert steps[1].words() == "replace worker-1 (stopped first, GPUs 1)"


def test_tp2_needs_two_free_gpus_to_start_first() -> None:
    plan = sglang_plan(workers=2, tp=2, gpus=("0", "1", "2", "3", "4"))
    assert [p.gpus for p in plan.by_role("worker")] == [("0", "1"), ("2", "3")]
    one = operations.restart_steps("worker", running(plan), "sglang", free_gpus=("4",))
    assert [(s.start_first, s.gpus) for s in one] == [(False, ("0", "1")), (False, ("2", "3"))]
    assert replacement_env(plan, one[0]) == "0,1"
    two = operations.restart_steps("worker", running(plan), "sglang", free_gpus=("4", "5"))
    assert [(s.start_first, s.gpus) for s in two] == [(True, ("4", "5")), (True, ("0", "1"))]
    assert replacement_env(plan, two[0]) == "4,5"


def test_a_mocker_replacement_always_starts_first_and_keeps_no_gpus() -> None:
    plan = sglang_plan(workers=2, tp=1, gpus=("0", "1"))
    mock = [Running(r.name, r.role, (), r.model, r.spec) for r in running(plan)]
    steps = operations.restart_steps("all", mock, "mocker")
    assert [(s.name, s.start_first, s.gpus) for s in steps] == [
        ("worker-0", True, None), ("worker-1", True, None), ("frontend", False, None)]  # fmt: skip


def test_reload_places_the_replacement_on_its_configured_gpus_when_free() -> None:
    now = sglang_plan(workers=2, tp=1, gpus=("0", "1", "2", "3"))
    new = sglang_plan(workers=2, tp=1, gpus=("2", "3"))  # the config moves the workers
    changes = operations.diff(list(now.by_role("worker")), list(new.by_role("worker")))
    assert [c.what.split("; ")[-1] for c in changes] == ["gpus: 0 -> 2", "gpus: 1 -> 3"]
    steps = operations.reload_steps(changes, running(now), new.processes, "sglang", ("2", "3"))
    assert [(s.start_first, s.gpus) for s in steps] == [(True, ("2",)), (True, ("3",))]


def test_reload_without_free_gpus_stops_first_on_the_old_gpus() -> None:
    now = sglang_plan(workers=2, tp=1, gpus=("0", "1"))
    cfg = sglang_cfg({"workers": {"count": 2, "tp": 1, "extra_args": ["--mem-fraction-static",
                                                                      "0.7"]}})  # fmt: skip
    new = build_plan(cfg, "sglang", make_host(cfg, gpu_ids=("0", "1")))
    changes = operations.diff(list(now.by_role("worker")), list(new.by_role("worker")))
    assert len(changes) == 2
    steps = operations.reload_steps(changes, running(now), new.processes, "sglang", ())
    assert [(s.start_first, s.gpus) for s in steps] == [(False, ("0",)), (False, ("1",))]
    with_free = operations.reload_steps(changes, running(now), new.processes, "sglang", ("7",))
    assert [(s.start_first, s.gpus) for s in with_free] == [(True, ("7",)), (True, ("0",))]


def test_place_refuses_a_replacement_that_needs_more_gpus_than_can_be_had() -> None:
    with pytest.raises(ConfigError, match="needs 2 GPU"):
        operations.place(("0",), ("5",), want=("0", "1"))


def test_no_rolling_stops_all_workers_then_starts_all_then_waits() -> None:
    plan = sglang_plan(workers=2, tp=1, gpus=("0", "1"))
    steps = operations.restart_together_steps("all", running(plan))
    assert [s.action for s in steps] == ["stop-all", "start-all", "ready-all", "replace"]
    assert steps[0].names == ("worker-0", "worker-1")
    assert steps[3].name == "frontend"
    assert "worker-0.g2, worker-1.g2" in steps[1].words()
    assert "no worker serves" in steps[0].words()
    with pytest.raises(ConfigError, match="no such process"):
        operations.restart_together_steps("worker", [r for r in running(plan)
                                                     if r.role != "worker"])  # fmt: skip


@pytest.mark.parametrize(
    ("pod", "op", "role", "refused"),
    [
        ("worker", "restart", "frontend", True),
        ("worker", "restart", "worker", False),
        ("worker", "restart", "all", False),
        ("worker", "scale", "worker", False),
        ("worker", "reload", "worker", False),
        ("frontend", "scale", "worker", True),
        ("frontend", "restart", "worker", True),
        ("frontend", "restart", "frontend", False),
        ("frontend", "reload", "worker", False),
        ("all", "scale", "worker", False),
        ("all", "restart", "frontend", False),
    ],
)
def test_a_role_pod_refuses_what_it_cannot_do(pod: str, op: str, role: str, refused: bool) -> None:
    why = operations.refusal(pod, op, role)
    assert (why is not None) == refused, why
    if why is not None:
        assert "\n" not in why
        assert f"{pod} pod" in why


def test_reload_compares_gpus_as_configured_not_where_a_restart_moved_them() -> None:
    plan = sglang_plan(workers=2, tp=1, gpus=("0", "1", "2", "3"))
    steps = operations.restart_steps("worker", running(plan), "sglang", free_gpus=("3",))
    moved = [operations.respec(p, operations.next_name(p.name), {}, gpus=s.gpus)
             for p, s in zip(plan.by_role("worker"), steps, strict=True)]  # fmt: skip
    assert [p.gpus for p in moved] == [("3",), ("0",)]
    same = list(plan.by_role("worker"))  # reload of the same config
    assert operations.diff(operations.as_planned(moved, plan.processes), same) == []
    assert len(operations.diff(moved, same)) == 2  # compared as they run, both would "change"
    other = sglang_plan(workers=2, tp=1, gpus=("2", "3"))  # the config does move them
    changes = operations.diff(operations.as_planned(moved, plan.processes),
                              list(other.by_role("worker")))  # fmt: skip
    assert [c.what.split("; ")[-1] for c in changes] == ["gpus: 0 -> 2", "gpus: 1 -> 3"]


@pytest.mark.parametrize("ports", [{}, {"worker-0.g2.kv_events": 25999}])
def test_a_replacement_keeps_the_plans_kv_event_endpoint_with_its_own_port(
    ports: dict[str, int],
) -> None:
    """Measured on an H200 (benchmarks/gpu/RESULTS.md, run 6): replacements made by `reload` to kv
    got tcp://127.0.0.1:PORT, on which SGLang connects instead of binding, and the router applied
    0 KV events. A replacement's endpoint is the plan's (tcp://*), with the new port if any."""
    cfg = sglang_cfg({"workers": {"count": 2}, "frontend": {"router_mode": "kv"}})
    old = build_plan(cfg, "sglang", make_host(cfg, gpu_ids=("0", "1"))).by_role("worker")[0]
    spec = operations.respec(old, "worker-0.g2", ports)

    def endpoint(argv: Sequence[str]) -> str:
        return str(json.loads(argv[list(argv).index("--kv-events-config") + 1])["endpoint"])

    port = ports.get("worker-0.g2.kv_events", old.ports["kv_events"])
    assert endpoint(spec.argv) == f"tcp://*:{port}"
    assert endpoint(old.argv) == f"tcp://*:{old.ports['kv_events']}"
