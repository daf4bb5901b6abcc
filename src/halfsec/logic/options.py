"""Settings of the logic stage, validated once at start-up.

Frozen so one options object can be shared by every session without anyone changing
a threshold under a running conversation.
"""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.errors import ConfigError


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
        if not self.domain.strip():
            raise ConfigError("logic option 'domain' is empty; name a domain or a file")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"logic option 'min_confidence' is {self.min_confidence}; use 0..1")
        for name in ("llm_timeout_s", "llm_connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"logic option {name!r} must be > 0 seconds")
        if self.llm_max_tokens <= 0:
            raise ConfigError("logic option 'llm_max_tokens' must be > 0")
        if self.llm_history_tokens < 0:
            raise ConfigError("logic option 'llm_history_tokens' must be >= 0")
        if self.llm_base_url is not None and not self.llm_base_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"logic option 'llm_base_url' is {self.llm_base_url!r}; "
                "give an http(s) URL such as http://127.0.0.1:8000/v1"
            )
