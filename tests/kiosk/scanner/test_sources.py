"""Frame sources: replay of image folders and videos (paced by an injected clock), and clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiosk.scanner.sources import (
    OpenCVSource,
    Picamera2Source,
    ReplaySource,
    SourceError,
    make_source,
)


class FakeTime:
    """A clock that only moves when ``sleep`` is called (or when a test advances it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _frame(value: int, size=(64, 48)) -> np.ndarray:
    w, h = size
    img = np.full((h, w), value, dtype=np.uint8)
    cv2.putText(img, str(value), (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255 - value, 2)
    return img


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, value in enumerate((10, 60, 110, 160)):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), _frame(value))
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def video_file(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for value in (20, 120, 220):
        writer.write(cv2.cvtColor(_frame(value), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def _drain(source) -> list[np.ndarray]:
    frames = []
    while not source.finished:
        frame = source.read()
        if frame is not None:
            frames.append(frame)
    return frames


def test_replay_folder_yields_gray_frames_in_order_then_finishes(image_folder):
    t = FakeTime()
    source = ReplaySource(image_folder, fps=10.0, clock=t.clock, sleep=t.sleep)
    source.open()
    frames = _drain(source)
    source.close()
    assert [int(f[0, 0]) for f in frames] == [10, 60, 110, 160]
    assert all(f.ndim == 2 and f.dtype == np.uint8 and f.shape == (48, 64) for f in frames)
    assert source.finished
    assert source.read() is None


def test_replay_paces_frames_with_the_injected_clock(image_folder):
    t = FakeTime()
    source = ReplaySource(image_folder, fps=4.0, clock=t.clock, sleep=t.sleep)
    source.open()
    for _ in range(4):
        source.read()
    assert t.sleeps == pytest.approx([0.25, 0.25, 0.25])
    assert t.now == pytest.approx(100.75)


def test_replay_does_not_sleep_when_the_consumer_is_slower_than_fps(image_folder):
    t = FakeTime()
    source = ReplaySource(image_folder, fps=10.0, clock=t.clock, sleep=t.sleep)
    source.open()
    for _ in range(4):
        source.read()
        t.now += 0.5  # decoding took longer than a frame interval
    assert t.sleeps == []


def test_replay_video_yields_gray_frames_in_order(video_file):
    t = FakeTime()
    source = ReplaySource(video_file, fps=30.0, clock=t.clock, sleep=t.sleep)
    source.open()
    frames = _drain(source)
    source.close()
    assert len(frames) == 3
    assert all(f.ndim == 2 and f.dtype == np.uint8 and f.shape == (48, 64) for f in frames)
    means = [float(f[38:, :].mean()) for f in frames]  # below the digits; MJPG is lossy
    assert means[0] < means[1] < means[2]
    assert abs(means[0] - 20) < 12 and abs(means[2] - 220) < 12


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_replay_loop_restarts_from_the_first_frame(kind, image_folder, video_file):
    path = image_folder if kind == "folder" else video_file
    count = 4 if kind == "folder" else 3
    t = FakeTime()
    source = ReplaySource(path, fps=10.0, loop=True, clock=t.clock, sleep=t.sleep)
    source.open()
    frames = [source.read() for _ in range(2 * count + 1)]
    assert all(f is not None for f in frames)
    assert not source.finished
    first = [float(f.mean()) for f in frames]
    assert first[count] == pytest.approx(first[0], abs=2)
    assert first[2 * count] == pytest.approx(first[0], abs=2)


def test_replay_missing_path_says_what_to_set(tmp_path):
    source = ReplaySource(tmp_path / "nowhere")
    with pytest.raises(SourceError, match=r"does not exist.*replay_path"):
        source.open()


def test_replay_empty_folder_is_an_error(tmp_path):
    with pytest.raises(SourceError, match=r"no \.png or \.jpg images"):
        ReplaySource(tmp_path).open()


def test_read_before_open_is_an_error(image_folder):
    with pytest.raises(SourceError, match="open"):
        ReplaySource(image_folder).read()


def test_make_source_builds_each_kind(image_folder):
    assert isinstance(make_source("replay", path=image_folder, fps=5.0), ReplaySource)
    assert isinstance(make_source("opencv", device=3), OpenCVSource)
    assert isinstance(make_source("picamera2", size=(1920, 1080)), Picamera2Source)
    with pytest.raises(SourceError, match="unknown camera source"):
        make_source("webcam")  # type: ignore[arg-type]


def test_picamera2_constructs_off_the_pi_and_open_says_it_is_not_installed():
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here")
    source = make_source("picamera2")
    with pytest.raises(SourceError, match="picamera2 is not installed"):
        source.open()


def test_opencv_source_on_a_missing_device_says_to_check_the_camera(tmp_path):
    source = OpenCVSource(str(tmp_path / "video99"))
    with pytest.raises(SourceError, match=r"no camera at .*video99"):
        source.open()
