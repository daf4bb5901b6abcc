"""halfsec's engines behind the Wyoming protocol, so Home Assistant's Assist pipeline can
use them (``halfsec wyoming``).

Wyoming is JSON-lines events with binary payloads over TCP or a Unix socket; one
connection carries one request at a time:

* ``asr``: ``transcribe``, ``audio-start``, ``audio-chunk``... , ``audio-stop`` ->
  ``transcript``.  Home Assistant sends the whole command, silence around it included;
  the session's VAD (``wyoming_speech.SpeechGate``, the turn options of ``halfsec
  run``) passes on what a live turn's STT stream would get, as it arrives.  Like a live
  turn, the final is asked for at each pause (speculatively: speech that resumes drops
  it) and at ``audio-stop``, which the engine then answers from that pause's decode
  when nothing was said after it: Home Assistant ends the stream a while after the
  speech, so the transcript is ready or on its way when ``audio-stop`` comes.
* ``tts``: ``synthesize`` -> ``audio-start``, ``audio-chunk``..., ``audio-stop`` at the
  engine's own rate (16-bit mono).  Streaming text (``synthesize-start``,
  ``synthesize-chunk``..., ``synthesize-stop``) is cut into clauses with the logic
  stage's splitter and each clause is spoken as soon as it is complete, one
  ``audio-start``...``audio-stop`` per clause, then ``synthesize-stopped``.
* ``handle``: ``transcript`` -> ``handled`` (or ``not-handled`` when only the domain's
  fallback could answer) with the reply text, as the next turn of the conversation
  named by the transcript's ``context.conversation_id`` (Home Assistant's; without
  one, the connection is the conversation): "Large." answers "What size?"
  (``wyoming_dialogue``); ``intent``: ``recognize`` -> ``intent`` with the slots as
  entities, or ``not-recognized``, each utterance on its own.

Inference never blocks the event loop: the STT and TTS engines run it on their own
worker threads (their async APIs), and intent matching takes about a millisecond.  A
failing engine call answers an ``error`` event and the connection stays usable.

The protocol has no authentication, so the server binds loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe, Info
from wyoming.intent import Entity, Intent, NotRecognized, Recognize
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from halfsec import INTERNAL_RATE
from halfsec.audio.resample import StreamResampler
from halfsec.config import HalfsecConfig
from halfsec.errors import HalfsecError
from halfsec.logic.clauses import ClauseSplitter
from halfsec.runtime.engines import Engines
from halfsec.server.admission import is_loopback
from halfsec.server.wyoming_dialogue import CONVERSATION_ID, WyomingDialogues, conversation_id
from halfsec.server.wyoming_info import wyoming_info
from halfsec.server.wyoming_speech import SpeechGate
from halfsec.stt.engine import STTStream
from halfsec.stt.engine import Transcript as STTTranscript
from halfsec.turn.options import TurnOptions

log = logging.getLogger(__name__)

DEFAULT_URI = "tcp://127.0.0.1:10300"
"""10300 is the port Home Assistant's docs use for a Wyoming speech-to-text service."""

SAMPLES_PER_CHUNK = 1024
"""Reply audio per ``audio-chunk`` event (46 ms at Piper's 22.05 kHz), as wyoming-piper."""


def _retrieve(future: asyncio.Future[STTTranscript]) -> None:
    """A speculative final's error is the final's to report (``audio-stop`` asks again)."""
    if not future.cancelled():
        future.exception()


class WyomingError(HalfsecError):
    """The Wyoming service cannot start as asked (bad URI, unsafe bind)."""


@dataclass(frozen=True, slots=True)
class WyomingEndpoint:
    """Where to listen: ``tcp://HOST:PORT`` (port 0: any free port) or ``unix://PATH``."""

    uri: str
    host: str | None = None
    port: int = 0
    path: Path | None = None


