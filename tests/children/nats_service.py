"""A NATS micro service the way Dynamo 0.5 runs one per worker (argv: NATS_URL SERVICE LEASE_HEX):
service SERVICE with endpoints SERVICE.generate-LEASE and SERVICE.load_metrics-LEASE, queue
group "q". Prints "ready" once registered, then serves until killed."""

from __future__ import annotations

import asyncio
import sys

import nats
from nats.micro import add_service


async def main(url: str, service: str, lease: str) -> None:
    nc = await nats.connect(url)
    svc = await add_service(nc, name=service, version="0.0.1")

    async def handler(req: object) -> None:
        pass

    for endpoint in ("generate", "load_metrics"):
        await svc.add_endpoint(
            name=f"{service}-{endpoint}-{lease}",
            subject=f"{service}.{endpoint}-{lease}",
            queue_group="q",
            handler=handler,
        )
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


asyncio.run(main(*sys.argv[1:4]))
