"""Audio decoding, validation, resampling and framing on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from halfsec.audio.framing import Framer, frames_of
from halfsec.audio.io import load_audio, pcm16_from_bytes, to_pcm16
from halfsec.audio.resample import LowDelayResampler, StreamResampler, resample
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.errors import AudioInputError
from halfsec.measure.audible import first_audible_sample


def test_load_flac_16k(speech_dir: Path) -> None:
    pcm = load_audio(speech_dir / "audio" / "vctk_p225_001.flac")
    assert pcm.dtype == np.int16
    assert 1.5 * 16000 < pcm.size < 2.5 * 16000
    assert np.abs(pcm).max() > 3000


def test_any_rate_and_stereo_are_converted(tmp_path: Path, speech_dir: Path) -> None:
    pcm = load_audio(speech_dir / "audio" / "vctk_p225_001.flac")
    x44 = resample(pcm.astype(np.float32) / 32768, 16000, 44100)
    stereo = np.stack([x44, x44], axis=1)
    p = tmp_path / "stereo44.wav"
    sf.write(p, stereo, 44100, subtype="PCM_24")
    back = load_audio(p)
    assert abs(back.size - pcm.size) <= 2
    # Same signal after a round trip through 44.1 kHz stereo.
    n = min(back.size, pcm.size)
    corr = np.corrcoef(back[:n].astype(float), pcm[:n].astype(float))[0, 1]
    assert corr > 0.99


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "not a readable audio file"),
        (b"RIFF\x00\x00junkjunkjunk", "not a readable audio file"),
    ],
)
def test_junk_files_are_rejected_clearly(tmp_path: Path, content: bytes, match: str) -> None:
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioInputError, match=match):
        load_audio(p)


def test_missing_and_too_long(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    p = tmp_path / "long.wav"
    sf.write(p, np.zeros(16000 * 700, dtype=np.int16), 16000)
    with pytest.raises(AudioInputError, match="over the 120 s limit"):
        load_audio(p, max_seconds=120)


def test_non_finite_and_empty_rejected() -> None:
    with pytest.raises(AudioInputError, match="NaN or infinite"):
        to_pcm16(np.array([0.0, np.nan], dtype=np.float32), 16000)
    with pytest.raises(AudioInputError, match="no samples"):
        to_pcm16(np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioInputError, match="unsupported sample type"):
        to_pcm16(np.zeros(10, dtype=np.uint8), 16000)


def test_pcm_bytes_validation() -> None:
    assert pcm16_from_bytes(b"\x01\x00\x02\x00").tolist() == [1, 2]
    with pytest.raises(AudioInputError, match="odd length"):
        pcm16_from_bytes(b"\x01\x00\x02")
    with pytest.raises(AudioInputError, match="exceeds"):
        pcm16_from_bytes(b"\x00" * 100, max_bytes=50)


def test_stream_resampler_matches_whole_buffer(speech_dir: Path) -> None:
    pcm = load_audio(speech_dir / "audio" / "vctk_p225_001.flac")
    rs = StreamResampler(16000, 48000)
    parts = [rs.process(f) for f in frames_of(pcm)]
    parts.append(rs.process(np.zeros(0, dtype=np.int16), last=True))
    streamed = np.concatenate(parts)
    assert abs(streamed.size - pcm.size * 3) <= 3 * 320


def test_framer_keeps_remainder() -> None:
    fr = Framer(320)
    out = list(fr.push(np.arange(700, dtype=np.int16)))
    assert [f.size for f in out] == [320, 320] and fr.pending == 60
    out = list(fr.push(np.arange(260, dtype=np.int16)))
    assert len(out) == 1 and out[0][0] == 640


def test_timeline_places_audio_at_arrival_and_stops() -> None:
    tl = PlaybackTimeline(16000, t0_ns=0)
    tone = (np.ones(1600) * 10000).astype(np.int16)  # 100 ms
    assert tl.place(tone, t_ns=500_000_000, turn_id=1) == 8000
    assert tl.place(tone, t_ns=500_000_000, turn_id=1) == 9600  # queued behind the first
    tl.stop(550_000_000)
    audio = tl.audio()
    assert audio.size == 8800 and first_audible_sample(audio) == 8000


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 16000])
def test_the_aligning_lead_completes_each_frame_with_its_own_chunk(rate: int) -> None:
    """A client's k-th 20 ms chunk completes the session's k-th 20 ms frame once the lead
    is in front (and not a whole frame more); without it each frame lacks the lookahead
    until the next chunk, 20 ms later (calls' frames were late by that)."""
    chunk = rate // 50
    noise = (np.random.default_rng(1).standard_normal(chunk * 10) * 3000).astype(np.int16)
    with_lead = LowDelayResampler(rate, 16_000, quality="HQ", aligned=True)
    bare = LowDelayResampler(rate, 16_000, quality="HQ")
    got = got_bare = 0
    for k in range(1, 11):
        piece = noise[(k - 1) * chunk : k * chunk]
        got += with_lead.process(piece).size
        got_bare += bare.process(piece).size
        assert k * 320 <= got < (k + 1) * 320, (rate, k, got)
        if rate != 16_000:
            assert got_bare < k * 320, "without the lead the frame waits for the next chunk"
    assert (with_lead.aligning_lead().size == 0) == (rate == 16_000)