def parse_uri(uri: str, allow_remote: bool = False) -> WyomingEndpoint:
    """Check ``uri`` before any model loads; a non-loopback host needs ``allow_remote``."""
    parsed = urlparse(uri)
    if parsed.scheme == "unix":
        if not parsed.path:
            raise WyomingError(f"{uri!r}: give a socket path, e.g. unix:///run/halfsec.sock")
        return WyomingEndpoint(uri, path=Path(parsed.path))
    if parsed.scheme != "tcp":
        raise WyomingError(f"{uri!r}: use tcp://HOST:PORT or unix://PATH")
    try:
        port = parsed.port
    except ValueError as e:
        raise WyomingError(f"{uri!r}: invalid port ({e})") from e
    if not parsed.hostname or port is None:
        raise WyomingError(f"{uri!r}: give a host and a port, e.g. {DEFAULT_URI}")
    if not is_loopback(parsed.hostname) and not allow_remote:
        raise WyomingError(
            f"refusing to listen on {parsed.hostname}: the Wyoming protocol has no "
            "authentication, so anyone who can reach the port could use the engines; "
            "pass --allow-remote if this network is trusted (e.g. Home Assistant on "
            "another host of your LAN)"
        )
    return WyomingEndpoint(uri, host=parsed.hostname, port=port)


