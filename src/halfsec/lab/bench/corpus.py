"""What the bench plays: a manifest, a folder of recordings, or the built-in corpus.

A manifest is a TSV with a ``file`` column (relative to the manifest) and optional
``transcript``, ``intent``, ``slots`` (``k=v;k=v``) and ``domain`` columns.  Columns the
lab does not know produce a warning that names them (a typo like ``intnet`` must not
silently drop every label), never a crash.  Unreadable audio is *not* checked here: the
item is loaded when its turn comes, so one bad file fails one turn and the run goes on.

Without a corpus the bench plays the built-in one (``builtin_corpus``), synthesized once.
``--domain`` picks recordings by their ``domain`` label, or, where a manifest has none,
by their labelled intent (``filter_domain``).
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from halfsec.errors import HalfsecError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
KNOWN_COLUMNS = frozenset(
    {"file", "transcript", "intent", "slots", "domain"}
    # Descriptive columns of ../shared/speech/manifest.tsv: known, not used.
    | {"duration_s", "speaker", "source", "license"}
)


class CorpusError(HalfsecError):
    """The corpus itself (not one recording) cannot be used."""


@dataclass(frozen=True, slots=True)
class CorpusItem:
    path: Path
    transcript: str | None = None
    intent: str | None = None
    slots: dict[str, str] = field(default_factory=dict)
    domain: str | None = None

    @property
    def stem(self) -> str:
        return self.path.stem


@dataclass
class Corpus:
    items: list[CorpusItem]
    source: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def domains(self) -> list[str | None]:
        seen: dict[str | None, None] = {}
        for it in self.items:
            seen.setdefault(it.domain, None)
        return list(seen)


def parse_slots(text: str | None) -> dict[str, str]:
    """``size=large;coffeeDrink=latte`` -> dict; empty or None -> {}."""
    out: dict[str, str] = {}
    for part in (text or "").split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            if k.strip():
                out[k.strip()] = v.strip()
    return out


def format_slots(slots: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in slots.items())


def load_manifest(path: Path) -> Corpus:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except OSError as e:
        raise CorpusError(f"cannot read manifest {path}: {e}") from e
    if "file" not in columns:
        raise CorpusError(
            f"{path}: no 'file' column (columns: {', '.join(columns) or 'none'}); a manifest "
            "is a TSV whose header has file[, transcript, intent, slots, domain]"
        )
    warnings: list[str] = []
    unknown = [c for c in columns if c not in KNOWN_COLUMNS]
    if unknown:
        warnings.append(
            f"{path.name}: ignoring unknown column(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(KNOWN_COLUMNS))})"
        )
    items: list[CorpusItem] = []
    for i, r in enumerate(rows, start=2):
        file = (r.get("file") or "").strip()
        if not file:
            warnings.append(f"{path.name}:{i}: empty 'file', row skipped")
            continue
        items.append(
            CorpusItem(
                path=(path.parent / file),
                transcript=(r.get("transcript") or "").strip() or None,
                intent=(r.get("intent") or "").strip() or None,
                slots=parse_slots(r.get("slots")),
                domain=(r.get("domain") or "").strip() or None,
            )
        )
    return Corpus(items, path, warnings)


def load_corpus(path: Path) -> Corpus:
    """A manifest file, or a folder (its ``manifest.tsv`` if present, else its audio)."""
    if path.is_dir():
        if (path / "manifest.tsv").is_file():
            return load_manifest(path / "manifest.tsv")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise CorpusError(
                f"{path} has no manifest.tsv and no audio files ({', '.join(AUDIO_EXTENSIONS)})"
            )
        return Corpus([CorpusItem(p) for p in files], path)
    if not path.exists():
        raise CorpusError(f"corpus {path} does not exist; pass a manifest.tsv or a folder")
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        return Corpus([CorpusItem(path)], path)
    return load_manifest(path)


def filter_domain(
    items: Iterable[CorpusItem], domain: str | None, intents: Collection[str] | None = None
) -> list[CorpusItem]:
    """The recordings of ``domain`` (None or ``all``: every one).

    A recording labelled with a domain belongs to that domain only.  One without a
    domain label (a manifest with no ``domain`` column, like ../shared/speech's) belongs
    to ``domain`` when its labelled intent is one of ``intents``, the intents the
    domain's definition understands (``logic.domain``; the caller passes them, the lab
    imports no logic); it comes back labelled with ``domain``, so the server started for
    it runs that domain.  A recording with neither label is no domain's.  Selecting
    nothing is a ``CorpusError`` that says which label to add."""
    items = list(items)
    if domain is None or domain == "all":
        return items
    known = set(intents) if intents is not None else None
    out = [
        it if it.domain is not None else replace(it, domain=domain)
        for it in items
        if it.domain == domain or (it.domain is None and known is not None and it.intent in known)
    ]
    if out or not items:
        return out
    domains = sorted({it.domain for it in items if it.domain is not None})
    if domains:
        raise CorpusError(
            f"no recording of domain {domain!r}: the corpus's domain labels are "
            f"{', '.join(domains)}; pass one of them to --domain"
        )
    if known is None:
        raise CorpusError(
            f"the corpus has no domain labels and the intents of domain {domain!r} are "
            "unknown: add a 'domain' column to the manifest, or pass --domain with a "
            "packaged domain (coffee, retail), whose intents pick the rows"
        )
    labelled = sorted({it.intent for it in items if it.intent is not None})
    raise CorpusError(
        f"none of the {len(items)} recordings is labelled with domain {domain!r} or one of "
        f"its intents ({', '.join(sorted(known)) or 'none'}); the corpus's intents: "
        f"{', '.join(labelled) or 'none'}.  Add a 'domain' column (or intent labels) to the "
        "manifest, or run without --domain"
    )
