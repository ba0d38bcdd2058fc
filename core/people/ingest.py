"""The ``ingest`` stage: read a video (or a folder of images) once and cache the working frames.

Output (``<job>/ingest/``)::

    frames/000000.jpg ...   working frames, JPEG quality 95, numbered 0..T-1 (job frame index)
    meta.json               see ``IngestMeta``: source, fps, source frame index of every job frame,
                            working size and the scale from source pixels

Job frame ``i`` is source frame ``source_frames[i]`` (= frame_start + i * frame_step); working
pixel = source pixel * ``scale`` (after the rotation stored in the file's metadata is applied).
Resumable: frames are written atomically one by one, and ``partial.json`` remembers the
settings they were made with, so a run cancelled half-way continues after the last frame.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..pipeline import JobError, RunConfig, StageContext

log = logging.getLogger("troupe.ingest")

META_NAME = "meta.json"
FRAME_PATTERN = "frames/{:06d}.jpg"
JPEG_QUALITY = 95
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_IMAGE_FPS = 30.0  # a folder of images carries no frame rate


@dataclass
class IngestMeta:
    """``ingest/meta.json``: what the cached frames are and where they came from."""

    source: str  # absolute path of the video file or image folder
    kind: str  # "video" | "images"
    fps: float  # source frame rate (frames per second; 30 for an image folder)
    source_frame_count: int  # frames in the source (as read, or as the container reports)
    source_size: tuple[int, int]  # (width, height) of source frames after rotation
    rotation: int  # degrees of rotation metadata applied to the source frames (0, 90, 180, 270)
    size: tuple[int, int]  # (width, height) of the working frames
    scale: float  # working pixels per source pixel (<= 1)
    source_frames: list[int]  # source frame index of each job frame
    frame_pattern: str = FRAME_PATTERN  # path of job frame i, relative to the ingest folder

    @property
    def frame_count(self) -> int:
        return len(self.source_frames)

    @classmethod
    def from_json(cls, d: dict) -> IngestMeta:
        d = dict(d)
        d["source_size"] = tuple(d["source_size"])
        d["size"] = tuple(d["size"])
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class Frames:
    """Read access to an ingest folder: ``len(frames)``, ``frames[i]`` (BGR uint8 [H, W, 3])."""

    def __init__(self, ingest_dir: Path | str) -> None:
        self.dir = Path(ingest_dir)
        path = self.dir / META_NAME
        try:
            self.meta = IngestMeta.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise JobError(f"{path} is missing: run the ingest stage first") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise JobError(f"{path} is not a valid ingest meta file ({exc})") from None

    def __len__(self) -> int:
        return self.meta.frame_count

    def path(self, i: int) -> Path:
        return self.dir / self.meta.frame_pattern.format(i)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} out of range 0..{len(self) - 1}")
        img = cv2.imread(str(self.path(i)), cv2.IMREAD_COLOR)
        if img is None:
            raise JobError(f"cached frame {self.path(i)} is missing or unreadable: re-run the ingest stage")
        return img

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


def working_size(width: int, height: int, max_size: int | None) -> tuple[tuple[int, int], float]:
    """(working (w, h), scale) for a source of ``width`` x ``height`` and a longest-side limit."""
    scale = 1.0
    if max_size and max(width, height) > max_size:
        scale = max_size / max(width, height)
    return (max(1, round(width * scale)), max(1, round(height * scale))), scale


def _selected(config: RunConfig, count: int | None) -> range:
    if config.frame_step < 1:
        raise JobError(f"frame_step must be >= 1, got {config.frame_step}")
    if config.frame_start < 0:
        raise JobError(f"frame_start must be >= 0, got {config.frame_start}")
    end = config.frame_end if config.frame_end is not None else count
    if end is None:
        end = 1 << 40
    if count is not None:
        end = min(end, count)
    return range(config.frame_start, end, config.frame_step)


class _Reader:
    """Sequential frames of a video or an image folder, with the numbers meta.json needs."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.cap: cv2.VideoCapture | None = None
        self.images: list[Path] = []
        self.pos = 0  # index of the next frame read() returns
        if not source.exists():
            raise JobError(f"input not found: {source}")
        if source.is_dir():
            self.kind = "images"
            self.images = list_images(source)
            if not self.images:
                raise JobError(f"{source} is a folder without images ({', '.join(IMAGE_EXTENSIONS)} expected)")
            first = self._read_image(self.images[0])
            self.fps = DEFAULT_IMAGE_FPS
            self.count: int | None = len(self.images)
            self.rotation = 0
            self.size = (first.shape[1], first.shape[0])
            return
        self.kind = "video"
        cap = cv2.VideoCapture(str(source), cv2.CAP_ANY)
        if not cap.isOpened():
            raise JobError(
                f"cannot read {source}: OpenCV could not open it as a video (corrupt file, not a video, "
                "or a codec this OpenCV build lacks)"
            )
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # apply the rotation stored in the file
        self.cap = cap
        self.rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else DEFAULT_IMAGE_FPS
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.count = n if n > 0 else None
        ok, frame = cap.read()
        if not ok or frame is None:
            raise JobError(f"cannot read {source}: no frame could be decoded (corrupt or empty video)")
        self.size = (frame.shape[1], frame.shape[0])
        self._first: np.ndarray | None = frame
        self.pos = 1

    def _read_image(self, path: Path) -> np.ndarray:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise JobError(f"cannot read image {path} (corrupt or not an image)")
        return img

    def frame(self, index: int) -> np.ndarray | None:
        """Source frame ``index`` (indices must not decrease between calls); None past the end."""
        if self.kind == "images":
            return self._read_image(self.images[index]) if index < len(self.images) else None
        assert self.cap is not None
        if index == 0 and self._first is not None:
            frame, self._first = self._first, None
            return frame
        self._first = None
        while self.pos < index:  # grab() skips without converting; seeking is unreliable for many codecs
            if not self.cap.grab():
                return None
            self.pos += 1
        ok, frame = self.cap.read()
        self.pos += 1
        return frame if ok else None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()


