"""Forks a grandchild that leaves the process group with setsid (as SGLang's scheduler may)."""

import os
import sys
import time

pid = os.fork()
if pid == 0:
    os.setsid()
    while True:
        time.sleep(1)
print(f"grandchild {pid}", flush=True)
sys.stdout.flush()
while True:
    time.sleep(1)
