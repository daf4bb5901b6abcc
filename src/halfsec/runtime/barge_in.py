"""Barge-in as people expect it: the reply pauses at once, then resumes or stops.

Cancelling a reply the moment speech is detected has two faults.  It is slow to stop, if
the detector first waits for enough speech to be sure it is a turn (``min_speech_ms``
plus Silero's rise); and it is wrong for backchannels: "uh-huh", "yeah", "okay" said
while the agent talks mean "go on", and a cough or a door is not a turn at all.

So, like LiveKit Agents' false-interruption handling (``resume_false_interruption``),
speech during a reply first only *pauses* it, at the first VAD window voiced above the
speech threshold (32 ms of audio) or, sooner, at the first 10 ms whose energy jumps out
of the input's noise floor (``EnergyOnset``: the "s" of "stop" or "sorry" comes 100-200
ms before Silero hears a vowel), and the decision comes when there is evidence:

* the sound stops again before a turn even starts (a click, a breath): resume
  (``noise``).  A pause that energy alone started is kept until the VAD has had its say:
  ``ENERGY_HOLD_MS`` after the last loud frame, not ``NOISE_GAP_MS``, since the "s" of
  "stop" is followed by 100-150 ms of closure before the vowel Silero hears (resuming
  there and pausing again at the vowel let the reply sound between the two).  Energy
  that no voiced window joins within ``ENERGY_ONLY_MAX_MS`` (a hum, residual echo)
  resumes too (the bound of that hold), and only then does energy no longer pause that
  reply (``hum``; the VAD still does): a click must not make the next interruption wait
  for the VAD;
* the speech goes on for ``interrupt_min_speech_ms``: no backchannel is that long, the
  reply is cancelled (an interruption) and the speech is a turn like any other;
* the speech ends sooner: its transcript decides (``classify``).  Backchannel words
  only (or nothing at all) resume the reply (``backchannel``); a cue of a real
  interruption ("wait", "no", "stop", "actually", "can I", ...), three words or more, or
  anything the domain understands ("large", "oat milk": an answer to the reply) interrupt
  it.  One or two words that are none of these resume it (``unclear``): Whisper tiny
  writes hums as words ("mm-hmm" -> "and mama", "in turn"), and stopping the agent for
  a sound it could not read costs more than going on -- unless the sound began with
  ``UNVOICED_LEAD_MS`` of loud, unvoiced sound before Silero heard a voiced window (the
  "s" and closure of "stop", misread "start,"): a hum is voiced from its first sound.  When the transcript does not come
  within ``backchannel_wait_ms``, the reply resumes (``timeout``; LiveKit's
  ``false_interruption_timeout``).

Unlike LiveKit, which waits ``min_interruption_duration`` of speech before deciding and
then for its timeout before resuming, the decision here waits for the short speech's
own final transcript (the session's speculative STT runs at its pause anyway), so a
backchannel costs the listener about its own length plus one final decode of silence.
Pipecat's ``MinWordsInterruptionStrategy`` keeps the bot talking over the user until
enough words are transcribed; pausing first is what lets the stop be fast *and* the
decision be right.

While the decision is pending, the frames of the speech's own turn (``vad.*``, partial
transcripts) are held here and released only if it is an interruption: a backchannel
never becomes a turn anyone sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from halfsec import FRAME_MS
from halfsec.clock import now_ns
from halfsec.frames import Frame, ReplyResumed
from halfsec.runtime.options import SessionOptions

BACKCHANNEL_WORDS = frozenset(
    {
        "uh",
        "huh",
        "uhhuh",
        "um",
        "hm",
        "hmm",
        "mm",
        "mhm",
        "mmhmm",
        "mmm",
        "hmhm",
        "ah",
        "oh",
        "okay",
        "ok",
        "yeah",
        "yep",
        "yup",
        "yes",
        "right",
        "sure",
        "alright",
        "aha",
        "i",
        "see",
        "got",
        "it",
        "cool",
        "nice",
        "great",
        "good",
    }
)
"""Words of listener feedback ("uh-huh", "mm-hmm", "yeah", "okay", "right", "I see",
"got it").  A transcript of only these (any number, any punctuation) is a backchannel;
one other word ("wait", "no", "stop", "but") makes it an interruption."""

INTERRUPT_CUES = frozenset(
    {
        "stop",
        "wait",
        "no",
        "nope",
        "not",
        "now",
        "hold",
        "hang",
        "sorry",
        "actually",
        "but",
        "excuse",
        "hey",
        "what",
        "change",
        "cancel",
        "instead",
        "want",
        "like",
        "need",
        "can",
        "could",
        "would",
        "please",
        "again",
        "repeat",
        "help",
    }
)
"""Words that make short speech during a reply an interruption however short ("no",
"wait", "hold on", "can I ...").  "now" is here because Whisper tiny hears a clipped
"no" as "now"."""

ONSET_ABOVE_FLOOR_DB = 15.0
"""A 10 ms level this far above the input's noise floor may be speech starting."""
ONSET_MIN_DBFS = -50.0
"""...and never below this level (digital silence has no useful floor); both 10 ms halves
of a 20 ms frame must be this loud, so a lone click or the step from digital silence
to a recording's own noise floor does not pause the reply."""
ENERGY_ONLY_MAX_MS = 400.0
"""A pause that only energy holds (no voiced VAD window) resumes after this long: the
bound of ``ENERGY_HOLD_MS``'s hold for a sound that stays loud but never sounds voiced."""
ENERGY_HOLD_MS = 200.0
"""A pause no voiced VAD window has joined yet resumes only once the sound has been gone
this long.  Silero hears the vowel, not the fricative or the stop before it: in "stop"
the "s" pauses the reply and 100-150 ms of closure follow before the first voiced
window (the longest such gap in the 186 shared recordings and the bench's clips, VAD
start included, is 140 ms; one "up" after a 360 ms click is the exception)."""