def _settings_key(source: Path, config: RunConfig) -> str:
    st = source.stat()
    blob = json.dumps(
        [str(source), st.st_size, st.st_mtime_ns, config.frame_start, config.frame_end, config.frame_step,
         config.max_size, JPEG_QUALITY]
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def ingest(source: Path | str, out_dir: Path | str, config: RunConfig, progress=None) -> IngestMeta:
    """Cache the selected frames of ``source`` in ``out_dir``; returns the meta written there.

    ``progress(fraction, message)`` is called now and then (and may raise ``Cancelled``).
    """
    source = Path(source).absolute()
    out_dir = Path(out_dir)
    reader = _Reader(source)
    try:
        (w, h), scale = working_size(*reader.size, config.max_size)
        selection = _selected(config, reader.count)
        frames_dir = out_dir / "frames"
        frames_dir.mkdir(parents=True, exist_ok=True)
        key = _settings_key(source, config)
        partial = out_dir / "partial.json"
        done = 0
        try:
            if json.loads(partial.read_text())["key"] == key:
                while (out_dir / FRAME_PATTERN.format(done)).exists():
                    done += 1
        except (OSError, ValueError, KeyError):
            pass
        if done == 0:
            for p in frames_dir.iterdir():
                p.unlink()
            (out_dir / META_NAME).unlink(missing_ok=True)
        else:
            log.info("ingest: resuming after %d cached frames", done)
        partial.write_text(json.dumps({"key": key}) + "\n")

        source_frames: list[int] = []
        total = len(selection) if reader.count is not None else None
        for i, src_index in enumerate(selection):
            if i < done:
                source_frames.append(src_index)
                continue
            frame = reader.frame(src_index)
            if frame is None:
                break
            if frame.shape[1] != reader.size[0] or frame.shape[0] != reader.size[1]:
                raise JobError(
                    f"{source}: frame {src_index} is {frame.shape[1]}x{frame.shape[0]}, the first frame is "
                    f"{reader.size[0]}x{reader.size[1]}; all frames must have one size"
                )
            if scale != 1.0:
                frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise JobError(f"could not encode frame {src_index} of {source} as JPEG")
            _write_atomic(out_dir / FRAME_PATTERN.format(i), buf.tobytes())
            source_frames.append(src_index)
            if progress is not None and (i % 10 == 0):
                frac = (i + 1) / total if total else 0.5
                progress(min(frac, 0.99), f"frame {i + 1}" + (f"/{total}" if total else ""))
        if not source_frames:
            raise JobError(
                f"{source}: no frames selected (frame_start={config.frame_start}, frame_end={config.frame_end}, "
                f"step={config.frame_step}; the source has {reader.count if reader.count is not None else '?'} frames)"
            )
        # Frames beyond the end the container reported (or a short read) are dropped from the count.
        for p in frames_dir.glob("*.jpg"):
            m = re.fullmatch(r"(\d+)\.jpg", p.name)
            if m and int(m.group(1)) >= len(source_frames):
                p.unlink()
        count = reader.count or 0
        if reader.kind == "video" and (reader.count is None or source_frames[-1] + config.frame_step >= reader.count):
            count = max(count, source_frames[-1] + 1)
        meta = IngestMeta(
            source=str(source),
            kind=reader.kind,
            fps=reader.fps,
            source_frame_count=count,
            source_size=reader.size,
            rotation=reader.rotation,
            size=(w, h),
            scale=scale,
            source_frames=source_frames,
        )
        (out_dir / META_NAME).write_text(json.dumps(asdict(meta), indent=1) + "\n")
        partial.unlink(missing_ok=True)
        log.info(
            "ingest: %d frames of %s (%dx%d -> %dx%d, %.3f fps, rotation %d)",
            len(source_frames), source, *reader.size, w, h, reader.fps, reader.rotation,
        )  # fmt: skip
        return meta
    finally:
        reader.close()


def run_stage(ctx: StageContext) -> None:
    if not ctx.config.video:
        raise JobError("no input video given")
    ingest(ctx.config.video, ctx.out_dir, ctx.config, ctx.progress)
    ctx.progress(1.0, "frames cached")
