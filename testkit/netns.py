"""A private network namespace where Dynamo 0.5 finds a routable address, on loopback only.

Dynamo 0.5's frontend binds its response stream on the host's first non-loopback address and
panics (`LocalIpAddressNotFound`) when there is none; tests must never bind a routable address of
the host. So a command (or a whole pytest process) runs under `unshare --net`: a namespace of its
own that holds only `lo`, up, with `127.0.0.2/32 scope global` on it and a default route via `lo`.
The namespace lives as long as the command does and is never named or mounted: nothing of the
host's network is touched. Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN).

    python -m testkit.netns -- CMD ARGS...      # run CMD inside; its exit status is ours
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

ADDRESS = "127.0.0.2"
SETUP = (
    "ip link set lo up"
    f" && ip addr add {ADDRESS}/32 dev lo scope global"
    f" && ip route add default dev lo src {ADDRESS}"
)


def available() -> str | None:
    """None when a namespace can be made here, else why not (one line)."""
    if os.geteuid() != 0:
        return "needs root (unshare --net, ip addr add)"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` on PATH"
    return None


def wrap(argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside a fresh namespace set up as above."""
    if not argv:
        raise ValueError("netns.wrap: empty command")
    return ["unshare", "--net", "--", "sh", "-ec", f'{SETUP}\nexec "$@"', "netns", *argv]


def net_ns_id(pid: int | str = "self") -> int:
    """The inode of a process's network namespace (equal inodes: the same namespace)."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def global_ipv4(argv_prefix: Sequence[str] = ()) -> list[str]:
    """The IPv4 addresses of scope global in the caller's namespace (or under ``argv_prefix``)."""
    out = subprocess.run(
        [*argv_prefix, "ip", "-o", "-4", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3]


def links() -> list[str]:
    """The network interfaces of the caller's namespace (`ip -o link`, not sysfs: /sys shows the
    namespace it was mounted in)."""
    out = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def inside() -> bool:
    """True in a namespace made by this module: `lo` is its only interface and 127.0.0.2 its
    only global address."""
    return links() == ["lo"] and global_ipv4() == [ADDRESS]


def main(argv: Sequence[str]) -> int:
    args = list(argv[1:] if argv and argv[0] == "--" else argv)
    why = available()
    if why is not None or not args:
        sys.stderr.write(
            f"testkit.netns: {why or 'usage: python -m testkit.netns -- CMD ARGS...'}\n"
        )
        return 2
    with subprocess.Popen(wrap(args)) as proc:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the command too (same process group)
            return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
