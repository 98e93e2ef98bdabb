"""MP4 encode/decode with PyAV, and the mapping of decoded frames to dataset timestamps.

Why PyAV and never OpenCV: LeRobot >= 0.5 writes AV1 video, and OpenCV's reader returns 0 frames from AV1
files without raising. PyAV decodes AV1 with libdav1d. Every decode here checks the number of frames it found
against the episode length, so an empty or misaligned stream is an error, never an empty camera.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from robodata.dataset import DatasetError, ImageArray

# Encoder name -> codec name a reader reports (what LeRobot writes into `video.codec`).
ENCODERS: dict[str, str] = {"libsvtav1": "av1", "libx264": "h264", "h264": "h264", "mpeg4": "mpeg4"}


@dataclass(frozen=True)
class VideoEncoding:
    """How camera streams are encoded. Defaults match LeRobot >= 0.5 (AV1, yuv420p, GOP 2, CRF 30)."""

    codec: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    gop: int | None = 2
    crf: int | None = 30
    # Only for codecs without CRF (mpeg4): target bit rate in bits/s.
    bit_rate: int = 2_000_000

    def __post_init__(self) -> None:
        if self.codec not in ENCODERS:
            raise DatasetError(f"video codec '{self.codec}' not supported; choose one of {sorted(ENCODERS)}")
        if self.gop is not None and self.gop < 1:
            raise DatasetError(f"video gop must be >= 1, got {self.gop}")

    def options(self) -> dict[str, str]:
        opts: dict[str, str] = {}
        if self.gop is not None:
            opts["g"] = str(self.gop)
        if self.crf is not None and self.codec != "mpeg4":
            opts["crf"] = str(self.crf)
        if self.codec in ("libx264", "h264"):
            opts["preset"] = "fast"
        return opts


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class VideoStreamWriter:
    """Encodes RGB uint8 frames into one mp4 file, frame k at pts k / fps.

    Frames keep counting across `write` calls, so several episodes written in turn end up concatenated with
    continuous timestamps (LeRobot v3's one-file-per-camera layout); the caller records each episode's
    [from, to) seconds from `frames_written` before and after.
    """

    def __init__(self, path: Path, fps: float, height: int, width: int, encoding: VideoEncoding) -> None:
        if height % 2 or width % 2:
            raise DatasetError(
                f"{path}: video frames must have even height and width for yuv420p, got {height}x{width}"
            )
        # SVT-AV1 prints its banner to stderr unless told otherwise; keep a user's explicit setting.
        os.environ.setdefault("SVT_LOG", "1")
        self.path = path
        self.height = height
        self.width = width
        self.fps = fps
        self.frames_written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        rate = _fps_fraction(fps)
        self._container = av.open(str(path), mode="w")
        stream = self._container.add_stream(encoding.codec, rate=rate)
        if not isinstance(stream, av.VideoStream):
            raise DatasetError(f"{path}: codec '{encoding.codec}' did not open a video stream")
        self._stream = stream
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = encoding.pix_fmt
        self._stream.codec_context.time_base = 1 / rate
        if encoding.codec == "mpeg4":
            self._stream.bit_rate = encoding.bit_rate
        options: dict[str, object] = dict(encoding.options())
        self._stream.options = options
        self._time_base = 1 / rate
        self._closed = False

    def write(self, frames: ImageArray) -> None:
        if self._closed:
            raise DatasetError(f"{self.path}: video writer is closed")
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise DatasetError(
                f"{self.path}: frames must be uint8 [N, {self.height}, {self.width}, 3], "
                f"got {frames.dtype} {frames.shape}"
            )
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = self._time_base
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._closed = True

    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


class VideoConcatenator:
    """Appends independently encoded mp4 segments into one file by remuxing (no re-encode).

    This is how LeRobot v3 builds its per-camera files: each episode is encoded on its own (so it starts on a
    key frame and its exact size is known before it is placed) and then appended with its timestamps shifted
    by the duration already in the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), mode="w")
        self._stream: av.video.stream.VideoStream | None = None
        self.duration_s = 0.0
        self.segments = 0
        self._closed = False

    def append(self, segment: Path, duration_s: float) -> tuple[float, float]:
        """Remux all packets of `segment` after what is already in the file; returns its [from, to) seconds."""
        if self._closed:
            raise DatasetError(f"{self.path}: concatenator is closed")
        start = self.duration_s
        with av.open(str(segment)) as src:
            if not src.streams.video:
                raise DatasetError(f"{segment}: no video stream to append")
            in_stream = src.streams.video[0]
            if self._stream is None:
                out_stream = self._container.add_stream_from_template(in_stream, opaque=True)
                if not isinstance(out_stream, av.video.stream.VideoStream):
                    raise DatasetError(f"{self.path}: could not create a video stream from {segment}")
                self._stream = out_stream
            for packet in src.demux(in_stream):
                if packet.dts is None or packet.time_base is None:
                    continue  # the demuxer's empty flush packet
                shift = int(round(start / packet.time_base))
                packet.dts += shift
                if packet.pts is not None:
                    packet.pts += shift
                packet.stream = self._stream
                self._container.mux(packet)
        self.duration_s = start + duration_s
        self.segments += 1
        return start, self.duration_s

    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        if not self._closed:
            self._container.close()
            self._closed = True


