"""JetStream streams of a NATS server: list their names, delete some (nats-py; asyncio stays here).

Dynamo 0.5 keeps model files in object stores (stream ``OBJ_<bucket>``) and KV events in streams
``namespace-<ns>-component-<component>-kv-events``; Dynamo 1.x keeps nothing in JetStream.
A server without JetStream has no streams. Any failure to reach the server is one
`InfraUnreachableError`, a refusal by it one `StartupError`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from launcher.errors import InfraUnreachableError, StartupError

if TYPE_CHECKING:  # nats-py (and aiohttp) load only when NATS is used: `dynlaunch` starts faster
    from nats.aio.client import Client

API = "$JS.API"
T = TypeVar("T")


async def _quiet(_err: Exception) -> None:
    """nats-py logs every connection error by default; ours become one InfraUnreachableError
    line."""


async def _connected(url: str, timeout: float, work: Callable[[Client], Awaitable[T]]) -> T:
    import nats
    from nats.errors import Error as NatsError
    from nats.errors import TimeoutError as NatsTimeout

    servers = [u.strip() for u in url.split(",") if u.strip()]
    try:
        # max_reconnect_attempts=0 would retry an unreachable server forever: 1 means one retry.
        nc = await asyncio.wait_for(
            nats.connect(
                servers=servers,
                connect_timeout=timeout,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=_quiet,
            ),
            timeout=2 * timeout + 1,
        )
    except (OSError, NatsError, asyncio.TimeoutError) as err:
        raise InfraUnreachableError(
            f"NATS at {url} unreachable: {err or type(err).__name__}"
        ) from None
    try:
        return await work(nc)
    except NatsTimeout:
        raise InfraUnreachableError(
            f"NATS at {url}: JetStream did not answer in {timeout}s"
        ) from None
    finally:
        await nc.close()


async def _api(nc: Client, subject: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    msg = await nc.request(f"{API}.{subject}", json.dumps(body).encode(), timeout=timeout)
    data = json.loads(msg.data or b"{}")
    return data if isinstance(data, dict) else {}


def list_streams(url: str, timeout: float = 5.0) -> list[str]:
    """Every stream's name, sorted; [] when the server runs without JetStream."""

    from nats.errors import NoRespondersError

    async def work(nc: Client) -> list[str]:
        names: list[str] = []
        while True:
            try:
                page = await _api(nc, "STREAM.NAMES", {"offset": len(names)}, timeout)
            except NoRespondersError:
                return []  # no JetStream on this server
            if "error" in page:
                raise StartupError(f"NATS at {url}: listing streams failed: {page['error']}")
            got = page.get("streams") or []
            names += [str(n) for n in got]
            if not got or len(names) >= int(page.get("total", 0)):
                return sorted(names)

    return asyncio.run(_connected(url, timeout, work))


def delete_streams(url: str, names: Sequence[str], timeout: float = 5.0) -> list[str]:
    """Delete each named stream; the names actually deleted (one already gone is skipped)."""

    from nats.errors import NoRespondersError

    async def work(nc: Client) -> list[str]:
        done: list[str] = []
        for name in names:
            try:
                resp = await _api(nc, f"STREAM.DELETE.{name}", {}, timeout)
            except NoRespondersError:
                return done
            if resp.get("success"):
                done.append(name)
            elif resp.get("error", {}).get("err_code") != 10059:  # 10059: stream not found
                raise StartupError(f"NATS at {url}: deleting stream {name} failed: {resp['error']}")
        return done

    return asyncio.run(_connected(url, timeout, work))
