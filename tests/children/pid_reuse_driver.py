"""Real pid reuse, run as PID 1 of a fresh pid namespace (`unshare --pid --fork --mount-proc`):
start `dynlaunch up mocker`, SIGKILL it once ready, wait until its run is gone, hand its pid to a
`sleep` (through /proc/sys/kernel/ns_last_pid), then ask `status` and `down` about the dead run.
Prints one JSON line. argv: STATE_DIR HTTP_PORT."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from testkit.procs import tagged_pids

state, port = sys.argv[1], sys.argv[2]
cli = [sys.executable, "-m", "launcher"]
up = subprocess.Popen(
    [*cli, "up", "mocker", "--namespace", "reuse", "--http-port", port, "--state-dir", state],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
)
assert up.stderr is not None
for line in up.stderr:
    if "dynlaunch: ready:" in line:
        break
else:
    sys.exit(f"up exited {up.wait()} before it was ready")
run_id = json.loads(Path(state, "launcher.json").read_text())["run_id"]
up.send_signal(signal.SIGKILL)
up.wait()
deadline = time.monotonic() + 60
while tagged_pids(run_id) and time.monotonic() < deadline:
    with contextlib.suppress(ChildProcessError):  # PID 1 here: reap what the dead run left us
        os.waitpid(-1, os.WNOHANG)
    time.sleep(0.1)
with open("/proc/sys/kernel/ns_last_pid", "w") as last:
    last.write(str(up.pid - 1))
sleeper = subprocess.Popen(["sleep", "300"])
status = subprocess.run([*cli, "status", "--state-dir", state], capture_output=True, text=True)
down = subprocess.run(
    [*cli, "down", "--state-dir", state, "--timeout", "3"], capture_output=True, text=True
)
report = {
    "dead_pid": up.pid,
    "sleep_pid": sleeper.pid,
    "status": status.returncode,
    "down": down.returncode,
    "down_err": down.stderr.strip(),
    "sleep_alive": sleeper.poll() is None,
}
sleeper.kill()
sleeper.wait()
print(json.dumps(report))
