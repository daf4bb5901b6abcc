"""Voice-to-voice: the one rule every client measures a turn by.

``v2v = first audible reply sample at the client - reference end of speech``, both on the
client's own timeline, whose sample 0 is the first sample of the recording it sent:

* the reference end of speech is the last voiced sample of the clean recording
  (``halfsec.measure.end_of_speech``), never a pipeline event, so the time the pipeline
  takes to *notice* the end is inside the figure;
* the reply is what the client played, placed where it arrived (``PlaybackTimeline``),
  so network, buffering and playback queueing are inside the figure too;
* the clock stops at the first sample louder than ``AUDIBLE_DBFS``
  (``halfsec.measure.audible``) at or after the reply sample nearest the end of speech;
  a reply heard before that is premature and is not what answered the user.

The file runner (``halfsec run``), the bench's WebSocket/WebRTC/browser records and the
Pipecat harness all call :func:`voice_to_voice`; the browser page applies the same rule
on its audio clock with the constants it loads from ``/constants.js``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from halfsec import INTERNAL_RATE
from halfsec.measure.audible import AUDIBLE_DBFS, first_audible_sample
from halfsec.measure.stages import STAGES

__all__ = [
    "VoiceToVoice",
    "premature_replies",
    "reply_sample",
    "rule_constants",
    "voice_to_voice",
]


@dataclass(frozen=True, slots=True)
class VoiceToVoice:
    """One turn's measurement; ms are on the client timeline (0 = first sent sample)."""

    ref_end_ms: float
    """Reference end of speech."""
    first_audible_sample: int
    """Index of the first audible sample in the played reply audio."""
    first_audible_ms: float

    @property
    def v2v_ms(self) -> float:
        return self.first_audible_ms - self.ref_end_ms


def reply_sample(input_sample: int, rate: int, input_rate: int = INTERNAL_RATE) -> int:
    """The played-audio sample (at ``rate``) at the instant of input sample ``input_sample``:
    where the search for the first audible reply sample starts, and the line before which a
    reply counts as premature."""
    return int(round(input_sample * rate / input_rate))


def voice_to_voice(
    played: np.ndarray,
    rate: int,
    ref_end_sample: int,
    *,
    dbfs: float = AUDIBLE_DBFS,
    input_rate: int = INTERNAL_RATE,
) -> VoiceToVoice | None:
    """Measure one turn, or None when nothing audible was played after the end of speech.

    ``played``: int16 reply audio at ``rate`` on the client timeline;
    ``ref_end_sample``: one past the last voiced input sample, at ``input_rate``."""
    start = reply_sample(ref_end_sample, rate, input_rate)
    audible = first_audible_sample(played, dbfs, start=start)
    if audible is None:
        return None
    return VoiceToVoice(
        ref_end_ms=ref_end_sample * 1000.0 / input_rate,
        first_audible_sample=audible,
        first_audible_ms=audible * 1000.0 / rate,
    )


def premature_replies(
    played: np.ndarray,
    rate: int,
    first_samples: Iterable[int],
    ref_end_sample: int,
    *,
    dbfs: float = AUDIBLE_DBFS,
    input_rate: int = INTERNAL_RATE,
) -> int:
    """How many replies were *heard* before the end of speech: the same line and the same
    audibility test as :func:`voice_to_voice`, so a turn counts as premature exactly when
    the user could hear it over their own words.

    ``first_samples``: each reply turn's first played sample (at ``rate``).  A turn whose
    audio began before the line with a silent lead and became audible only after it was not
    heard early (the reference end can include a trailing breath the pipeline rightly
    treated as silence); counting its first sample instead would call it premature while
    its v2v is positive.  Why one function: the file runner and the bench's records both
    count this, and two spellings of one rule drift apart."""
    line = reply_sample(ref_end_sample, rate, input_rate)
    before = played[:line]
    return sum(
        1
        for s in first_samples
        if s < line and first_audible_sample(before, dbfs, start=s) is not None
    )


def rule_constants() -> dict[str, Any]:
    """The rule's parameters as the browser page needs them (served as ``/constants.js``)."""
    return {"audible_dbfs": AUDIBLE_DBFS, "stages": list(STAGES)}
