"""The curated mutant suite: small deliberate bugs in dynlaunch's core rules, each of which some
test must catch.

For every mutant: copy the repository's files (tracked and untracked-but-not-ignored, as they are
in the working tree) once to a scratch directory, apply the one edit there (the snippet must occur
exactly once), run the mutant's test selection in the copy with the copy first on PYTHONPATH, and
put the file back. A mutant whose tests fail is caught; one whose tests pass survived. Before the
mutants, the union of every selection runs once unmutated (it must pass: a failure then would make
every "caught" meaningless), and the copy is checked to be what `import launcher` finds.

    .venv/bin/python scripts/mutants.py            # all; exit 1 if any survives
    .venv/bin/python scripts/mutants.py --list     # what is listed, and the tests of each
    .venv/bin/python scripts/mutants.py probe-timeout-is-refusal gpu-slices-overlap
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PER_MUTANT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    why: str  # the bug, in one line
    tests: tuple[str, ...]  # pytest node ids or files that must catch it


PURE = "tests/clear/test_clear_pure.py"
PROBE = "tests/clear/test_probe.py"
SECRETS = "tests/cli/test_secret_outputs.py"
LIFECYCLE = "tests/unit/test_unit_lifecycle.py"
LIVENESS = "tests/unit/test_unit_liveness.py"
RULES = "tests/unit/test_unit_rules.py"
IDENTITY = "tests/unit/test_identity.py"

MUTANTS: tuple[Mutant, ...] = (
    # -- clear-namespace: the stale-only decision and its probe --------------------------------
    Mutant(
        "unknown-probe-is-dead",
        "launcher/registrations/decide.py",
        'if state not in DEAD:\n            return True, f"{addr}',
        'if state is Probe.ANSWERS:\n            return True, f"{addr}',
        "an owner whose address could not be probed (busy, timeout) is judged dead",
        (PURE, f"{PROBE}::test_clear_keeps_a_live_lease_whose_worker_never_accepts"),
    ),
    Mutant(
        "nothing-to-probe-is-dead",
        "launcher/registrations/decide.py",
        "            alive = by_addr is not False",
        "            alive = by_addr is True",
        "a live lease whose keys advertise no address is revoked",
        (PURE,),
    ),
    Mutant(
        "probe-timeout-is-refusal",
        "launcher/registrations/runner.py",
        "return Probe.REFUSED if err.errno == errno.ECONNREFUSED else Probe.UNKNOWN",
        "return Probe.REFUSED",
        "every connect error (timeouts, unreachable) counts as a refusal: a busy worker is dead",
        (PROBE,),
    ),
    Mutant(
        "namespace-prefix-without-slash",
        "launcher/registrations/layouts.py",
        '"instances": f"v1/instances/{ns}/",',
        '"instances": f"v1/instances/{ns}",',
        "namespace ns's prefix also covers ns2's instances",
        (PURE, "tests/clear/test_clear_bulk.py"),
    ),
    # -- fencing: which lease `up` revokes -----------------------------------------------------
    Mutant(
        "fencing-oldest-lease",
        "launcher/registrations/lock.py",
        "max(found, key=lambda kv: kv.create_revision)",
        "min(found, key=lambda kv: kv.create_revision)",
        "fencing revokes the oldest lease at the worker's port, not its last life's",
        (f"{PROBE}::test_fencing_picks_the_newest_lease_of_this_namespace_at_that_port",),
    ),
    Mutant(
        "fencing-prefix-without-slash",
        "launcher/registrations/lock.py",
        'etcd.get_prefix(f"v1/instances/{namespace}/")',
        'etcd.get_prefix(f"v1/instances/{namespace}")',
        "fencing looks at ns2's workers too and may revoke a neighbour's lease",
        (f"{PROBE}::test_fencing_picks_the_newest_lease_of_this_namespace_at_that_port",),
    ),
    # -- the plan: GPUs and ports --------------------------------------------------------------
    Mutant(
        "gpu-slices-overlap",
        "launcher/gpus.py",
        "gpus[i * tp : (i + 1) * tp]",
        "gpus[i : i + tp]",
        "workers with --tp 2 share GPUs (0,1 and 1,2)",
        ("tests/unit/test_unit_plan.py",),
    ),
    Mutant(
        "port-reserved-by-another-run",
        "launcher/ports.py",
        "                    candidate not in taken\n"
        "                    and candidate not in ports.values()\n"
        "                    and is_free(candidate, bind_hosts",
        "                    candidate not in ports.values()\n"
        "                    and is_free(candidate, bind_hosts",
        "a port reserved by another running dynlaunch is handed out again",
        (RULES,),
    ),
    Mutant(
        "port-twice-in-one-plan",
        "launcher/ports.py",
        "                    and candidate not in ports.values()\n"
        "                    and is_free(candidate, bind_hosts",
        "                    and is_free(candidate, bind_hosts",
        "one plan gives the same free port to two slots",
        ("tests/unit/test_unit_plan.py", RULES),
    ),
    # -- secrets -------------------------------------------------------------------------------
    Mutant(
        "secret-pattern-drops-secret-password",
        "launcher/names.py",
        'r"TOKEN|SECRET|PASSWORD|PASSWD|',
        'r"TOKEN|PASSWD|',
        "*SECRET* and *PASSWORD* values are printed (plan --json shows NATS_PASSWORD)",
        (SECRETS,),
    ),
    Mutant(
        "secret-pattern-case-sensitive",
        "launcher/names.py",
        '|(^|_)KEY$", re.I\n)',
        '|(^|_)KEY$"\n)',
        "lower-case secret names (hf_token) are printed",
        (SECRETS,),
    ),
    Mutant(
        "plan-env-unmasked",
        "launcher/plan.py",
        '"env": {k: _shown_env(k, v) for k, v in self.env.items()},',
        '"env": {k: mask_userinfo(v) for k, v in self.env.items()},',
        "plan (text and --json) prints secret env values",
        (SECRETS,),
    ),
    Mutant(
        "plan-argv-flag-unmasked",
        "launcher/plan.py",
        "hide_next = is_secret_flag(flag) and not eq",
        "hide_next = False",
        "plan prints the value after --api-key VALUE",
        (SECRETS,),
    ),
    Mutant(
        "config-error-shows-secret",
        "launcher/config.py",
        'hidden = secret or isinstance(shown, dict) or first["type"] == "missing"',
        'hidden = isinstance(shown, dict) or first["type"] == "missing"',
        "a config error prints (got ['hf_secret123']) for a secret key",
        (SECRETS,),
    ),
    Mutant(
        "started-line-shows-argv",
        "launcher/supervision/supervisor.py",
        '" ".join(mask_argv(child.spec.argv)[:4])',
        '" ".join(child.spec.argv)',
        "up's started: line prints the whole argv, secret flags included",
        (
            f"{SECRETS}::test_the_started_line_never_shows_a_secret_flag",
            "tests/supervision/test_supervisor_children.py"
            "::test_the_started_line_never_shows_a_secret_flag_value",
        ),
    ),
    Mutant(
        "up-logs-child-env",
        "launcher/supervision/supervisor.py",
        "proc.pid, shown)",
        "proc.pid, shown + str(dict(child.spec.env)))",
        "up's started: line prints the child's env, HF_TOKEN's value included",
        ("tests/integration/test_secret_up.py",),
    ),
    # -- restart policy, crash loops, states, exit codes ---------------------------------------
    Mutant(
        "on-failure-restarts-clean-exit",
        "launcher/supervision/lifecycle.py",
        "(rules.policy is Policy.ON_FAILURE and not failed(status))",
        "(rules.policy is Policy.ON_FAILURE and failed(status))",
        "restart.policy on-failure restarts a clean exit and leaves a crash down",
        (LIFECYCLE,),
    ),
    Mutant(
        "startsecs-reset-inverted",
        "launcher/supervision/lifecycle.py",
        "if uptime_s >= rules.startsecs:",
        "if uptime_s < rules.startsecs:",
        "a child that started well keeps its long backoff; a fast crasher's resets",
        (LIFECYCLE,),
    ),
    Mutant(
        "crash-loop-one-late",
        "launcher/supervision/lifecycle.py",
        "if len(in_window) >= rules.max_restarts:",
        "if len(in_window) > rules.max_restarts:",
        "one restart more than restart.max_restarts before giving up",
        (LIFECYCLE,),
    ),
    Mutant(
        "backoff-base-cap-swapped",
        "launcher/supervision/lifecycle.py",
        "min(cap_s, base_s * 2.0 ** min(attempt, 60))",
        "min(base_s, cap_s * 2.0 ** min(attempt, 60))",
        "restart.backoff_base_s and backoff_cap_s swapped",
        (LIFECYCLE,),
    ),
    Mutant(
        "fatal-can-restart",
        "launcher/supervision/lifecycle.py",
        "    State.FATAL: frozenset(),",
        "    State.FATAL: frozenset({State.STARTING}),",
        "a child given up after a crash loop may be started again",
        (LIFECYCLE,),
    ),
    Mutant(
        "keep-serving-without-others",
        "launcher/supervision/lifecycle.py",
        'crash_loop == "keep-serving" and others_left > 0',
        'crash_loop == "keep-serving" and others_left >= 0',
        "the last worker's crash loop leaves a stack serving with no worker at all",
        (f"{LIVENESS}::test_keep_serving_after_a_crash_loop",),
    ),
    Mutant(
        "run-exit-zero-on-failure",
        "launcher/supervision/lifecycle.py",
        "return exit_code(status) or EXIT_FAILED",
        "return exit_code(status)",
        "a child that ends the run with status 0 (Dynamo after a lost lease) makes up exit 0",
        (RULES,),
    ),
    Mutant(
        "signal-exit-code-negative",
        "launcher/supervision/lifecycle.py",
        "return EXIT_SIGNAL_BASE - code if code < 0 else code",
        "return EXIT_SIGNAL_BASE + code if code < 0 else code",
        "a child killed by signal N reports 128-N instead of 128+N",
        (RULES,),
    ),
    Mutant(
        "startup-error-exit-1",
        "launcher/errors.py",
        "EXIT_STARTUP = 3",
        "EXIT_STARTUP = 1",
        "a stack that cannot come up exits 1 (like 'not running'), not 3",
        ("tests/cli/test_cli_errors.py::test_unreachable_external_etcd",),
    ),
    # -- liveness ------------------------------------------------------------------------------
    Mutant(
        "liveness-miss-while-starting",
        "launcher/supervision/liveness.py",
        "    if not prev.answered:\n",
        "    if False:\n",
        "a worker still starting (never answered) is counted as missing /live and killed",
        (f"{LIVENESS}::test_observe_counts_only_silence_after_a_first_answer",),
    ),
    Mutant(
        "liveness-new-pid-inherits-misses",
        "launcher/supervision/liveness.py",
        "        prev = Health(pid=pid)  # a new process: nothing it did before counts",
        "        prev = Health(pid=pid, answered=prev.answered, failures=prev.failures)",
        "a restarted worker inherits its predecessor's misses",
        (f"{LIVENESS}::test_observe_starts_afresh_for_a_new_process",),
    ),
    # -- operations on a running stack: GPUs of a replacement (issue 18) -----------------------
    Mutant(
        "replacement-gpu-given-twice",
        "launcher/operations.py",
        "    after = [g for g in [*free, *old] if g not in gpus]",
        "    after = [*free, *old]",
        "a rolling restart gives one free GPU to two replacements (it stays free after its step)",
        ("tests/unit/test_unit_operations.py",),
    ),
    Mutant(
        "replacement-kv-endpoint-loopback",
        "launcher/operations.py",
        """f"{kv['endpoint'].rsplit(':', 1)[0]}:""",
        'f"tcp://127.0.0.1:',
        "a replacement's SGLang KV-event endpoint becomes tcp://127.0.0.1 (SGLang then connects, "
        "and the router gets no event: GPU run 6)",
        ("tests/unit/test_unit_operations.py",),
    ),
    Mutant(
        "replacement-gpus-not-freed",
        "launcher/operations.py",
        "    after = [g for g in [*free, *old] if g not in gpus]",
        "    after = [g for g in free if g not in gpus]",
        "the GPUs an old worker frees are never used by the next steps (stop first needlessly)",
        ("tests/unit/test_unit_operations.py",),
    ),
    # -- the state dir: the marked-infra wipe, the pid identity check ---------------------------
    Mutant(
        "unmarked-infra-wiped",
        "launcher/statedir.py",
        "if not (self.infra / MARKER).is_file() or self.infra.is_symlink():",
        "if self.infra.is_symlink():",
        "an infra/ dir dynlaunch did not create (no marker) is wiped",
        (f"{IDENTITY}::test_an_unmarked_infra_dir_is_refused_and_left_alone",),
    ),
    Mutant(
        "pid-identity-ignores-start-time",
        "launcher/procid.py",
        "    return start_time(pid) == start",
        "    return start_time(pid) is not None",
        "a reused pid is taken for the process that had it (status/down signal a stranger)",
        (f"{IDENTITY}::test_same_pid_other_start_time_is_not_the_same_process",),
    ),
)


