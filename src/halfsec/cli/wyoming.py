"""``halfsec wyoming``: serve speech to text, text to speech and intents to Home Assistant."""

from __future__ import annotations

import asyncio
import logging

from halfsec.cli.common import err, stop_signal
from halfsec.config import HalfsecConfig
from halfsec.errors import HalfsecError
from halfsec.runtime.build import build_engines
from halfsec.server.wyoming import WyomingServer, parse_uri


def wyoming_command(config: HalfsecConfig, uri: str, allow_remote: bool) -> int:
    """Check the URI *before* loading models: a typo fails in milliseconds."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        endpoint = parse_uri(uri, allow_remote)
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {e}")
        return 2
    try:
        with err.status("loading engines..."):
            engines = build_engines(config, phone=False)
    except HalfsecError as e:
        err.print(f"[red]error:[/red] {e}")
        return 2

    async def main() -> None:
        server = WyomingServer(engines, config, endpoint)
        where = await server.start()
        err.print(
            f"halfsec wyoming: listening on {where} (stt {engines.stt.name}, "
            f"tts {engines.tts.name}, intents {config.logic.domain}); add it in Home "
            "Assistant under Settings > Devices & services > Wyoming Protocol",
            soft_wrap=True,
        )
        try:
            await stop_signal()
        finally:
            await server.stop()
            await engines.aclose()

    try:
        asyncio.run(main())
    except OSError as e:
        err.print(
            f"[red]error:[/red] cannot listen on {uri} ({e}); "
            "pick another port or stop the process using it"
        )
        return 2
    return 0
