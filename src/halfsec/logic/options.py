"""Settings of the logic stage, validated once at start-up.

Frozen so one options object can be shared by every session without anyone changing
a threshold under a running conversation.
"""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.errors import ConfigError
from halfsec.options_check import ConfigKeys, between, check_fields, positive

_RULES = {
    "llm_timeout_s": positive("s", at_most=600),
    "llm_connect_timeout_s": positive("s", at_most=600),
    "llm_max_tokens": between(1, 100_000),
    # OpenAI-compatible servers accept 0..2.
    "llm_temperature": between(0, 2),
    "llm_history_tokens": between(0, 1_000_000),
    "min_confidence": between(0, 1),
    "min_clause_chars": between(0, 10_000),
}


@dataclass(frozen=True, slots=True)
class LogicOptions:
    engine: str = "domain"
    """``domain`` (templates for the domain's intents, the LLM for the rest); any other
    name must be an installed plugin engine (entry-point group ``halfsec.logic``)."""
    domain: str = "coffee"
    """Packaged domain name (``coffee``, ``retail``) or path of a .yaml/.toml file."""
    llm_base_url: str | None = None
    """OpenAI-compatible base URL, e.g. ``http://127.0.0.1:8000/v1``; None: no LLM."""
    llm_model: str = "default"
    llm_api_key_env: str | None = "OPENAI_API_KEY"
    """Name of the environment variable holding the key (never the key itself)."""
    llm_timeout_s: float = 3.0
    """Longest wait for the LLM's first token before the polite fallback is spoken."""
    llm_connect_timeout_s: float = 1.0
    llm_max_tokens: int = 120
    llm_temperature: float = 0.3
    llm_system_prompt: str | None = None
    """None: a prompt built from the domain's description (short spoken answers)."""
    llm_history_tokens: int = 800
    """Chat history a session keeps for the LLM (estimated tokens, oldest exchanges
    dropped first): enough for the last several turns of an order, small enough that
    the prompt does not slow the model's first token as a call goes on."""
    min_confidence: float = 0.5
    """Below this the utterance has no intent (and goes to the LLM or the fallback)."""
    min_clause_chars: int = 12
    """A comma only ends a clause after this many characters (no one-word clauses)."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, ConfigKeys("logic"))
        if not self.domain.strip():
            raise ConfigError(
                "logic.domain is empty; name a packaged domain (coffee, retail) or a "
                ".yaml/.toml file"
            )
        if self.llm_base_url is not None and not self.llm_base_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"logic.llm_base_url must be an http(s) URL, got {self.llm_base_url!r}; "
                "give one such as http://127.0.0.1:8000/v1"
            )
