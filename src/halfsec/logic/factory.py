"""Build the configured logic engine (the runtime and CLI only call this)."""

from __future__ import annotations

from halfsec.errors import EngineUnavailable
from halfsec.logic.domain import load_domain
from halfsec.logic.domain_logic import DomainLogic
from halfsec.logic.engine import LogicEngine
from halfsec.logic.options import LogicOptions
from halfsec.plugins import LOGIC_GROUP, create_plugin_engine, plugin_names


def create_logic(options: LogicOptions | None = None) -> LogicEngine:
    """Load and validate the domain now, so a bad file fails at start-up, not mid-call."""
    opts = options or LogicOptions()
    if opts.engine == "domain":
        return DomainLogic(load_domain(opts.domain), opts)
    if opts.engine in plugin_names(LOGIC_GROUP):
        engine: LogicEngine = create_plugin_engine(LOGIC_GROUP, opts.engine, opts, LogicEngine)
        return engine
    names = ("domain", *plugin_names(LOGIC_GROUP))
    raise EngineUnavailable(
        f"unknown logic engine {opts.engine!r}: choose one of {', '.join(names)}"
    )
