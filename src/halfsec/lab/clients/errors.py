"""The one error a bench client raises internally; each client turns it into
``ClientRun.error`` so a failed recording never stops the bench."""

from __future__ import annotations


class ClientError(Exception):
    """The recording could not be played to the server; the message says why."""