def repo_files() -> list[str]:
    """The files a scratch copy needs: tracked and untracked-but-not-ignored, as they are now."""
    done = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    )  # fmt: skip
    return sorted({f for f in done.stdout.decode().split("\0") if f and (REPO / f).is_file()})


def make_copy(dest: Path) -> None:
    for name in repo_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)


def run_env(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNLAUNCH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutated module's .pyc never outlives its mutant
    return env


def check_copy_is_imported(copy: Path) -> None:
    """`import launcher` in the copy's environment must find the copy, not the editable install."""
    done = subprocess.run(
        [sys.executable, "-c", "import launcher; print(launcher.__file__)"],
        cwd=copy, env=run_env(copy), capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = Path(done.stdout.strip()).resolve()
    if not found.is_relative_to(copy.resolve()):
        sys.exit(f"mutants: `import launcher` finds {found}, not the scratch copy {copy}")


def pytest(copy: Path, tests: Sequence[str], timeout: float) -> tuple[int, float, str]:
    """Run ``tests`` in the copy; (exit code, seconds, output tail). 124: timed out."""
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    began = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=copy, env=run_env(copy), capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return 124, time.monotonic() - began, "timed out"
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    return done.returncode, time.monotonic() - began, tail


def apply(copy: Path, mutant: Mutant) -> str:
    """Edit the copy's file; return its original text. Fails loudly unless the snippet occurs
    exactly once."""
    path = copy / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        sys.exit(f"mutants: {mutant.name}: the snippet occurs {count} times in {mutant.file}")
    path.write_text(text.replace(mutant.old, mutant.new))
    return text


def run_all(mutants: Sequence[Mutant], verbose: bool) -> int:
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dynlaunch-mutants-") as scratch:
        copy = Path(scratch) / "repo"
        make_copy(copy)
        check_copy_is_imported(copy)
        for mutant in mutants:  # every snippet is checked before anything runs
            (copy / mutant.file).write_text(apply(copy, mutant))
        union = sorted({t for m in mutants for t in m.tests})
        code, took, tail = pytest(copy, union, PER_MUTANT_TIMEOUT_S * 2)
        print(f"baseline: {len(union)} selections unmutated: exit {code} in {took:.0f}s")
        if code != 0:
            print(tail)
            print("mutants: the unmutated copy fails its tests; nothing to judge")
            return 1
        survived = []
        for n, mutant in enumerate(mutants, 1):
            original = apply(copy, mutant)
            try:
                code, took, tail = pytest(copy, mutant.tests, PER_MUTANT_TIMEOUT_S)
            finally:
                (copy / mutant.file).write_text(original)
            # Only failing tests (pytest's 1) catch a mutant; a selection that no longer
            # collects or runs (2-5) is an error of the list, and counts as not caught.
            verdict = {0: "SURVIVED", 1: "caught", 124: "caught (timed out)"}.get(code, "ERROR")
            print(f"[{n:2}/{len(mutants)}] {verdict:<8} {took:5.1f}s  {mutant.name}: {mutant.why}")
            if code not in (1, 124):
                survived.append(mutant.name)
            if verbose or verdict == "ERROR":
                print("    " + tail.replace("\n", "\n    "))
    total = time.monotonic() - began
    print(f"{len(mutants) - len(survived)} of {len(mutants)} caught in {total:.0f}s")
    if survived:
        print(f"not caught: {', '.join(survived)}")
    return 1 if survived else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the curated mutant suite.")
    parser.add_argument("names", nargs="*", help="only these mutants (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests")
    parser.add_argument("-v", "--verbose", action="store_true", help="show how each was caught")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutant(s): {', '.join(unknown)}")
    chosen = [known[n] for n in args.names] if args.names else list(MUTANTS)
    if args.list:
        for m in chosen:
            print(f"{m.name}  ({m.file})\n    {m.why}\n    tests: {' '.join(m.tests)}")
        return 0
    return run_all(chosen, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
