"""Fast intent and slot extraction that survives speech-recognition errors.

Why not a neural NLU: the whole turn has < 500 ms on a 2-core CPU and the recogniser
already ate most of it, so understanding must cost ~1 ms.  Why not exact string
matching: recognisers write "12oz", "12-ounce", "capuccino", "expresso", "lotte".

Pipeline, each step cheap:

1. ``logic.normalize`` -- lower case, accents and punctuation off, hyphens split,
   digits spelled out ("12" -> "twelve"), digits split from letters ("12oz").
2. domain ``aliases`` -- rewrites such as ``oz -> ounce``, ``skimmed -> skim``.
3. word repair -- a word the domain does not know is fuzzily matched (rapidfuzz) to
   a domain word; two unknown neighbours are also tried joined ("capu chino"), a
   known run-together phrase is split ("doubleshot"), and so is an article glued to a
   domain word ("alothe" -> "a lotte" -> latte).  Common English words are
   never "repaired", so "break" does not become "bread" just because it is close.
4. slot spotting -- exact phrase lookup on the repaired words, choosing the set of
   non-overlapping phrases that covers most words with the fewest phrases (dynamic
   programming), so "a little bit of skim milk" beats "milk" and "medium roast"
   beats the size "medium".
5. intent scoring -- slots become ``$slot`` tokens, then each intent is scored by how
   much of the utterance its vocabulary explains and how much of its best example
   the utterance contains, with function words weighing little.
"""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz import fuzz, process

from halfsec.logic.domain import PLACEHOLDER, Domain
from halfsec.logic.engine import Understanding
from halfsec.logic.normalize import normalize

# Words never "repaired" towards domain words.  Function words and very common verbs
# and nouns: fuzzy-matching them would invent slots out of ordinary speech.
_COMMON = frozenset(
    """
    a about above after again all also am an and any are around as ask at away back be
    because been before being below best better between big both bring but buy by call
    came can cannot cant check close come could day did didnt do does dont done down
    each else even ever every few find fine first for from get give go going good got
    great had has have having he hello help her here hey hi him his how i id if ill im in
    into is it its ive just keep kind know last later leave less let lets like little
    look lot lots made make many may maybe me mean might more most much must my need
    never new next no not now of off ok okay on once one only or other our out over
    own place please put quite rather really right said same say see she should show so
    some something soon still such sure take tell than thank thanks that thats the their
    them then there these they thing think this those though time to today too try two
    under until up us use very want was way we well were what whats when where which
    while white who why will wish with without would yeah yes yet you your youre
    actually also anything nothing everything another again need needs wanted going
    break brake bead bed bet better butter later letter night right
    fight might sight tight mile while hole
    """.split()
)
_STOP_WEIGHT = 0.15
_SLOT_WEIGHT = 1.5
_FUNCTION = frozenset(
    """
    a an the i me my you your we our it its is are am be to of for in on at with and or
    can could would will please id like want get have has had do does did some any this
    that there here just also so then now may might should give make us im ill ive
    """.split()
)


@dataclass(frozen=True, slots=True)
class _Phrase:
    slot: str
    canonical: str
    quality: float
    """1.0 for canonical values and synonyms, slightly less for listed mishearings."""


@dataclass(slots=True)
class _Example:
    tokens: frozenset[str]
    total: float


