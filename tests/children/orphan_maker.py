"""Forks a grandchild and exits at once, so the grandchild is orphaned (as SGLang's scheduler is
when its main process dies): it prints the grandchild's pid first."""

import os
import sys
import time

pid = os.fork()
if pid == 0:
    while True:
        time.sleep(1)
print(f"grandchild {pid}", flush=True)
sys.exit(0)
