"""JetStream streams of a NATS server: list their names, delete some (nats-py; asyncio stays here).

Dynamo 0.5 keeps model files in object stores (stream ``OBJ_<bucket>``) and KV events in streams
``namespace-<ns>-component-<component>-kv-events``; Dynamo 1.x keeps nothing in JetStream.
A server without JetStream has no streams. Any failure to reach the server is one
`InfraUnreachableError`, a refusal by it one `StartupError`. The active credentials
(`launcher.credentials`: NATS_AUTH_*, NATS_TLS_*) log in; a refused login and an untrusted
certificate are errors of their own, and no secret is shown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from launcher import credentials
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
    # asyncio warns "returning true from eof_received() has no effect when using ssl" when a TLS
    # server closes on a refused login: the refusal is our one error line, not that.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    shown = re.sub(r"(?<=://)[^/@\s]*@", "***@", url)  # as config.mask_userinfo (no pydantic here)
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
                **_login(),
            ),
            timeout=2 * timeout + 1,
        )
    except ssl.SSLCertVerificationError as err:
        raise StartupError(
            f"NATS at {shown}: its TLS certificate is not trusted ({err.verify_message}); set "
            "NATS_TLS_CA (infra.nats.ca) to the CA that signed it"
        ) from None
    except ssl.SSLError as err:
        raise StartupError(
            f"NATS at {shown}: the TLS handshake failed ({err.reason or err})"
        ) from None
    except (OSError, NatsError, asyncio.TimeoutError) as err:
        said = str(err) or type(err).__name__
        if "authorization" in said.lower() or "authentication" in said.lower():
            raise StartupError(
                f"NATS at {shown}: login refused ({said.strip()}); check NATS_AUTH_USERNAME and "
                "NATS_AUTH_PASSWORD, NATS_AUTH_TOKEN or NATS_AUTH_CREDENTIALS_FILE (infra.nats.*)"
            ) from None
        if "tls" in said.lower() and "required" in said.lower():
            raise StartupError(
                f"NATS at {shown} requires TLS: set NATS_TLS_CA (infra.nats.ca) to its CA"
            ) from None
        raise InfraUnreachableError(f"NATS at {shown} unreachable: {said}") from None
    try:
        return await work(nc)
    except NatsTimeout:
        raise InfraUnreachableError(
            f"NATS at {url}: JetStream did not answer in {timeout}s"
        ) from None
    finally:
        await nc.close()


def _login() -> dict[str, Any]:
    """nats-py's connect options for the active credentials."""
    auth = credentials.active().nats
    options: dict[str, Any] = {}
    if auth.username:
        options |= {"user": auth.username, "password": auth.password or ""}
    if auth.token:
        options["token"] = auth.token
    if auth.creds_file:
        options["user_credentials"] = auth.creds_file
    if auth.nkey:
        options |= credentials.nkey_option(auth.nkey)
    context = auth.ssl_context()
    if context is not None:
        options["tls"] = context
    return options


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


INFO_WINDOW_S = 0.3  # how long answers to $SRV.INFO are gathered, at least


def service_subjects(url: str, services: Sequence[str], timeout: float = 5.0) -> set[str]:
    """The endpoint subjects that the live instances of the NATS micro services ``services``
    (0.5: `{ns}_{component}`) advertise, asked on `$SRV.INFO.<service>`. Every live instance
    answers at once; answers are gathered for a window of a few round trips (at least
    INFO_WINDOW_S), twice, and a subject seen in either round is live. A service with no instance
    left is known at once: NATS answers its request with "no responders" (status 503)."""

    async def ask(nc: Client, service: str, window: float) -> set[str]:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        live: set[str] = set()
        try:
            await nc.publish(f"$SRV.INFO.{service}", b"", reply=inbox)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + window
            while (left := deadline - loop.time()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except asyncio.TimeoutError:
                    break
                if (msg.headers or {}).get("Status") == "503":
                    break  # no instance of the service is left
                live |= _info_subjects(msg.data)
            return live
        finally:
            await sub.unsubscribe()

    async def work(nc: Client) -> set[str]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await nc.flush(max(1, round(timeout)))  # one round trip: how far the server is
        window = max(INFO_WINDOW_S, 4 * (loop.time() - began))
        live: set[str] = set()
        for _ in range(2):
            for found in await asyncio.gather(*(ask(nc, s, window) for s in services)):
                live |= found
        return live

    if not services:
        return set()
    return asyncio.run(_connected(url, timeout, work))


def _info_subjects(data: bytes) -> set[str]:
    """The endpoint subjects of one $SRV.INFO answer."""
    try:
        info = json.loads(data)
    except ValueError:
        return set()
    endpoints = info.get("endpoints") if isinstance(info, dict) else None
    if not isinstance(endpoints, list):
        return set()
    return {
        e["subject"] for e in endpoints if isinstance(e, dict) and isinstance(e.get("subject"), str)
    }