class Matcher:
    """Compiled matcher for one domain.  Build once; :meth:`understand` is ~0.1-1 ms."""

    def __init__(self, domain: Domain, *, min_confidence: float = 0.5) -> None:
        self.domain = domain
        self.min_confidence = min_confidence
        self._aliases: dict[tuple[str, ...], tuple[str, ...]] = {}
        for heard, meant in domain.aliases.items():
            self._aliases[tuple(normalize(heard))] = tuple(normalize(meant))
        self._alias_max = max((len(k) for k in self._aliases), default=0)

        self._phrases: dict[tuple[str, ...], _Phrase] = {}
        for slot in domain.slots.values():
            for v in slot.values:
                for phrase, quality in (
                    *((p, 1.0) for p in (v.canonical, *v.synonyms)),
                    *((p, 0.9) for p in v.mishearings),
                ):
                    key = self._apply_aliases(normalize(phrase))
                    self._phrases.setdefault(tuple(key), _Phrase(slot.name, v.canonical, quality))
        self._max_len = max((len(k) for k in self._phrases), default=1)

        words: set[str] = {w for k in self._phrases for w in k}
        self._intent_words: dict[str, frozenset[str]] = {}
        self._examples: dict[str, list[_Example]] = {}
        for intent in domain.intents.values():
            vocab: set[str] = set()
            exs: list[_Example] = []
            for ex in intent.examples:
                toks = self._example_tokens(ex)
                vocab.update(toks)
                exs.append(_Example(frozenset(toks), sum(self._weight(t) for t in set(toks))))
            self._intent_words[intent.name] = frozenset(vocab)
            self._examples[intent.name] = exs
            words.update(t for t in vocab if not t.startswith("$"))
        self._known = frozenset(words) | frozenset(w for k in self._aliases for w in k)
        # Fuzzy targets: domain words long enough to be told apart, plus run-together
        # forms of multi-word phrases ("doubleshot") mapped back to their words.
        self._targets: dict[str, tuple[str, ...]] = {
            w: (w,) for w in words if len(w) >= 3 and w not in _FUNCTION
        }
        for phrase_key in self._phrases:
            if 2 <= len(phrase_key) <= 3:
                self._targets.setdefault("".join(phrase_key), phrase_key)
        self._target_list = list(self._targets)
        self._repair_cache: dict[str, tuple[tuple[str, ...], float]] = {}

    # ------------------------------------------------------------------ helpers
    def _example_tokens(self, example: str) -> list[str]:
        out: list[str] = []
        pos = 0
        for m in PLACEHOLDER.finditer(example):
            out += self._apply_aliases(normalize(example[pos : m.start()]))
            out.append("$" + m.group(1))
            pos = m.end()
        out += self._apply_aliases(normalize(example[pos:]))
        return out

    @staticmethod
    def _weight(token: str) -> float:
        if token.startswith("$"):
            return _SLOT_WEIGHT
        return _STOP_WEIGHT if token in _FUNCTION else 1.0

    def _apply_aliases(self, tokens: list[str]) -> list[str]:
        if not self._aliases:
            return tokens
        out: list[str] = []
        i = 0
        while i < len(tokens):
            for n in range(min(self._alias_max, len(tokens) - i), 0, -1):
                rep = self._aliases.get(tuple(tokens[i : i + n]))
                if rep is not None:
                    out.extend(rep)
                    i += n
                    break
            else:
                out.append(tokens[i])
                i += 1
        return out

    def _fuzzy(self, word: str) -> tuple[tuple[str, ...], float] | None:
        cached = self._repair_cache.get(word)
        if cached is not None:
            return cached if cached[1] > 0 else None
        cutoff = 80.0 if len(word) >= 5 else 85.0
        hit = process.extractOne(word, self._target_list, scorer=fuzz.ratio, score_cutoff=cutoff)
        result = (self._targets[hit[0]], hit[1] / 100.0) if hit else ((), 0.0)
        if len(self._repair_cache) < 4096:
            self._repair_cache[word] = result
        return result if hit else None

    def _repair(self, tokens: list[str]) -> tuple[list[str], list[float]]:
        """Replace unknown words by the domain words they most likely were."""
        out: list[str] = []
        quality: list[float] = []
        i = 0
        n = len(tokens)
        while i < n:
            tok = tokens[i]
            if tok in self._known or tok in _COMMON or len(tok) < 4:
                # A known or short word may still be half of a split unknown word.
                if i + 1 < n and tokens[i + 1] not in self._known and tok not in _FUNCTION:
                    joined = self._fuzzy(tok + tokens[i + 1])
                    if joined and joined[1] >= 0.88:
                        out.extend(joined[0])
                        quality.extend([joined[1]] * len(joined[0]))
                        i += 2
                        continue
                out.append(tok)
                quality.append(1.0)
                i += 1
                continue
            if i + 1 < n and tokens[i + 1] not in self._known:
                joined = self._fuzzy(tok + tokens[i + 1])
                if joined and joined[1] >= 0.88:
                    out.extend(joined[0])
                    quality.extend([joined[1]] * len(joined[0]))
                    i += 2
                    continue
            single = self._fuzzy(tok)
            glued = None if single else self._glued_article(tok)
            if single:
                out.extend(single[0])
                quality.extend([single[1]] * len(single[0]))
            elif glued:
                out.extend(glued[0])
                quality.extend([glued[1]] * len(glued[0]))
            else:
                out.append(tok)
                quality.append(1.0)
            i += 1
        return out, quality

    def _glued_article(self, tok: str) -> tuple[tuple[str, ...], float] | None:
        """Recognisers glue a short article to the next word ("alothe" for "a latte",
        "anamericano"): an unknown word whose rest is a domain word is the two words."""
        for article in ("an", "a"):
            rest = tok[len(article) :]
            if tok.startswith(article) and len(rest) >= 4:
                hit = self._fuzzy(rest)
                if hit:
                    return (article, *hit[0]), hit[1]
        return None

    def _spot(self, tokens: list[str]) -> list[tuple[int, int, _Phrase]]:
        """Best non-overlapping phrase cover: most words covered, then fewest phrases."""
        n = len(tokens)
        best: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (covered, -phrases) from i
        choice: list[int] = [0] * (n + 1)  # phrase length chosen at i (0 = skip word)
        for i in range(n - 1, -1, -1):
            cand = (best[i + 1][0], best[i + 1][1])
            pick = 0
            for length in range(1, min(self._max_len, n - i) + 1):
                if tuple(tokens[i : i + length]) in self._phrases:
                    nxt = best[i + length]
                    score = (nxt[0] + length, nxt[1] - 1)
                    if score > cand:
                        cand, pick = score, length
            best[i], choice[i] = cand, pick
        spans: list[tuple[int, int, _Phrase]] = []
        i = 0
        while i < n:
            length = choice[i]
            if length:
                spans.append((i, i + length, self._phrases[tuple(tokens[i : i + length])]))
                i += length
            else:
                i += 1
        return spans

    # ------------------------------------------------------------------ public
    def tokens(self, text: str) -> list[str]:
        """Normalised, alias-rewritten and repaired words of ``text`` (for debugging)."""
        return self._repair(self._apply_aliases(normalize(text)))[0]

    def understand(self, text: str) -> Understanding:
        tokens, quality = self._repair(self._apply_aliases(normalize(text)))
        if not tokens:
            return Understanding(None, {}, 0.0)
        spans = self._spot(tokens)
        slots: dict[str, str] = {}
        slot_quality: dict[str, float] = {}
        abstract: list[str] = []
        pos = 0
        for start, end, phrase in spans:
            abstract.extend(tokens[pos:start])
            abstract.append("$" + phrase.slot)
            # Last mention wins: people correct themselves ("a small, no, a large").
            slots[phrase.slot] = phrase.canonical
            slot_quality[phrase.slot] = phrase.quality * min(quality[start:end])
            pos = end
        abstract.extend(tokens[pos:])

        weights = [self._weight(t) for t in abstract]
        total = sum(weights)
        present = set(abstract)
        best_name: str | None = None
        best_score = 0.0
        for name, vocab in self._intent_words.items():
            explained = sum(w for t, w in zip(abstract, weights, strict=True) if t in vocab)
            precision = explained / total if total else 0.0
            recall = max(
                (sum(self._weight(t) for t in ex.tokens & present) / ex.total)
                for ex in self._examples[name]
            )
            score = 0.55 * precision + 0.45 * recall
            if score > best_score:
                best_name, best_score = name, score
        if best_name is None:
            return Understanding(None, {}, 0.0)
        intent = self.domain.intents[best_name]
        own = {k: v for k, v in slots.items() if k in intent.slots}
        if intent.slots and not own:
            # No slot evidence: one stray word that happens to occur in an example
            # ("go", "no") must not become an order.  Ask for two intent words at least.
            vocab = self._intent_words[best_name]
            if sum(1 for t in abstract if t in vocab) < 2:
                return Understanding(None, slots, 0.0)
        q = min((slot_quality[k] for k in own), default=1.0)
        confidence = round(best_score * (0.7 + 0.3 * q), 3)
        if confidence < self.min_confidence:
            return Understanding(None, slots, confidence)
        return Understanding(best_name, own, confidence)
