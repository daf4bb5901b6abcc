"""Build the configured logic engine (the runtime and CLI only call this)."""

from __future__ import annotations

from halfsec.logic.domain import load_domain
from halfsec.logic.domain_logic import DomainLogic
from halfsec.logic.engine import LogicEngine
from halfsec.logic.options import LogicOptions


def create_logic(options: LogicOptions | None = None) -> LogicEngine:
    """Load and validate the domain now, so a bad file fails at start-up, not mid-call."""
    opts = options or LogicOptions()
    return DomainLogic(load_domain(opts.domain), opts)
