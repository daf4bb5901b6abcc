"""Reply templates of domain files: ``{slot}`` placeholders and ``[a|b]`` optional groups.

Its own module because the loader checks templates (:func:`template_problem`) and the
logic renders them (:func:`render_template`): one spelling of the syntax for both.
"""

from __future__ import annotations

import re

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_GROUP = re.compile(r"\[([^\[\]]*)\]")


def template_problem(text: str) -> str:
    """Why the ``[...]`` groups of a template are malformed ('' when they are fine)."""
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
            if depth > 1:
                return f"nested '[' in {text!r} (optional groups cannot nest)"
        elif ch == "]":
            depth -= 1
            if depth < 0:
                return f"unbalanced ']' in {text!r}"
    return f"unclosed '[' in {text!r}" if depth else ""


def is_fixed(template: str) -> bool:
    """Does ``template`` say the same words whatever the slots (no placeholder, no
    optional group)?  The TTS phrase cache renders such clauses at warmup."""
    return PLACEHOLDER.search(template) is None and _GROUP.search(template) is None


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill ``{slot}`` placeholders; ``[a|b|c]`` keeps the first alternative whose
    placeholders all have values (a plain alternative always fits, so ``[{n}|one]``
    means "n, else one").  Missing values in bare placeholders render as nothing.
    """

    def group(m: re.Match[str]) -> str:
        for alt in m.group(1).split("|"):
            if all(values.get(s) for s in PLACEHOLDER.findall(alt)):
                return PLACEHOLDER.sub(lambda p: values[p.group(1)], alt)
        return ""

    text = _GROUP.sub(group, template)
    text = PLACEHOLDER.sub(lambda p: values.get(p.group(1), ""), text)
    text = re.sub(r"\s+([,.!?;:])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()
    return text[:1].upper() + text[1:]
