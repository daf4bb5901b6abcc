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
4. slot spotting -- phrase lookup on the repaired words, choosing the set of
   non-overlapping phrases that covers most words with the fewest phrases (dynamic
   programming), so "a little bit of skim milk" beats "milk" and "medium roast"
   beats the size "medium".  Besides exact phrases, a phrase matches with ONE word
   misheard when its other words are there exactly and include a content word (the
   anchor): "a bit of home milk" is "a bit of whole milk", "double, short" is "double
   shot".  The anchor is what makes this safe where single-word repair is not: "home"
   alone never becomes "whole".  Phrases opening with the article "a" also match with
   "the" ("over the lot of sugar"): recognisers swap unstressed articles.
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
# One-word-off phrase matches (step 4): the misheard word must be this close to the
# phrase's word (rapidfuzz ratio, 0-1), at least this long, and a content word.
# Chosen on one half of the shared coffee orders' Whisper transcripts, checked on the
# other half, retail and Piper orders (benchmarks/nlu_bench.py): no correct order
# became wrong at 0.65; "horn milk" (0.44 to "whole") stays unmatched.  A word that
# is a slot value on its own ("short", "iced", "eight") is overridden only on stronger
# evidence: "double short" is "double shot" (0.89), "large iced" stays iced (0.67 to
# "large sized") and retail's "eight bulbs" stays eight (0.8 to "light bulbs").
ANCHORED_MIN_RATIO = 0.65
ANCHORED_OVERRIDE_RATIO = 0.85
_ANCHORED_MIN_CHARS = 3
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

    def __init__(
        self,
        domain: Domain,
        *,
        min_confidence: float = 0.5,
        anchored_min_ratio: float | None = ANCHORED_MIN_RATIO,
    ) -> None:
        """``anchored_min_ratio``: see :data:`ANCHORED_MIN_RATIO`; ``None`` turns the
        one-word-off phrase matches and article variants off (exact phrases only)."""
        self.domain = domain
        self.min_confidence = min_confidence
        self.anchored_min_ratio = anchored_min_ratio
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
        self._anchored: dict[tuple[str, ...], list[tuple[int, tuple[str, ...]]]] = {}
        if anchored_min_ratio is not None:
            self._add_near_phrases()
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
    def _add_near_phrases(self) -> None:
        """Article variants ("the lot of sugar") as listed mishearings, and the index
        of one-word-off matches: each phrase with one content word blanked out, kept
        when another content word stays to anchor it."""
        for key, phrase in list(self._phrases.items()):
            if len(key) >= 3 and key[0] == "a":
                variant = ("the", *key[1:])
                self._phrases.setdefault(variant, _Phrase(phrase.slot, phrase.canonical, 0.9))
        for key, phrase in self._phrases.items():
            content = [j for j, w in enumerate(key) if w not in _FUNCTION]
            if phrase.quality < 1.0 or len(key) < 2 or len(content) < 2:
                continue
            for j in content:
                if len(key[j]) >= _ANCHORED_MIN_CHARS:
                    blank = (*key[:j], "", *key[j + 1 :])
                    self._anchored.setdefault(blank, []).append((j, key))

    def _near(self, window: tuple[str, ...]) -> tuple[tuple[str, ...], float] | None:
        """The phrase ``window`` is with one content word misheard, and how close that
        word is (0-1); None when no phrase is close enough or two are equally close."""
        threshold = self.anchored_min_ratio
        if threshold is None:
            return None
        best: tuple[tuple[str, ...], float] | None = None
        tie = False
        for j, word in enumerate(window):
            if word in _FUNCTION or len(word) < _ANCHORED_MIN_CHARS:
                continue
            need = ANCHORED_OVERRIDE_RATIO if (word,) in self._phrases else threshold
            for _, key in self._anchored.get((*window[:j], "", *window[j + 1 :]), ()):
                ratio = fuzz.ratio(word, key[j]) / 100.0
                if ratio < need:
                    continue
                if best is None or ratio > best[1]:
                    best, tie = (key, ratio), False
                elif ratio == best[1] and self._phrases[key] != self._phrases[best[0]]:
                    tie = True
        return None if tie else best

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

    def _spot(self, tokens: list[str]) -> list[tuple[int, int, _Phrase, float]]:
        """Best non-overlapping phrase cover: most words covered, then fewest phrases,
        then fewest one-word-off matches.  Spans carry the match quality (1.0 exact)."""
        n = len(tokens)
        best: list[tuple[int, int, int]] = [(0, 0, 0)] * (n + 1)  # (covered, -phrases, -near)
        choice: list[tuple[int, tuple[str, ...], float]] = [(0, (), 1.0)] * (n + 1)
        for i in range(n - 1, -1, -1):
            cand = best[i + 1]
            pick: tuple[int, tuple[str, ...], float] = (0, (), 1.0)
            for length in range(1, min(self._max_len, n - i) + 1):
                window = tuple(tokens[i : i + length])
                near = 0
                if window in self._phrases:
                    key, quality = window, 1.0
                elif length >= 2 and self._anchored:
                    hit = self._near(window)
                    if hit is None:
                        continue
                    (key, quality), near = hit, 1
                else:
                    continue
                nxt = best[i + length]
                score = (nxt[0] + length, nxt[1] - 1, nxt[2] - near)
                if score > cand:
                    cand, pick = score, (length, key, quality)
            best[i], choice[i] = cand, pick
        spans: list[tuple[int, int, _Phrase, float]] = []
        i = 0
        while i < n:
            length, key, quality = choice[i]
            if length:
                spans.append((i, i + length, self._phrases[key], quality))
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
        for start, end, phrase, near in spans:
            abstract.extend(tokens[pos:start])
            abstract.append("$" + phrase.slot)
            # Last mention wins: people correct themselves ("a small, no, a large").
            slots[phrase.slot] = phrase.canonical
            slot_quality[phrase.slot] = phrase.quality * near * min(quality[start:end])
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
