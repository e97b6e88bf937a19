"""Ignores SIGTERM (like a hung engine); says when it is ready."""

import signal
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(1)