UNVOICED_LEAD_MS = 120.0
"""Short speech whose transcript is ``unclear`` interrupts when energy paused the reply
this long before the first voiced VAD window: it began with a long unvoiced consonant
("s", "st", "f"), which no hum does.  Measured from the energy onset to Silero's first
voiced window on the 186 shared recordings and the bench's clips: every backchannel
under 100 ms (voiced from the start: "mm", "yeah", "right", "okay"), a person's "stop"
180-220 ms."""

DECIDE_SILENCE_MS = 200.0
"""Short speech is judged only once it has been over this long (the end-of-turn
window, ``turn.silence_ms``): a dip inside "hold on" is a VAD pause too, and the
transcript of its first half ("", "Hold") must not decide for the whole."""

NOISE_GAP_MS = 96.0
"""A pause that voiced VAD windows held but no turn followed ends after this long
without a voiced window (three Silero windows): the sound was too short to be speech."""

_WORD = re.compile(r"[a-z']+")
_REPEAT = re.compile(r"(.)\1+")


def _squash(word: str) -> str:
    """One spelling for hums however STT writes them: "mm-mm", "mmm", "mm-hmm" and
    "mhm" become "m", "m", "mhm", "mhm" (repeated letters collapsed, hyphens gone)."""
    return _REPEAT.sub(r"\1", word.replace("-", "").strip("'"))


_SQUASHED = frozenset(_squash(w) for w in BACKCHANNEL_WORDS)


def classify(text: str, understood: Callable[[str], bool] | None = None) -> str:
    """``backchannel``, ``interrupt`` or ``unclear`` for short speech's transcript;
    ``understood(text)``: does the domain make sense of it (``LogicEngine.understand``)."""
    if is_backchannel(text):
        return "backchannel"
    words = _WORD.findall(text.lower())
    if len(words) >= 3 or any(w.strip("'") in INTERRUPT_CUES for w in words):
        return "interrupt"
    if understood is not None and understood(text):
        return "interrupt"
    return "unclear"


def is_backchannel(text: str) -> bool:
    """Whether ``text`` says nothing but listener feedback (empty text included: STT
    heard no words in what the VAD took for speech)."""
    words = _WORD.findall(text.lower().replace("-", ""))
    return all(_squash(w) in _SQUASHED for w in words)


class EnergyOnset:
    """Is this 20 ms frame louder than the noise floor, as speech starting would be?

    The floor falls fast and rises slowly (speech must not lift it), like the turn
    detector's; it is only updated by frames that are not loud."""

    def __init__(self) -> None:
        self.floor_db = -70.0

    def loud(self, frame: np.ndarray) -> bool:
        half = frame.size // 2
        x = frame.astype(np.float32) / 32768.0
        db = min(
            10.0 * float(np.log10(max(float(np.mean(p * p)), 1e-12))) for p in (x[:half], x[half:])
        )
        if db >= max(self.floor_db + ONSET_ABOVE_FLOOR_DB, ONSET_MIN_DBFS):
            return True
        if db < self.floor_db:
            self.floor_db = 0.7 * self.floor_db + 0.3 * db
        else:
            self.floor_db += 0.02 * (db - self.floor_db)
        return False