class WyomingSession(AsyncEventHandler):
    """One client connection: its audio stream, its text stream, its replies."""

    def __init__(
        self,
        engines: Engines,
        info: Info,
        language: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        turn: TurnOptions | None = None,
        dialogues: WyomingDialogues | None = None,
        speculate: bool = True,
    ) -> None:
        super().__init__(reader, writer)
        self.engines = engines
        self.info_event = info.event()
        self.language = language
        self.turn_options = turn or TurnOptions()
        self._stt: STTStream | None = None
        self._gate: SpeechGate | None = None
        self.speculate = speculate
        self._speculative: asyncio.Future[STTTranscript] | None = None
        """The final asked for at the current pause (None: not paused, or ``speculate`` off)."""
        self.dialogues = dialogues if dialogues is not None else WyomingDialogues()
        self._own_conversation = f"connection-{id(self)}"
        """The conversation of ``transcript`` events that name none."""
        self._to_pcm16 = AudioChunkConverter(width=2, channels=1)
        self._resampler: StreamResampler | None = None
        self._audio_start = 0.0
        self._splitter: ClauseSplitter | None = None
        """Set between ``synthesize-start`` and ``synthesize-stop``."""

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._dispatch(event)
        except (ConnectionError, asyncio.IncompleteReadError):
            raise  # the client is gone: nothing to answer
        except Exception as e:  # one failed request must not end the connection
            log.warning("wyoming %s failed: %s: %s", event.type, type(e).__name__, e)
            self._close_stt()
            self._splitter = None
            await self.write_event(Error(text=str(e), code=type(e).__name__).event())
        return True

    async def _dispatch(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write_event(self.info_event)
        elif Transcribe.is_type(event.type):
            self._close_stt()  # a new request replaces an unfinished one
        elif AudioStart.is_type(event.type):
            self._start_audio(AudioStart.from_event(event))
        elif AudioChunk.is_type(event.type):
            self._feed(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            await self._transcribe()
        elif Synthesize.is_type(event.type):
            # Inside a text stream Home Assistant also sends the whole text, for servers
            # that cannot stream; speaking it too would say everything twice.
            if self._splitter is None:
                await self._speak(Synthesize.from_event(event).text, clause=False)
        elif SynthesizeStart.is_type(event.type):
            self._splitter = ClauseSplitter()
        elif SynthesizeChunk.is_type(event.type):
            await self._speak_clauses(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(event.type):
            await self._speak_clauses(None)
            self._splitter = None
            await self.write_event(SynthesizeStopped().event())
        elif Transcript.is_type(event.type):
            transcript = Transcript.from_event(event)
            await self._handle(transcript.text, conversation_id(transcript.context))
        elif Recognize.is_type(event.type):
            await self._recognize(Recognize.from_event(event).text)
        else:
            log.debug("wyoming: ignoring %s", event.type)

    # -- speech to text ----------------------------------------------------------------

    def _start_audio(self, start: AudioStart) -> None:
        self._close_stt()
        self._stt = self.engines.stt.open_stream()
        self._gate = SpeechGate(self.turn_options)
        self._resampler = StreamResampler(start.rate, INTERNAL_RATE)
        self._audio_start = time.perf_counter()

    def _feed(self, chunk: AudioChunk) -> None:
        if self._stt is None or self._resampler is None or self._gate is None:
            raise HalfsecError("audio-chunk before audio-start: send transcribe, audio-start first")
        if self._resampler.in_rate != chunk.rate:
            raise HalfsecError(
                f"audio-chunk at {chunk.rate} Hz inside a stream that started at "
                f"{self._resampler.in_rate} Hz"
            )
        pcm16 = self._to_pcm16.convert(chunk).audio
        pcm = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.int16)
        for frame in self._gate.feed(self._resampler.process(pcm)):
            self._stt.feed(frame)
        self._speculate()

    def _speculate(self) -> None:
        """At a pause, the final of the speech so far (as a live turn asks for it); once
        speech resumes, that final is stale and dropped (an abandoned Whisper decode
        gives its lane back)."""
        gate, stream = self._gate, self._stt
        if not self.speculate or gate is None or stream is None:
            return
        if gate.paused:
            if self._speculative is None:
                self._speculative = asyncio.ensure_future(stream.hypothesis(final=True))
                self._speculative.add_done_callback(_retrieve)
        elif self._speculative is not None:
            self._speculative.cancel()
            self._speculative = None

    async def _transcribe(self) -> None:
        stream, resampler, gate = self._stt, self._resampler, self._gate
        if stream is None or resampler is None or gate is None:
            raise HalfsecError("audio-stop without audio-start")
        try:
            for frame in gate.feed(resampler.process(np.zeros(0, np.int16), last=True)):
                stream.feed(frame)
            self._speculate()
            whole = gate.finish()
            if whole is not None:  # the VAD heard no speech: the command as sent
                stream.feed(whole)
            result = await stream.hypothesis(final=True)
        finally:
            self._close_stt()
        log.info(
            "wyoming asr: %.1f s of audio -> %r (%.0f ms after the first audio)",
            result.audio_ms / 1000,
            result.text,
            (time.perf_counter() - self._audio_start) * 1000,
        )
        await self.write_event(Transcript(text=result.text, language=self.language).event())

    def _close_stt(self) -> None:
        if self._speculative is not None:
            self._speculative.cancel()
            self._speculative = None
        if self._stt is not None:
            self._stt.close()
        self._stt = None
        self._gate = None
        self._resampler = None

    # -- text to speech ----------------------------------------------------------------

    async def _speak(self, text: str, clause: bool) -> None:
        """One ``audio-start``..``audio-stop`` for ``text``, streamed as it renders."""
        tts = self.engines.tts
        rate = tts.sample_rate
        await self.write_event(AudioStart(rate=rate, width=2, channels=1).event())
        samples = 0
        async for pcm in tts.synthesize(" ".join(text.split())):
            data = pcm.astype("<i2").tobytes()
            step = SAMPLES_PER_CHUNK * 2
            for i in range(0, len(data), step):
                chunk = AudioChunk(rate=rate, width=2, channels=1, audio=data[i : i + step])
                await self.write_event(chunk.event())
            samples += pcm.size
        await self.write_event(AudioStop().event())
        log.info("wyoming tts%s: %r -> %.2f s", " clause" if clause else "", text, samples / rate)

    async def _speak_clauses(self, delta: str | None) -> None:
        """Feed streamed text (``None``: its end) and speak each clause now complete."""
        if self._splitter is None:
            raise HalfsecError("synthesize-chunk or -stop without synthesize-start")
        clauses = self._splitter.feed(delta) if delta is not None else self._splitter.flush()
        for text in clauses:
            await self._speak(text, clause=True)

    # -- intents -----------------------------------------------------------------------

    async def _reply(self, text: str) -> tuple[str | None, dict[str, str], str, bool]:
        """(intent, slots, reply text, answered by more than the fallback)."""
        logic = self.engines.logic
        understanding = logic.understand(text)
        clauses = [c async for c in logic.reply(text, understanding)]
        reply = " ".join(c.text for c in clauses)
        answered = any(c.source != "fallback" for c in clauses)
        return understanding.intent, dict(understanding.slots), reply, answered

    async def _handle(self, text: str, cid: str | None) -> None:
        """The reply as the conversation's next turn; its state is kept once the reply
        is complete (a request that fails leaves the conversation as it was)."""
        key = cid or self._own_conversation
        turn = self.engines.logic.respond(text, self.dialogues.get(key))
        clauses = [c async for c in turn.clauses]
        reply = " ".join(c.text for c in clauses)
        self.dialogues.put(key, turn.remember(reply))
        intent = turn.understanding.intent
        log.info("wyoming handle: %r -> %s %r (conversation %s)", text, intent, reply, key)
        context = {CONVERSATION_ID: cid} if cid is not None else None
        if any(c.source != "fallback" for c in clauses):
            await self.write_event(Handled(text=reply, context=context).event())
        else:
            await self.write_event(NotHandled(text=reply, context=context).event())

    async def _recognize(self, text: str) -> None:
        intent, slots, reply, _answered = await self._reply(text)
        if intent is None:
            await self.write_event(NotRecognized(text=reply).event())
            return
        entities = [Entity(name=k, value=v) for k, v in slots.items()]
        await self.write_event(Intent(name=intent, entities=entities, text=reply).event())

    async def disconnect(self) -> None:
        self._close_stt()


class WyomingServer:
    """Accepts connections and gives each a ``WyomingSession`` over shared engines."""

    def __init__(self, engines: Engines, config: HalfsecConfig, endpoint: WyomingEndpoint):
        self.engines = engines
        self.endpoint = endpoint
        self.info = wyoming_info(engines, config)
        self.language = config.stt.language
        self.turn_options = config.turn
        self.speculate = config.session.speculate
        self.dialogues = WyomingDialogues()
        self._server: asyncio.Server | None = None
        self._sessions: dict[asyncio.Task[None], WyomingSession] = {}

    @property
    def uri(self) -> str:
        """Where it listens (the real port when asked for port 0)."""
        if self.endpoint.path is not None or self._server is None:
            return self.endpoint.uri
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"tcp://{host}:{port}"

    async def start(self) -> str:
        if self.endpoint.path is not None:
            self.endpoint.path.unlink(missing_ok=True)
            self._server = await asyncio.start_unix_server(
                self._connected, path=str(self.endpoint.path)
            )
        else:
            self._server = await asyncio.start_server(
                self._connected, host=self.endpoint.host, port=self.endpoint.port
            )
        return self.uri

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = WyomingSession(
            self.engines,
            self.info,
            self.language,
            reader,
            writer,
            turn=self.turn_options,
            dialogues=self.dialogues,
            speculate=self.speculate,
        )
        task = asyncio.current_task()
        assert task is not None
        self._sessions[task] = session
        try:
            await session.run()
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            log.info("wyoming client left: %s", e)
        finally:
            self._sessions.pop(task, None)

    async def stop(self) -> None:
        """Stop accepting, end every connection, and wait for their handlers."""
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions.values()):
            await session.stop()
        tasks = list(self._sessions)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if self.endpoint.path is not None:
            self.endpoint.path.unlink(missing_ok=True)
