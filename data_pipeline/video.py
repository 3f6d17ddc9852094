"""PyAV video I/O: probing, evenly spread clip decoding, log-mel audio windows, atomic writing.

Everything here works on files and NumPy arrays; nothing imports torch or ray. A video is a local
path, or an object in S3 (an ``s3://`` URI or a :class:`~data_pipeline.filesystems.FsPath`), which
PyAV decodes in place through a read-ahead file object of ranged reads
(:class:`~data_pipeline.filesystems.RangeReader`): no copy of the video is made.

* :func:`probe` reads a file's header (frames, fps, size, audio) without decoding pictures.
* :func:`sample_clip_starts` spreads ``clips_per_video`` clips of ``clip_len`` frames evenly
  over a video.
* :func:`decode_clips` makes ONE sequential pass over the file: it decodes every packet (video
  and audio interleaved), converts only the frames the clips need to RGB arrays, resamples the
  audio once to mono and cuts one log-mel window per clip, aligned with the clip's time span.
* :func:`log_mel` / :func:`audio_window` are the audio feature (defined in :mod:`.audio`,
  re-exported here with :class:`AudioConfig` and :func:`mel_filterbank`).
* :func:`write_video` (from :mod:`.encoding`) writes H.264 (+ AAC) mp4 atomically (temp file in
  the same folder, then :func:`os.replace`).

Every failure to read a video is a :class:`VideoError` whose ``reason`` is a short,
machine-friendly string (``"missing file"``, ``"empty file"``, ``"truncated"``,
``"unreadable"``, ``"no video stream"``, ``"no frames"``, ``"decode error"``, ``"too short"``)
so that a pipeline can report why a video was skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import av
import numpy as np
import pyarrow.fs as pafs

# the audio features live in .audio; re-exported because callers import them from here
from .audio import AudioConfig, audio_window, log_mel, mel_filterbank
from .encoding import write_video
from .filesystems import READ_BLOCK, FsPath, RangeReader, is_s3
from .sync import SyncConfig, audio_features, grey_frame, grey_size, window_frames

PathLike = Union[str, os.PathLike]
#: a video: a local path, an ``s3://`` URI (endpoint from ``AWS_ENDPOINT_URL``) or a path on a filesystem
VideoSource = Union[str, os.PathLike, FsPath]

__all__ = [
    "AudioConfig",
    "DecodedClips",
    "VideoError",
    "VideoInfo",
    "audio_window",
    "clip_frame_indices",
    "decode_clips",
    "log_mel",
    "mel_filterbank",
    "probe",
    "read_audio",
    "read_frames",
    "sample_clip_starts",
    "write_video",
]


class VideoError(Exception):
    """A video could not be used.

    Attributes:
        reason: short machine-friendly cause (``"missing file"``, ``"empty file"``,
            ``"truncated"``, ``"unreadable"``, ``"no video stream"``, ``"no frames"``, ``"decode error"``,
            ``"too short"``).
        path: the file concerned.
    """

    def __init__(self, reason: str, path: PathLike | None = None, detail: str = "") -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        self.detail = detail.strip().splitlines()[0] if detail.strip() else ""
        where = f"{self.path}: " if self.path else ""
        extra = f" ({self.detail})" if self.detail else ""
        super().__init__(f"{where}{reason}{extra}")


@dataclass
class VideoInfo:
    """What :func:`probe` learns about a video from its container header."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    has_audio: bool
    duration_s: float


@dataclass
class DecodedClips:
    """The clips :func:`decode_clips` cut from one video.

    Attributes:
        frames: one ``(T, H, W, 3)`` uint8 RGB array per clip, full resolution.
        starts: index of each clip's first frame.
        times: ``(t0, t1)`` seconds of each clip, from its first frame's start to its last
            frame's end, relative to the video's first frame.
        audio: one ``(n_mels, window_steps)`` float32 log-mel window per clip, or ``None``
            when the video has no audio track (or audio was not requested).
        info: the probed header of the video.
    """

    frames: list[np.ndarray]
    starts: list[int]
    times: list[tuple[float, float]]
    audio: list[np.ndarray] | None
    info: VideoInfo
    indices: list[list[int]] = field(default_factory=list)
    grey: dict[int, np.ndarray] = field(default_factory=dict)
    """Frame index -> grey ``(h, w)`` uint8 frame, ``grey_scale`` times the frame size: the frames
    of the clips' sync windows (``sync``), for the mouth track."""
    grey_scale: float = 1.0
    audio_track: np.ndarray | None = None
    """``(n_cols, 5)`` :func:`.sync.audio_features` of the whole audio track (``sync`` and audio)."""
    audio_cols_per_s: float = 100.0