def encode_video(path: Path, frames: ImageArray, fps: float, encoding: VideoEncoding) -> None:
    """Encode RGB uint8 frames [N, H, W, 3] into a new mp4 file."""
    writer = VideoStreamWriter(path, fps, frames.shape[1], frames.shape[2], encoding)
    try:
        writer.write(frames)
    finally:
        writer.close()


def probe_video_info(path: Path) -> dict[str, object]:
    """The `info` block LeRobot stores for a video feature, read from the file itself."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DatasetError(f"{path}: no video stream")
        stream = container.streams.video[0]
        rate = stream.base_rate or stream.average_rate
        return {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(round(float(rate))) if rate is not None else None,
            "video.channels": 3,
            "has_audio": len(container.streams.audio) > 0,
        }


def decode_video_frames(
    path: Path,
    targets_s: npt.NDArray[np.float64],
    tolerance_s: float,
    segment: tuple[float, float] | None,
    strict_count: bool = True,
    label: str = "",
) -> ImageArray:
    """Decode the frames of one episode and return the one nearest each target time, RGB uint8 [T, H, W, 3].

    `targets_s` are positions inside the file (seconds). `segment` = [start, end) seconds of the episode inside
    the file (LeRobot v3's from/to timestamps); None means the whole file (LeRobot v2.1's per-episode file).
    Frames whose time lies in [start - tol, end - tol) belong to the episode. With `strict_count` their number
    must equal the number of targets; every target must have a decoded frame within `tolerance_s`.
    """
    where = f"{path}{f' ({label})' if label else ''}"
    if not path.is_file():
        raise DatasetError(f"{where}: video file not found")
    n = len(targets_s)
    if n == 0:
        raise DatasetError(f"{where}: no frame timestamps to decode")
    start, end = segment if segment is not None else (-math.inf, math.inf)
    times: list[float] = []
    images: list[ImageArray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{where}: no video stream in file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            first_needed = max(start, float(np.min(targets_s))) - tolerance_s
            if first_needed > 0 and stream.time_base is not None:
                container.seek(
                    int(first_needed / stream.time_base), stream=stream, backward=True, any_frame=False
                )
            for frame in container.decode(stream):
                if frame.time is None:
                    raise DatasetError(f"{where}: decoded a frame without a timestamp")
                t = float(frame.time)
                if t < start - tolerance_s:
                    continue
                if t >= end - tolerance_s:
                    break
                times.append(t)
                images.append(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))
    except av.FFmpegError as err:
        raise DatasetError(f"{where}: cannot decode video: {err}") from err
    if strict_count and len(times) != n:
        span = f"[{start:.4f}, {end:.4f}) s" if segment is not None else "the whole file"
        raise DatasetError(
            f"{where}: decoded {len(times)} frames in {span} but the episode has {n} frames "
            f"(frame count must match; the video may be truncated, empty, or misaligned)"
        )
    if not times:
        raise DatasetError(f"{where}: decoded 0 frames; expected {n}")
    decoded_t = np.asarray(times, dtype=np.float64)
    order = np.argsort(decoded_t, kind="stable")
    decoded_t = decoded_t[order]
    pos = (
        np.clip(np.searchsorted(decoded_t, targets_s), 1, len(decoded_t) - 1) if len(decoded_t) > 1 else None
    )
    if pos is None:
        nearest = np.zeros(n, dtype=np.int64)
    else:
        left = pos - 1
        choose_left = np.abs(targets_s - decoded_t[left]) <= np.abs(decoded_t[pos] - targets_s)
        nearest = np.where(choose_left, left, pos)
    err_s = np.abs(decoded_t[nearest] - targets_s)
    bad = np.flatnonzero(err_s > tolerance_s)
    if bad.size:
        i = int(bad[0])
        raise DatasetError(
            f"{where}: frame {i} at {targets_s[i]:.4f} s has no decoded frame within {tolerance_s:.4f} s "
            f"(nearest is {decoded_t[nearest[i]]:.4f} s); {bad.size} frames affected"
        )
    shapes = {img.shape for img in images}
    if len(shapes) != 1:
        raise DatasetError(f"{where}: decoded frames change size mid-stream: {sorted(shapes)}")
    stacked = np.stack(images)[order]
    return np.ascontiguousarray(stacked[nearest])


@dataclass(frozen=True)
class VideoFileCheck:
    """What a quick look at one video file found: the container's own frame count and duration, the frame size,
    and the time of the last frame that decodes. `problem` is None when the file is whole."""

    path: Path
    frames: int
    duration_s: float
    fps: float
    height: int
    width: int
    last_frame_s: float | None
    problem: str | None = None


# How much of a file's end is decoded to prove it is there (seconds before the last frame).
TAIL_CHECK_S = 1.0


def check_video_file(path: Path, expected_frames: int | None = None,
                     min_duration_s: float | None = None, exact: bool = True, full: bool = False) -> VideoFileCheck:
    """Open `path`, decode its first frame and its last second, and compare with what the episode index expects.

    Why not a full decode: a truncated mp4 whose index sits at the front (LeRobot's remuxed files) opens fine
    and declares every frame; only reading at the end shows that the frames are gone. Decoding the head and the
    tail costs a few dozen frames per file whatever its length. `expected_frames`: the frames the index puts in
    this file (LeRobot v2.1: the episode length; v3.0: the sum of its episodes' lengths), a minimum only when
    not `exact` (some of the file's episodes not selected). `min_duration_s`: the largest `to_timestamp` of its
    episodes. `full`: decode every frame and count them instead of trusting the container's count.
    """
    def broken(problem: str, frames: int = 0, duration: float = 0.0, fps: float = 0.0, height: int = 0,
               width: int = 0, last: float | None = None) -> VideoFileCheck:
        return VideoFileCheck(path, frames, duration, fps, height, width, last, problem)

    if not path.is_file():
        return broken("file not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return broken("no video stream in the file")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            frames = int(stream.frames or 0)
            base = stream.time_base
            if stream.duration is not None and base is not None:
                duration = float(stream.duration * base)
            elif container.duration is not None:
                duration = container.duration / 1e6
            else:
                duration = frames / fps if fps else 0.0
            size = (int(stream.height), int(stream.width))
            decoded = 0
            last: float | None = None
            if full:
                for frame in container.decode(stream):
                    decoded += 1
                    last = float(frame.time) if frame.time is not None else last
                if decoded != frames and frames:
                    return broken(f"decodes {decoded} of the {frames} frames its container declares", frames,
                                  duration, fps, *size, last)
                frames = frames or decoded
            else:
                first = next(iter(container.decode(stream)), None)
                if first is None:
                    return broken("no frame decodes", frames, duration, fps, *size)
                if base is not None:
                    container.seek(int(max(0.0, duration - TAIL_CHECK_S) / base), stream=stream, backward=True,
                                   any_frame=False)
                for frame in container.decode(stream):
                    last = float(frame.time) if frame.time is not None else last
    except av.FFmpegError as err:
        return broken(f"cannot be decoded: {err}")
    except (OSError, ValueError) as err:
        return broken(f"cannot be read: {err}")
    period = 1.0 / fps if fps else 0.0
    end_expected = duration - period
    if last is None or last < end_expected - 1.5 * period:
        seen = "no frame" if last is None else f"the last frame at {last:.3f} s"
        return broken(f"truncated or damaged: the container declares {frames} frames ({duration:.3f} s) but its "
                      f"end does not decode ({seen}; expected one at {max(end_expected, 0.0):.3f} s)",
                      frames, duration, fps, *size, last)
    if expected_frames is not None and frames and (frames < expected_frames or (exact and frames != expected_frames)):
        return broken(f"holds {frames} frames but the episode index puts {expected_frames} in it",
                      frames, duration, fps, *size, last)
    if min_duration_s is not None and duration + 1.5 * period < min_duration_s:
        return broken(f"lasts {duration:.3f} s but the episode index places an episode up to {min_duration_s:.3f} s",
                      frames, duration, fps, *size, last)
    return VideoFileCheck(path, frames, duration, fps, *size, last)
