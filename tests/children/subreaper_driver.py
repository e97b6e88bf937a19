"""Runs a Supervisor the way `dynlaunch up` does (a subreaper) over orphan_maker.py, in a process
of its own so that pytest itself never becomes a subreaper. Prints one JSON line: its pid, the
orphaned grandchild's parent pid, and whether the grandchild is gone (reaped) after the sweep."""

import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from launcher.plan import ProcessSpec
from launcher.supervision.supervisor import Supervisor, become_subreaper

adopt = sys.argv[1] == "subreaper"
if adopt:
    become_subreaper()
sup = Supervisor(uuid.uuid4().hex, Path(tempfile.mkdtemp()), os.environ)
script = Path(__file__).with_name("orphan_maker.py")
child = sup.add(ProcessSpec("maker", "worker", (sys.executable, str(script)), {}), 10)
sup.spawn(child, time.monotonic())
deadline = time.monotonic() + 10
while (child.alive or not child.relay.tail) and time.monotonic() < deadline:
    sup.reap()
    time.sleep(0.05)
grandchild = int(child.relay.tail[0].split()[1])
with open(f"/proc/{grandchild}/status") as status:
    ppid = int(next(line for line in status if line.startswith("PPid:")).split()[1])
swept = sup.sweep()
deadline = time.monotonic() + 5
while os.path.exists(f"/proc/{grandchild}") and time.monotonic() < deadline:
    sup.reap()
    time.sleep(0.05)
gone = not os.path.exists(f"/proc/{grandchild}")
print(json.dumps({"pid": os.getpid(), "ppid": ppid, "swept": swept, "gone": gone}))