# --------------------------------------------------------------------------- opening / probing


def _check_file(path: VideoSource) -> tuple[Path | FsPath, int, pafs.NativeFile | None]:
    """The video as a local :class:`Path`, or an :class:`FsPath` (objects) with its opened input
    file (one HEAD request: opening tells the size and whether it exists), and its size."""
    if isinstance(path, FsPath) and path.is_local:
        path = path.path
    if isinstance(path, FsPath) or is_s3(path):
        p = FsPath.of(path)
        try:
            source = p.fs.open_input_file(p.path)
        except FileNotFoundError:
            raise VideoError("missing file", p) from None
        except OSError as exc:
            raise VideoError("unreadable", p, str(exc)) from exc
        size = source.size()
        if not size:
            source.close()
            raise VideoError("empty file", p)
        return p, int(size), source
    p = Path(path)
    if not p.exists():
        raise VideoError("missing file", p)
    if not p.is_file():
        raise VideoError("unreadable", p, "not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise VideoError("empty file", p)
    return p, size, None


def _isobmff_truncated(fh, size: int) -> bool:
    """True when the file object ``fh`` (``size`` bytes) looks like an ISO-BMFF (mp4/mov) file
    whose top-level boxes run past the end of the file, i.e. a download or copy cut short."""
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 8 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return False
    pos = 0
    while pos < size:
        fh.seek(pos)
        hdr = fh.read(16)
        if len(hdr) < 8:
            return True
        box = int.from_bytes(hdr[:4], "big")
        if box == 1:
            if len(hdr) < 16:
                return True
            box = int.from_bytes(hdr[8:16], "big")
        elif box == 0:  # box extends to end of file
            return False
        if box < 8:
            return False  # corrupt rather than truncated
        pos += box
    return pos > size


def _open(path: VideoSource) -> av.container.InputContainer:
    """PyAV's container of a video (close it with :func:`_close`, which closes an object's reader too)."""
    p, size, source = _check_file(path)
    reader = None if source is None else RangeReader(source, size)
    try:
        if reader is None:
            return av.open(str(p), mode="r")
        container = av.open(reader, mode="r", buffer_size=min(READ_BLOCK, 1 << 20))
        _READERS[id(container)] = reader
        return container
    except av.FFmpegError as exc:
        with open(p, "rb") if reader is None else reader as f:
            reason = "truncated" if _isobmff_truncated(f, size) else "unreadable"
        raise VideoError(reason, p, str(exc)) from exc
    except (OSError, ValueError) as exc:  # pragma: no cover - defensive (permissions, etc.)
        if reader is not None:
            reader.close()
        raise VideoError("unreadable", p, str(exc)) from exc


#: the object readers of open containers (PyAV does not close a file object it was given)
_READERS: dict[int, RangeReader] = {}


def _close(container: av.container.InputContainer) -> None:
    reader = _READERS.pop(id(container), None)
    container.close()
    if reader is not None:
        reader.close()


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and float(rate) > 0:
            return float(rate)
    return 0.0


def _info_from_container(path: VideoSource, container: av.container.InputContainer) -> VideoInfo:
    if not container.streams.video:
        raise VideoError("no video stream", path)
    vs = container.streams.video[0]
    fps = _stream_fps(vs)
    if vs.duration is not None and vs.time_base is not None:
        duration = float(vs.duration * vs.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    num_frames = int(vs.frames or 0)
    if num_frames <= 0:
        # Container does not store a frame count: count video packets (demux only, no decode).
        try:
            num_frames = sum(1 for pkt in container.demux(vs) if pkt.size > 0)
        except av.FFmpegError as exc:
            raise VideoError("unreadable", path, str(exc)) from exc
        container.seek(0)
    if num_frames <= 0:
        raise VideoError("no frames", path)
    if duration <= 0 and fps > 0:
        duration = num_frames / fps
    if fps <= 0 and duration > 0:
        fps = num_frames / duration
    width = int(vs.codec_context.width or 0)
    height = int(vs.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise VideoError("unreadable", path, "video stream has no picture size")
    return VideoInfo(
        path=str(path),
        num_frames=num_frames,
        fps=fps,
        width=width,
        height=height,
        has_audio=bool(container.streams.audio),
        duration_s=duration,
    )


def probe(path: VideoSource) -> VideoInfo:
    """Read a video's header: frame count, fps, picture size, audio presence, duration.

    Raises:
        VideoError: ``"missing file"``, ``"empty file"``, ``"truncated"`` (an mp4/mov cut
            short), ``"unreadable"`` (not a media file, corrupt container), ``"no video
            stream"`` or ``"no frames"``.
    """
    container = _open(path)
    try:
        return _info_from_container(path, container)
    finally:
        _close(container)


# --------------------------------------------------------------------------- clip sampling


def sample_clip_starts(num_frames: int, clip_len: int, clips_per_video: int, stride: int = 1) -> list[int]:
    """Start indices of up to ``clips_per_video`` clips spread evenly over a video.

    A clip is ``clip_len`` frames ``stride`` apart, so it spans ``(clip_len - 1) * stride + 1``
    frames. Starts are spaced evenly between the first and the last possible start (both
    included when there are two or more clips; a single clip is centred). When the video is too
    short for that many non-overlapping clips, fewer clips are returned; a video shorter than
    one clip gives ``[]``.
    """
    if clip_len < 1 or stride < 1 or clips_per_video < 1:
        raise ValueError("clip_len, stride and clips_per_video must be >= 1")
    span = (clip_len - 1) * stride + 1
    if num_frames < span:
        return []
    last_start = num_frames - span
    n = min(clips_per_video, num_frames // span)
    if n <= 1:
        return [last_start // 2]
    return [int(round(i * last_start / (n - 1))) for i in range(n)]


def clip_frame_indices(start: int, clip_len: int, stride: int = 1) -> list[int]:
    """Frame indices of the clip starting at ``start``."""
    return [start + k * stride for k in range(clip_len)]


# --------------------------------------------------------------------------- decoding


def _resample_audio(
    frames: list[av.AudioFrame],
    cfg: AudioConfig,
    origin_s: float,
) -> np.ndarray:
    """Concatenate decoded audio frames as mono float32 at ``cfg.sample_rate``, aligned so that
    sample 0 is at ``origin_s`` (the first video frame's time)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=cfg.sample_rate)
    chunks: list[np.ndarray] = []
    first_time: float | None = None
    for fr in frames:
        if first_time is None and fr.time is not None:
            first_time = float(fr.time)
        for out in resampler.resample(fr):
            chunks.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    offset = int(round(((first_time or 0.0) - origin_s) * cfg.sample_rate))
    if offset > 0:
        samples = np.concatenate([np.zeros(offset, np.float32), samples])
    elif offset < 0:
        samples = samples[-offset:]
    return samples


def _iterate(path: VideoSource, container: av.container.InputContainer, want_audio: bool):
    """Yield decoded frames of the first video (and audio) stream in one demux pass."""
    vs = container.streams.video[0]
    vs.thread_type = "AUTO"
    streams = [vs]
    if want_audio and container.streams.audio:
        streams.append(container.streams.audio[0])
    try:
        for packet in container.demux(*streams):
            for frame in packet.decode():
                yield frame
    except av.FFmpegError as exc:
        raise VideoError("decode error", path, str(exc)) from exc


def decode_clips(
    path: VideoSource,
    clip_len: int = 4,
    clips_per_video: int = 4,
    stride: int = 1,
    audio: AudioConfig | None = AudioConfig(),
    sync: SyncConfig | None = None,
) -> DecodedClips:
    """Decode evenly spread clips (and their audio windows) of a video in one sequential pass.

    Args:
        path: the video: a local file, an ``s3://`` URI or an :class:`FsPath` (decoded in place).
        clip_len: frames per clip (T).
        clips_per_video: how many clips to spread over the video (fewer when it is short).
        stride: distance between a clip's frames.
        audio: log-mel settings, or ``None`` to skip audio. A video with no audio track gives
            ``audio=None`` in the result (not an error).
        sync: also keep, in grey at most ``sync.max_side`` px, every frame of each clip's sync
            window (:func:`.sync.sync_window`), and the audio track's sync features.

    Raises:
        VideoError: the :func:`probe` reasons, ``"too short"`` (shorter than one clip),
            ``"decode error"`` (corrupt stream), or ``"no frames"`` (nothing decodable where
            the clips should be, e.g. a truncated file).
    """
    container = _open(path)
    try:
        info = _info_from_container(path, container)
        starts = sample_clip_starts(info.num_frames, clip_len, clips_per_video, stride)
        if not starts:
            raise VideoError("too short", path, f"{info.num_frames} frames < one clip of {clip_len}x{stride}")
        clip_indices = [clip_frame_indices(s, clip_len, stride) for s in starts]
        wanted = {i for idx in clip_indices for i in idx}
        last_needed = max(wanted)
        want_audio = audio is not None and info.has_audio
        fps = info.fps if info.fps > 0 else 25.0
        grey_wanted = window_frames(clip_indices, info.num_frames, fps, sync) if want_audio and sync else set()
        gw, gh, grey_scale = grey_size(info.width, info.height, sync.max_side) if sync else (0, 0, 1.0)
        grey: dict[int, np.ndarray] = {}

        got: dict[int, np.ndarray] = {}
        audio_frames: list[av.AudioFrame] = []
        origin_s: float | None = None
        vidx = 0
        for frame in _iterate(path, container, want_audio):
            if isinstance(frame, av.VideoFrame):
                if origin_s is None:
                    origin_s = float(frame.time) if frame.time is not None else 0.0
                if vidx in wanted:
                    got[vidx] = frame.to_ndarray(format="rgb24")
                if vidx in grey_wanted:
                    grey[vidx] = grey_frame(frame, gw, gh)
                vidx += 1
                if vidx > last_needed and not want_audio:
                    break
            elif isinstance(frame, av.AudioFrame):
                audio_frames.append(frame)
    finally:
        _close(container)

    kept = [k for k, idx in enumerate(clip_indices) if all(i in got for i in idx)]
    if not kept:
        reason = "truncated" if 0 < vidx < info.num_frames else "no frames"
        raise VideoError(reason, path, f"decoded {vidx} of {info.num_frames} frames")
    out_frames = [np.stack([got[i] for i in clip_indices[k]]) for k in kept]
    out_starts = [starts[k] for k in kept]
    out_idx = [clip_indices[k] for k in kept]
    times = [(idx[0] / fps, (idx[-1] + 1) / fps) for idx in out_idx]

    windows: list[np.ndarray] | None = None
    track: np.ndarray | None = None
    cols_per_s = 100.0
    if want_audio and audio_frames:
        assert audio is not None
        windows, track = _audio_outputs(audio_frames, audio, origin_s or 0.0, times, sync)
        cols_per_s = audio.sample_rate / audio.hop
    return DecodedClips(frames=out_frames, starts=out_starts, times=times, audio=windows, info=info, indices=out_idx,
                        grey=grey if track is not None else {}, grey_scale=grey_scale, audio_track=track,
                        audio_cols_per_s=cols_per_s)


def _audio_outputs(audio_frames: list[av.AudioFrame], audio: AudioConfig, origin_s: float,
                   times: list[tuple[float, float]], sync: SyncConfig | None
                   ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Each clip's log-mel window, and the whole track's sync features when ``sync`` is set."""
    samples = _resample_audio(audio_frames, audio, origin_s)
    spec = log_mel(samples, audio.sample_rate, audio)
    windows = [audio_window(spec, audio, t0, t1) for t0, t1 in times]
    return windows, (audio_features(spec, audio.sample_rate / audio.hop) if sync is not None else None)


def read_frames(path: VideoSource, indices: list[int] | None = None) -> np.ndarray:
    """Decode frames of a video as one ``(N, H, W, 3)`` uint8 RGB array (all when ``indices`` is None)."""
    container = _open(path)
    try:
        _info_from_container(path, container)
        wanted = None if indices is None else set(indices)
        got: dict[int, np.ndarray] = {}
        vidx = 0
        for frame in _iterate(path, container, want_audio=False):
            if wanted is None or vidx in wanted:
                got[vidx] = frame.to_ndarray(format="rgb24")
            vidx += 1
            if wanted is not None and vidx > max(wanted, default=-1):
                break
    finally:
        _close(container)
    order = sorted(got) if indices is None else [i for i in indices if i in got]
    if not order:
        raise VideoError("no frames", path)
    return np.stack([got[i] for i in order])


def read_audio(path: VideoSource, sample_rate: int = 16000) -> np.ndarray | None:
    """Decode a video's audio track as mono float32 at ``sample_rate``; ``None`` without audio."""
    container = _open(path)
    try:
        info = _info_from_container(path, container)
        if not info.has_audio:
            return None
        frames: list[av.AudioFrame] = []
        origin: float | None = None
        for frame in _iterate(path, container, want_audio=True):
            if isinstance(frame, av.AudioFrame):
                frames.append(frame)
            elif origin is None:
                origin = float(frame.time) if frame.time is not None else 0.0
    finally:
        _close(container)
    cfg = AudioConfig(sample_rate=sample_rate)
    return _resample_audio(frames, cfg, origin or 0.0)
