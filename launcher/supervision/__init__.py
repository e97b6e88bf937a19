"""Children of one run: start, watch, restart, stop; their output; the dead-man switch.

Imports nothing: `python -m launcher.supervision.deadman` must start fast, stdlib only."""
