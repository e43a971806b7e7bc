"""Camera frame sources behind one protocol: picamera2, OpenCV ``VideoCapture`` and replay of files.

Every source hands out 2-D uint8 gray frames, the newest one at a time (never a queue of stale frames).
picamera2 and OpenCV's capture are imported only inside their adapters' ``open()``, so this module
imports on any laptop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class SourceError(RuntimeError):
    """A frame source cannot open or read; the message says what to do next."""


class FrameSource(Protocol):
    """One grayscale frame at a time, newest first; never a queue of stale frames."""

    finished: bool  # True when a replay has no more frames

    def open(self) -> None: ...

    def read(self) -> np.ndarray | None:
        """A 2-D uint8 gray frame, or None when there is no frame now (replay finished, camera hiccup)."""
        ...

    def close(self) -> None: ...


class Picamera2Source:
    """Raspberry Pi camera through picamera2: YUV420 main stream, the Y plane is the gray frame.

    ``queue=False`` makes ``capture_array`` wait for the next frame instead of returning a buffered
    old one. On a Camera Module 3 autofocus runs continuously in the macro range (codes are held close).
    """

    finished = False

    def __init__(self, size: tuple[int, int] = (1280, 720), *, autofocus_macro: bool = True) -> None:
        self.size = size
        self.autofocus_macro = autofocus_macro
        self._camera: Any = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError(
                f"picamera2 is not installed ({exc}): on the Pi run 'sudo apt install python3-picamera2' "
                "and create the venv with --system-site-packages, or set camera.source = 'opencv' or 'replay'"
            ) from exc
        try:
            camera = Picamera2()
        except (IndexError, RuntimeError) as exc:  # IndexError: no camera listed by libcamera
            raise SourceError(
                f"no Raspberry Pi camera found ({exc}): check the ribbon cable and run "
                "'rpicam-hello --list-cameras'"
            ) from exc
        width, height = self.size
        config = camera.create_video_configuration(
            main={"size": (width, height), "format": "YUV420"}, queue=False, buffer_count=2
        )
        camera.configure(config)
        if self.autofocus_macro and "AfMode" in camera.camera_controls:
            try:
                from libcamera import controls

                wanted: dict[str, Any] = {"AfMode": controls.AfModeEnum.Continuous}
                if "AfRange" in camera.camera_controls:
                    wanted["AfRange"] = controls.AfRangeEnum.Macro
                camera.set_controls(wanted)
            except (ImportError, RuntimeError) as exc:  # fixed-focus modules: keep going without AF
                log.warning("autofocus not set: %s", exc)
        camera.start()
        self._camera = camera

    def read(self) -> np.ndarray | None:
        if self._camera is None:
            raise SourceError("camera is not open: call open() first")
        width, height = self.size
        try:
            yuv = self._camera.capture_array("main")
        except RuntimeError as exc:
            log.warning("camera capture failed: %s", exc)
            return None
        # YUV420 arrives as a (height * 3/2, stride) array: the first `height` rows are the Y plane.
        return yuv[:height, :width]

    def close(self) -> None:
        if self._camera is not None:
            try:
                self._camera.stop()
                self._camera.close()
            finally:
                self._camera = None


class OpenCVSource:
    """A USB webcam through OpenCV (V4L2, MJPG, a one-frame buffer), converted to gray once."""

    finished = False

    def __init__(self, device: int | str = 0, size: tuple[int, int] = (1280, 720)) -> None:
        self.device = device
        self.size = size
        self._capture: Any = None

    def _where(self) -> str:
        return f"/dev/video{self.device}" if isinstance(self.device, int) else str(self.device)

    def open(self) -> None:
        import cv2

        capture = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            raise SourceError(
                f"no camera at {self._where()}: check the cable and 'v4l2-ctl --list-devices', "
                "or set camera.source = 'replay'"
            )
        width, height = self.size
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
        self._capture = capture

    def read(self) -> np.ndarray | None:
        import cv2

        if self._capture is None:
            raise SourceError("camera is not open: call open() first")
        ok, frame = self._capture.read()
        if not ok or frame is None:
            return None
        return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class ReplaySource:
    """A folder of images (sorted ``*.png``/``*.jpg``) or a video file, paced at ``fps`` (demos, tests)."""

    def __init__(
        self,
        path: Path,
        *,
        fps: float = 10.0,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.path = Path(path)
        self.fps = fps
        self.loop = loop
        self.clock = clock
        self.sleep = sleep
        self.finished = False
        self._images: list[Path] | None = None
        self._video: Any = None
        self._next = 0
        self._due: float | None = None

    def open(self) -> None:
        import cv2

        if not self.path.exists():
            raise SourceError(
                f"replay path {self.path} does not exist: set camera.replay_path to a folder of "
                ".png/.jpg images or a video file"
            )
        self.finished = False
        self._next = 0
        self._due = None
        if self.path.is_dir():
            images = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise SourceError(f"no .png or .jpg images in {self.path}: add frames or pick another folder")
            self._images = images
            return
        video = cv2.VideoCapture(str(self.path))
        if not video.isOpened():
            video.release()
            raise SourceError(
                f"cannot open {self.path} as a video: use a folder of images or an .avi/.mp4 file"
            )
        self._video = video

    def read(self) -> np.ndarray | None:
        if self.finished:
            return None
        if self._images is None and self._video is None:
            raise SourceError("replay is not open: call open() first")
        self._pace()
        frame = self._read_one()
        if frame is None and self.loop and self._next > 0:
            self._rewind()
            frame = self._read_one()
        if frame is None:
            self.finished = True
            return None
        self._next += 1
        return frame

    def _pace(self) -> None:
        """Wait until the next frame is due: one frame every 1/fps seconds."""
        now = self.clock()
        if self._due is None:
            self._due = now
        elif now < self._due:
            self.sleep(self._due - now)
            now = self._due
        # A slow consumer gets the next frame at once rather than a burst of catch-up frames.
        self._due = max(self._due, now - 1.0 / self.fps) + 1.0 / self.fps

    def _read_one(self) -> np.ndarray | None:
        import cv2

        if self._images is not None:
            while self._next < len(self._images):
                image = cv2.imread(str(self._images[self._next]), cv2.IMREAD_GRAYSCALE)
                if image is not None:
                    return image
                log.warning("skipping unreadable image %s", self._images[self._next].name)
                self._next += 1
            return None
        ok, frame = self._video.read()
        if not ok or frame is None:
            return None
        return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)

    def _rewind(self) -> None:
        import cv2

        self._next = 0
        if self._video is not None:
            self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
        self._images = None


def make_source(kind: Literal["picamera2", "opencv", "replay"], **options: Any) -> FrameSource:
    """The frame source named in config (``camera.source``), built with its options."""
    if kind == "picamera2":
        return Picamera2Source(**options)
    if kind == "opencv":
        return OpenCVSource(**options)
    if kind == "replay":
        return ReplaySource(**options)
    raise SourceError(f"unknown camera source {kind!r}: choose 'picamera2', 'opencv' or 'replay'")
