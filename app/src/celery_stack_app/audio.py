"""Decode audio from a stream and compute its metadata and features.

Pure logic: no Celery, no MongoDB. Decoding uses python-soundfile, whose
wheels bundle libsndfile >= 1.1 (1.2.2 with soundfile 0.14): WAV, FLAC,
OGG/Vorbis/Opus and MP3 are read from any seekable file object, block by
block, so memory stays bounded whatever the file's length.

Features (all over the decoded signal, samples as floats in [-1, 1]):

- ``rms_dbfs``: RMS level of all samples of all channels, in dBFS;
- ``peak_dbfs``: largest absolute sample, in dBFS;
- ``silence_ratio``: share of analysis frames (``FRAME`` samples of the
  mono mix) whose RMS is below ``SILENCE_DBFS``;
- ``spectral_centroid_hz``: magnitude-weighted mean frequency of the
  Hann-windowed spectra of all frames of the mono mix (0 for silence);
- ``loudness_profile_dbfs``: RMS dBFS of the mono mix over at most
  ``PROFILE_POINTS`` equal spans of time (``profile_span_seconds`` each).

Digital silence is reported as ``FLOOR_DBFS`` rather than -inf, so results
stay valid JSON.
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

import numpy as np
import soundfile

from .retry import BadInput

#: Bump when the features or their definitions change: results are keyed by
#: (sha256, analysis_version), so a new version analyses again and the old
#: results stay.
ANALYSIS_VERSION = 1

FRAME = 2048
BLOCK = 64 * 1024
SILENCE_DBFS = -60.0
FLOOR_DBFS = -120.0
PROFILE_POINTS = 32
#: A file whose decoded frame count falls short of the header's by more than
#: this share (and more than 50 ms) is reported as truncated.
TRUNCATION_TOLERANCE = 0.01
#: libsndfile's log for a RIFF/WAV whose data chunk is longer than the file:
#: "data : 176400 (should be 88178)". Streaming writers put 0 or 0xFFFFFFFF
#: there on purpose; those are not truncation.
_WAV_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+) \(should be (\d+)\)", re.MULTILINE)
_UNKNOWN_LENGTHS = {0, 0xFFFFFFFF, 0x7FFFFFFF}


def to_dbfs(amplitude: float) -> float:
    if amplitude <= 0 or not np.isfinite(amplitude):
        return FLOOR_DBFS
    return max(FLOOR_DBFS, float(20.0 * np.log10(amplitude)))


@dataclass
class Metadata:
    format: str
    subtype: str
    samplerate: int
    channels: int
    frames: int
    duration_seconds: float


@dataclass
class FeatureAccumulator:
    """Streaming features: feed blocks of shape (frames, channels)."""

    samplerate: int
    _sumsq: float = 0.0
    _count: int = 0
    _peak: float = 0.0
    _rest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    _frame_sumsq: list = field(default_factory=list)
    _centroid_num: float = 0.0
    _centroid_den: float = 0.0
    frames: int = 0

    def __post_init__(self) -> None:
        self._window = np.hanning(FRAME)
        self._freqs = np.fft.rfftfreq(FRAME, d=1.0 / self.samplerate)

    def add(self, block: np.ndarray) -> None:
        if block.ndim == 1:
            block = block[:, None]
        if block.shape[0] == 0:
            return
        data = block.astype(np.float64, copy=False)
        self.frames += data.shape[0]
        self._sumsq += float(np.square(data).sum())
        self._count += data.size
        self._peak = max(self._peak, float(np.abs(data).max()))
        mono = data.mean(axis=1)
        if self._rest.size:
            mono = np.concatenate([self._rest, mono])
        whole = (mono.size // FRAME) * FRAME
        self._rest = mono[whole:].copy()
        if whole:
            self._frames(mono[:whole].reshape(-1, FRAME))

    def _frames(self, frames: np.ndarray) -> None:
        self._frame_sumsq.append(np.square(frames).sum(axis=1))
        mags = np.abs(np.fft.rfft(frames * self._window, axis=1))
        self._centroid_num += float((mags @ self._freqs).sum())
        self._centroid_den += float(mags.sum())

    def result(self) -> dict[str, Any]:
        sumsq = np.concatenate(self._frame_sumsq) if self._frame_sumsq else np.zeros(0)
        counts = np.full(sumsq.shape, FRAME, dtype=np.float64)
        if self._rest.size:  # the last, partial frame counts for levels and silence
            sumsq = np.append(sumsq, np.square(self._rest).sum())
            counts = np.append(counts, self._rest.size)
        if sumsq.size:
            frame_rms = np.sqrt(sumsq / counts)
            silent = frame_rms < 10 ** (SILENCE_DBFS / 20)
            silence_ratio = float(silent.mean())
            points = min(PROFILE_POINTS, sumsq.size)
            profile = [
                to_dbfs(float(np.sqrt(s.sum() / c.sum())))
                for s, c in zip(np.array_split(sumsq, points), np.array_split(counts, points))
            ]
        else:
            silence_ratio, profile, points = 1.0, [], 0
        duration = self.frames / self.samplerate if self.samplerate else 0.0
        return {
            "rms_dbfs": round(to_dbfs(float(np.sqrt(self._sumsq / self._count)) if self._count else 0.0), 3),
            "peak_dbfs": round(to_dbfs(self._peak), 3),
            "silence_ratio": round(silence_ratio, 4),
            "spectral_centroid_hz": round(self._centroid_num / self._centroid_den, 2)
            if self._centroid_den > 1e-12 else 0.0,
            "loudness_profile_dbfs": [round(p, 2) for p in profile],
            "profile_span_seconds": round(duration / points, 4) if points else 0.0,
        }


class _GuardedReader(io.RawIOBase):
    """File object for libsndfile that remembers exceptions of the source.

    soundfile calls read/seek from C callbacks, where a Python exception is
    swallowed and looks like end-of-file. A database hiccup while reading a
    GridFS stream would then be reported as a "truncated file" and never
    retried. This wrapper keeps the first exception so the caller re-raises
    it (a transient error) instead of blaming the input.
    """

    def __init__(self, source: BinaryIO):
        super().__init__()
        self._source = source
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    # Errors are kept, not raised: an exception inside a C callback is only
    # printed. End-of-file (or position 0) is returned instead, which stops
    # libsndfile; analyse_stream then re-raises the kept error.

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self._source.read(size)
        except Exception as exc:
            self.error = exc
            return b""

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._source.seek(offset, whence)
        except Exception as exc:
            self.error = self.error or exc
            return 0

    def tell(self) -> int:
        try:
            return self._source.tell()
        except Exception as exc:
            self.error = self.error or exc
            return 0


def analyse_stream(source: BinaryIO, size: int | None = None, max_bytes: int | None = None,
                   decode_only: bool = False) -> tuple[Metadata, dict[str, Any]]:
    """Decode ``source`` (seekable binary file object) and compute features.

    ``size`` is the byte length if known (checked against ``max_bytes``).
    Raises :class:`BadInput` with a clear reason for unusable input; any
    other exception comes from the source (e.g. the database) and is the
    caller's to classify.
    """
    if size is not None:
        if size == 0:
            raise BadInput("empty file (0 bytes)")
        if max_bytes is not None and size > max_bytes:
            raise BadInput(f"file too large: {size} bytes exceeds the limit of {max_bytes} bytes")
    reader = _GuardedReader(source)
    try:
        snd = soundfile.SoundFile(reader)
    except Exception as exc:  # LibsndfileError, RuntimeError, TypeError from bad headers
        if reader.error is not None:
            raise reader.error from None
        raise BadInput(f"not a readable audio file: {_reason(exc)}") from None
    with snd:
        declared = snd.frames
        short = _WAV_SHORT_DATA.search(snd.extra_info or "")
        if short and int(short.group(1)) not in _UNKNOWN_LENGTHS:
            raise BadInput(f"truncated file: the {snd.format} header declares {short.group(1)} bytes "
                           f"of audio data, the file holds {short.group(2)}")
        meta_format, subtype = snd.format, snd.subtype
        samplerate, channels = snd.samplerate, snd.channels
        if samplerate <= 0 or channels <= 0:
            raise BadInput(f"invalid stream parameters: samplerate={samplerate}, channels={channels}")
        acc = FeatureAccumulator(samplerate)
        decoded = 0
        try:
            while True:
                block = snd.read(BLOCK, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                decoded += block.shape[0]
                if not decode_only:
                    acc.add(block)
        except Exception as exc:
            if reader.error is not None:
                raise reader.error from None
            raise BadInput(f"undecodable audio data after {decoded} frames: {_reason(exc)}") from None
        if reader.error is not None:
            raise reader.error
    if decoded == 0:
        raise BadInput(f"no audio frames could be decoded ({meta_format} header declares {declared})")
    shortfall = declared - decoded
    if 0 < declared < 2 ** 62 and shortfall > max(TRUNCATION_TOLERANCE * declared, 0.05 * samplerate):
        raise BadInput(f"truncated file: decoded {decoded} of {declared} frames declared by the header")
    meta = Metadata(format=meta_format, subtype=subtype, samplerate=samplerate, channels=channels,
                    frames=decoded, duration_seconds=round(decoded / samplerate, 6))
    return meta, ({} if decode_only else acc.result())


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # libsndfile messages start with the pseudo file name; keep the reason.
    if ": " in text and text.startswith("Error opening"):
        text = text.split(": ", 1)[1]
    return text


def metadata_dict(meta: Metadata) -> dict[str, Any]:
    return asdict(meta)
