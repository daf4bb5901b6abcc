"""Opus transport codec on real speech: round trip, PLC, FEC, malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from halfsec import FRAME_SAMPLES
from halfsec.errors import AudioInputError
from halfsec.wire.opus import FrameResampler, OpusDecoder, OpusEncoder

FILES = [
    "audio/vctk_p225_002.flac",
    "audio/ljspeech_LJ001-0001.flac",
    "audio/librispeech_1272-128104-0000.flac",
]


def load(speech_dir: Path, name: str) -> np.ndarray:
    pcm, rate = sf.read(speech_dir / name, dtype="int16")
    assert rate == 16000
    return np.asarray(pcm)


def frames_of(pcm: np.ndarray, n: int = FRAME_SAMPLES) -> list[np.ndarray]:
    return [pcm[i * n : (i + 1) * n] for i in range(pcm.size // n)]


def aligned_corr(ref: np.ndarray, out: np.ndarray, max_lag: int = 800) -> tuple[float, int]:
    """Best normalised correlation of ``out`` against ``ref`` over codec delays."""
    x = ref.astype(np.float64)
    y = out.astype(np.float64)
    n = min(x.size, y.size) - max_lag
    best, lag = -1.0, 0
    for k in range(max_lag):
        a, b = x[:n], y[k : k + n]
        c = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))
        if c > best:
            best, lag = c, k
    return best, lag


def log_spec(a: np.ndarray) -> np.ndarray:
    return np.log10(np.abs(np.fft.rfft(a.astype(np.float64) * np.hanning(a.size))) + 1.0)


def test_one_packet_per_frame_and_round_trip_16k(speech_dir: Path) -> None:
    pcm = load(speech_dir, FILES[0])
    enc, dec = OpusEncoder(16000), OpusDecoder(16000)
    packets = [enc.encode(f) for f in frames_of(pcm)]
    assert all(20 <= len(p) <= 200 for p in packets), [len(p) for p in packets[:10]]
    out = np.concatenate([dec.decode(p) for p in packets])
    assert out.size == len(packets) * FRAME_SAMPLES
    corr, lag = aligned_corr(pcm, out)
    # libopus's look-ahead is 6.5 ms (104 samples at 16 kHz); waveform stays faithful.
    assert 90 <= lag <= 120
    assert corr > 0.9, corr


def test_round_trip_via_48k_with_resampling_helpers(speech_dir: Path) -> None:
    pcm = load(speech_dir, FILES[1])
    up = FrameResampler(16000, 48000)
    enc = OpusEncoder(48000)
    packets: list[bytes] = []
    chunks = frames_of(pcm)
    for i, f in enumerate(chunks):
        packets += [enc.encode(x) for x in up.push(f, last=i == len(chunks) - 1)]
    assert abs(len(packets) - len(chunks)) <= 1
    dec = OpusDecoder(48000)
    down = FrameResampler(48000, 16000)
    out: list[np.ndarray] = []
    for i, p in enumerate(packets):
        out += down.push(dec.decode(p), last=i == len(packets) - 1)
    assert all(f.size == FRAME_SAMPLES for f in out)
    corr, _ = aligned_corr(pcm, np.concatenate(out), max_lag=1600)
    assert corr > 0.85, corr


async def test_round_trip_keeps_whisper_transcript(speech_dir: Path, rows: list[dict[str, str]]):
    from halfsec.measure.wer import word_errors
    from halfsec.stt.factory import create_stt
    from halfsec.stt.options import STTOptions

    engine = create_stt(STTOptions())
    transcripts = {r["file"]: r["transcript"] for r in rows}
    clean_err = coded_err = words = 0
    for name in FILES[:2]:
        pcm = load(speech_dir, name)
        enc, dec = OpusEncoder(16000, bitrate=24000), OpusDecoder(16000)
        coded = np.concatenate([dec.decode(enc.encode(f)) for f in frames_of(pcm)])
        hyps = []
        for audio in (pcm, coded):
            stream = engine.open_stream()
            for f in frames_of(audio):
                stream.feed(f)
            hyps.append((await stream.hypothesis(final=True)).text)
            stream.close()
        e0, n = word_errors(transcripts[name], hyps[0])
        e1, _ = word_errors(transcripts[name], hyps[1])
        clean_err, coded_err, words = clean_err + e0, coded_err + e1, words + n
    assert words > 10
    assert coded_err <= clean_err + 1, (clean_err, coded_err, words)


def _decoded_prefix(packets: list[bytes], k: int) -> OpusDecoder:
    dec = OpusDecoder(16000)
    for p in packets[:k]:
        dec.decode(p)
    return dec


def test_plc_frame_is_neither_silence_nor_a_click(speech_dir: Path) -> None:
    pcm = load(speech_dir, FILES[2])
    enc = OpusEncoder(16000)
    packets = [enc.encode(f) for f in frames_of(pcm)]
    ref = OpusDecoder(16000)
    decoded = [ref.decode(p) for p in packets]
    voiced = [
        k
        for k in range(20, len(packets) - 1)
        if np.sqrt(np.mean(decoded[k].astype(float) ** 2)) > 1000
    ]
    assert len(voiced) > 20
    for k in voiced[:: max(1, len(voiced) // 15)]:
        dec = _decoded_prefix(packets, k)
        plc = dec.conceal()
        assert plc.size == FRAME_SAMPLES
        prev = decoded[k - 1].astype(np.float64)
        rms_prev = np.sqrt(np.mean(prev**2))
        rms_plc = np.sqrt(np.mean(plc.astype(np.float64) ** 2))
        assert rms_plc > 0.05 * rms_prev, (k, rms_plc, rms_prev)  # not silence
        # Not a click: the step into the PLC frame is no larger than the steps the real
        # signal takes (plus a little headroom), and no sample explodes.
        step = abs(float(plc[0]) - prev[-1])
        typical = np.percentile(np.abs(np.diff(prev)), 99) + 200
        assert step <= 2 * typical, (k, step, typical)
        assert np.max(np.abs(plc)) <= 2 * np.max(np.abs(prev)) + 500


def test_fec_recovers_a_lost_frame_better_than_plc(speech_dir: Path) -> None:
    fec_err: list[float] = []
    plc_err: list[float] = []
    for name in FILES:
        pcm = load(speech_dir, name)
        enc = OpusEncoder(16000, fec=True, expected_loss_pct=10)
        packets = [enc.encode(f) for f in frames_of(pcm)]
        ref = OpusDecoder(16000)
        decoded = [ref.decode(p) for p in packets]
        for k in range(10, len(packets) - 1, 3):
            if np.sqrt(np.mean(decoded[k].astype(float) ** 2)) < 300:
                continue
            target = log_spec(decoded[k])
            fec = _decoded_prefix(packets, k).decode_fec(packets[k + 1])
            plc = _decoded_prefix(packets, k).conceal()
            assert fec.size == FRAME_SAMPLES
            fec_err.append(float(np.mean((log_spec(fec) - target) ** 2)))
            plc_err.append(float(np.mean((log_spec(plc) - target) ** 2)))
    assert len(fec_err) > 50
    wins = sum(f < p for f, p in zip(fec_err, plc_err, strict=True))
    assert np.median(fec_err) < 0.8 * np.median(plc_err), (np.median(fec_err), np.median(plc_err))
    assert wins > 0.65 * len(fec_err), (wins, len(fec_err))


def test_without_fec_the_next_packet_gives_only_plc(speech_dir: Path) -> None:
    """Guards against the encoder silently ignoring ``fec``: with FEC off the decoder
    has nothing to recover and its output equals plain PLC."""
    pcm = load(speech_dir, FILES[0])
    enc = OpusEncoder(16000, fec=False, expected_loss_pct=0)
    packets = [enc.encode(f) for f in frames_of(pcm)]
    same = 0
    ks = list(range(20, len(packets) - 1, 10))
    for k in ks:
        a = _decoded_prefix(packets, k).decode_fec(packets[k + 1])
        b = _decoded_prefix(packets, k).conceal()
        same += int(np.array_equal(a, b))
    assert same == len(ks)


@pytest.mark.parametrize(
    "packet",
    [b"", b"\x03", b"\xff\xff\xff", bytes(range(256)) * 20, b"\x7f" + b"\xff" * 3],
)
def test_malformed_packets_raise_clear_error_and_decoder_survives(
    speech_dir: Path, packet: bytes
) -> None:
    pcm = load(speech_dir, FILES[0])
    enc, dec = OpusEncoder(16000), OpusDecoder(16000)
    good = [enc.encode(f) for f in frames_of(pcm)[:5]]
    dec.decode(good[0])
    with pytest.raises(AudioInputError, match="Opus"):
        dec.decode(packet)
    if packet:
        with pytest.raises(AudioInputError, match="Opus"):
            dec.decode_fec(packet)
    assert dec.decode(good[1]).size == FRAME_SAMPLES


def test_wrong_input_is_rejected_clearly() -> None:
    enc = OpusEncoder(16000)
    with pytest.raises(AudioInputError, match="320 samples"):
        enc.encode(np.zeros(100, np.int16))
    with pytest.raises(AudioInputError, match="int16"):
        enc.encode(np.zeros(FRAME_SAMPLES, np.float32))
    with pytest.raises(AudioInputError, match="bytes"):
        OpusDecoder(16000).decode("not bytes")  # type: ignore[arg-type]
    with pytest.raises(AudioInputError, match="sample rates"):
        OpusDecoder(44100)