class PausedReply:
    """One pause of one reply, from the first voiced window to its decision."""

    def __init__(self, reply_turn_id: int, audio_ms: float) -> None:
        self.reply_turn_id = reply_turn_id
        self.audio_ms = audio_ms
        self.since_ns = now_ns()
        self.last_voiced_ms = audio_ms
        self.voiced_seen = False
        """A voiced VAD window came (else only energy holds the pause)."""
        self.first_voiced_ms: float | None = None
        """Where the first voiced VAD window came (None: none yet)."""
        self.candidate: int | None = None
        """The turn the speech became (None: no turn started yet)."""
        self.speech_ms = 0.0
        """The candidate turn's speech so far (frames in the speech state)."""
        self.held: list[Frame] = []
        self.hum = False
        """Resumed because energy alone held it for ``ENERGY_ONLY_MAX_MS`` and the sound
        is still there: a steady sound that is no speech (a hum, echo), so energy should
        no longer pause this reply."""

    @property
    def paused_ms(self) -> float:
        return (now_ns() - self.since_ns) / 1e6

    def verdict(
        self,
        in_turn: bool,
        speaking: bool,
        voiced: bool,
        pos_ms: float,
        transcript: str | None,
        silence_ms: float,
        opt: SessionOptions,
        understood: Callable[[str], bool] | None = None,
        loud: bool = False,
    ) -> str | None:
        """This frame's decision: ``interrupt``, a resume reason, or None (not yet).
        ``in_turn``: the speech became the candidate turn, ``speaking``: it is still
        going on, ``voiced``: the latest VAD window is speech, ``loud``: the frame's
        energy is (``EnergyOnset``), ``transcript``: the final transcript of the
        candidate's speech once there is one."""
        if not in_turn:
            return self.before_turn(voiced, pos_ms, loud)
        if speaking:
            return self.during_speech(opt.interrupt_min_speech_ms)
        return self.after_speech(transcript, silence_ms, opt.backchannel_wait_ms, understood)

    def resumed(self, reason: str, text: str) -> ReplyResumed:
        """The frame that ends this pause with a resume."""
        return ReplyResumed(
            turn_id=self.reply_turn_id, paused_ms=self.paused_ms, reason=reason, text=text
        )

    def hold(self, frame: Frame) -> bool:
        """Keep ``frame`` back if it belongs to the candidate turn; True if kept."""
        if self.candidate is not None and frame.turn_id == self.candidate:
            self.held.append(frame)
            return True
        return False

    def before_turn(self, voiced: bool, pos_ms: float, loud: bool = False) -> str | None:
        """No turn has started yet: ``noise`` once the sound has been gone long enough
        (``NOISE_GAP_MS`` after a voiced window, ``ENERGY_HOLD_MS`` while only energy
        has been heard), or when only energy has held the pause for
        ``ENERGY_ONLY_MAX_MS`` (``hum``)."""
        self.voiced_seen = self.voiced_seen or voiced
        if voiced and self.first_voiced_ms is None:
            self.first_voiced_ms = pos_ms
        if voiced or loud:
            self.last_voiced_ms = pos_ms
        if not self.voiced_seen and pos_ms - self.audio_ms >= ENERGY_ONLY_MAX_MS:
            self.hum = pos_ms - self.last_voiced_ms < NOISE_GAP_MS  # still sounding
            return "noise"
        if voiced or loud:
            return None
        gap = NOISE_GAP_MS if self.voiced_seen else ENERGY_HOLD_MS
        return "noise" if pos_ms - self.last_voiced_ms >= gap else None

    def during_speech(self, interrupt_min_speech_ms: float) -> str | None:
        """One more frame of the candidate's speech: ``interrupt`` once it is too long
        for a backchannel."""
        self.speech_ms += FRAME_MS
        return "interrupt" if self.speech_ms >= interrupt_min_speech_ms else None

    @property
    def unvoiced_lead_ms(self) -> float:
        """From the pause (energy's onset) to the first voiced VAD window; 0 if none."""
        if self.first_voiced_ms is None:
            return 0.0
        return self.first_voiced_ms - self.audio_ms

    def after_speech(
        self,
        transcript: str | None,
        silence_ms: float,
        wait_ms: float,
        understood: Callable[[str], bool] | None = None,
    ) -> str | None:
        """The candidate's speech ended ``silence_ms`` ago: its transcript decides."""
        if silence_ms < DECIDE_SILENCE_MS:
            return None
        if transcript is None:
            return "timeout" if silence_ms >= wait_ms else None
        if not transcript.strip():
            return "noise"
        verdict = classify(transcript, understood)
        if verdict == "unclear" and self.unvoiced_lead_ms >= UNVOICED_LEAD_MS:
            return "interrupt"  # no hum: it began with a long unvoiced consonant
        return verdict
