"""Decoding and features on audio generated in the test (no files shipped)."""

import io

import numpy as np
import pytest

from celery_stack_app import audio
from celery_stack_app.retry import BadInput
from conftest import FORMATS, encode, tone


def analyse(data: bytes, **kw):
    return audio.analyse_stream(io.BytesIO(data), size=len(data), **kw)


@pytest.mark.parametrize("fmt,subtype", FORMATS)
def test_sine_then_silence_in_every_format(fmt, subtype):
    sr = 44100
    x = tone(2.0, freq=1000, amp=0.5, sr=sr)
    x[sr:] = 0.0  # second half digital silence
    meta, f = analyse(encode(x, sr, fmt, subtype))
    assert meta.format == fmt
    assert meta.samplerate == sr and meta.channels == 1
    assert meta.duration_seconds == pytest.approx(2.0, abs=0.01)
    # RMS of a 0.5 sine over half the time: 0.5/sqrt(2)/sqrt(2) = 0.25 -> -12.04 dBFS
    assert f["rms_dbfs"] == pytest.approx(-12.04, abs=0.3)
    assert f["peak_dbfs"] == pytest.approx(-6.02, abs=0.5)  # lossy codecs overshoot a little
    assert f["silence_ratio"] == pytest.approx(0.5, abs=0.03)
    assert f["spectral_centroid_hz"] == pytest.approx(1000, rel=0.08)
    profile = f["loudness_profile_dbfs"]
    assert len(profile) == audio.PROFILE_POINTS
    assert profile[0] == pytest.approx(-9.03, abs=0.5)   # sine: 0.5/sqrt(2)
    assert profile[-1] <= -90                           # silence (floor -120; codec noise tolerated)
    assert f["profile_span_seconds"] == pytest.approx(2.0 / audio.PROFILE_POINTS, rel=0.02)


def test_stereo_and_centroid_follows_frequency():
    low = analyse(encode(tone(1.0, freq=300, channels=2)))[1]
    high = analyse(encode(tone(1.0, freq=5000, channels=2)))[1]
    assert low["spectral_centroid_hz"] == pytest.approx(300, rel=0.1)
    assert high["spectral_centroid_hz"] == pytest.approx(5000, rel=0.05)


def test_pure_silence_is_floor_not_minus_infinity():
    meta, f = analyse(encode(np.zeros(44100)))
    assert f["rms_dbfs"] == audio.FLOOR_DBFS and f["peak_dbfs"] == audio.FLOOR_DBFS
    assert f["silence_ratio"] == 1.0
    assert f["spectral_centroid_hz"] == 0.0


def test_accumulator_is_independent_of_block_size():
    x = np.random.default_rng(1).uniform(-0.3, 0.3, size=(50000, 2))
    results = []
    for block in (1000, 4096, 50000):
        acc = audio.FeatureAccumulator(44100)
        for i in range(0, len(x), block):
            acc.add(x[i:i + block])
        results.append(acc.result())
    assert results[0] == results[1] == results[2]


def test_short_file_shorter_than_one_frame():
    meta, f = analyse(encode(tone(0.01)))  # 441 samples < FRAME
    assert meta.frames == 441
    assert len(f["loudness_profile_dbfs"]) == 1


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"this is not audio at all" * 50, "not a readable audio file"),
    (b"\x00" * 4096, "not a readable audio file"),
])
def test_bad_input_reasons(data, reason):
    with pytest.raises(BadInput, match=reason):
        analyse(data)


def test_too_large_is_refused_before_decoding():
    data = encode(tone(0.5))
    with pytest.raises(BadInput, match="file too large"):
        analyse(data, max_bytes=len(data) - 1)


@pytest.mark.parametrize("fmt,subtype", FORMATS)
def test_truncated_files_fail_with_a_reason(fmt, subtype):
    data = encode(tone(2.0), 44100, fmt, subtype)
    with pytest.raises(BadInput) as exc:
        analyse(data[: len(data) // 2])
    assert any(word in exc.value.reason for word in ("truncated", "undecodable", "malformed", "no audio"))


def test_source_errors_are_not_blamed_on_the_input():
    """A database hiccup while streaming must surface as itself (transient), not as 'truncated'."""
    data = encode(tone(3.0))

    class Flaky(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 20000:
                raise ConnectionResetError("network went away")
            return super().read(size)

    with pytest.raises(ConnectionResetError):
        audio.analyse_stream(Flaky(data), size=len(data))


def test_decode_only_skips_features():
    meta, f = analyse(encode(tone(0.5)), decode_only=True)
    assert f == {} and meta.frames == 22050
