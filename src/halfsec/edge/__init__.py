"""The edge: ``halfsec edge``, a gateway near the user in front of a distant server.

``gateway`` (the aiohttp app), ``gate`` (what audio the origin must hear),
``conversation`` (one client's state), ``origin_link`` (one pre-started origin session),
``origin_pool`` (warm links), ``options``."""
