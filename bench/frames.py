"""Deterministic synthetic camera frames for the scanner benchmark: one QR (segno) per frame, or none.

Each frame is rendered the way a kiosk camera would see it: a textured background, a carrier (phone,
printed pass or chip ID card) holding the code, placed in 3-D (a homography), then optics blur, sensor
noise and sometimes JPEG (USB webcams send MJPG). One distortion category is laid on top. Everything
is drawn from ``numpy.random.default_rng([seed, width, index])``, so a frame does not depend on how
many frames are generated around it.

Payloads look like the real ones: health passes ``"AT1:"`` + 300-400 characters from the QR
alphanumeric set, and chip ID card (CCCD) texts with Vietnamese diacritics in UTF-8 byte mode with
no ECI header (what makes pyzbar guess Big5/Shift_JIS).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import segno

CATEGORIES = (
    "clean",
    "perspective",
    "blur",
    "low_light",
    "low_contrast",
    "glare",
    "moire",
    "small",
    "rotation",
    "inverted",
)
RESOLUTIONS = ((640, 480), (1280, 720))
EXPOSURES = ("under", "over", "shade")
DEFAULT_SEED = 20_240_611
QR_ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
QUIET = 4  # modules of quiet zone around the symbol

_FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ")
_MIDDLE = ("Văn", "Thị", "Hữu", "Đức", "Ngọc", "Thanh", "Minh", "Quốc", "Thuỳ", "Xuân")
_GIVEN = ("An", "Bình", "Cường", "Dũng", "Hương", "Lan", "Nhung", "Phương", "Quyết", "Thảo", "Tuấn", "Yến")
_STREETS = ("Lê Lợi", "Trần Hưng Đạo", "Nguyễn Huệ", "Hai Bà Trưng", "Điện Biên Phủ", "Lý Thường Kiệt")
_WARDS = ("Bến Thành", "Hàng Bạc", "Phú Nhuận", "Thạch Thang", "Vĩnh Ninh", "Đông Hải")
_CITIES = ("TP Hồ Chí Minh", "Hà Nội", "Đà Nẵng", "Huế", "Hải Phòng", "Cần Thơ")


@dataclass(frozen=True, slots=True)
class Frame:
    """One synthetic gray frame and the payload bytes a decoder must return (None: no code)."""

    image: np.ndarray
    expected: bytes | None
    category: str  # one of CATEGORIES, "empty", or one of EXPOSURES
    index: int
    centre: tuple[float, float] | None = None  # the code's centre in the frame (pixels), if any


# ----- payloads -----------------------------------------------------------------------------------


def health_pass_payload(rng: np.random.Generator) -> bytes:
    """``AT1:`` + 300-400 random QR-alphanumeric characters (a signed pass, minus the signature)."""
    n = int(rng.integers(300, 401))
    chars = rng.choice(list(QR_ALPHANUMERIC), size=n)
    return ("AT1:" + "".join(chars)).encode("ascii")


def cccd_payload(rng: np.random.Generator) -> bytes:
    """A chip ID card text: ids, a Vietnamese name and address, dates, separated by ``|``."""
    name = f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE)} {rng.choice(_GIVEN)}"
    address = (
        f"{int(rng.integers(1, 400))} Đường {rng.choice(_STREETS)}, Phường {rng.choice(_WARDS)}, "
        f"{rng.choice(_CITIES)}"
    )
    born = f"{int(rng.integers(1, 29)):02d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1940, 2010))}"
    issued = f"{int(rng.integers(1, 29)):02d}{int(rng.integers(1, 13)):02d}{int(rng.integers(2016, 2025))}"
    text = "|".join(
        (
            f"{int(rng.integers(0, 10**12)):012d}",
            f"{int(rng.integers(0, 10**9)):09d}",
            name,
            born,
            str(rng.choice(("Nam", "Nữ"))),
            address,
            issued,
        )
    )
    return text.encode("utf-8")


def qr_modules(payload: bytes) -> np.ndarray:
    """The symbol as a bool array (True = dark), quiet zone included. UTF-8 bytes, no ECI header."""
    try:
        content: str | bytes = payload.decode("ascii")
    except UnicodeDecodeError:
        content = payload.decode("utf-8")
    qr = segno.make(content, error="m", micro=False, encoding="utf-8", eci=False, boost_error=False)
    matrix = np.array(qr.matrix, dtype=bool)
    return np.pad(matrix, QUIET, constant_values=False)


# ----- scene pieces -------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] (a small random grid upscaled with cubic interpolation)."""
    h, w = shape
    small = rng.random((max(2, cells * h // max(w, 1)), cells)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _clutter_text(rng: np.random.Generator) -> str:
    n = int(rng.integers(4, 18))
    return "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 abcdefghijk-:/"), size=n))


def background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A cluttered entrance scene: gradients, shapes, text, face-like blobs, fine texture (float32)."""
    w, h = size
    # OpenCV 5 draws text on 8-bit images only: draw on uint8, then go to float for the camera model.
    img = (60 + 120 * _smooth_noise(rng, (h, w), int(rng.integers(3, 8)))).astype(np.uint8)
    scale = h / 720
    for _ in range(int(rng.integers(3, 9))):  # boxes, door frames, posters
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        bw, bh = int(rng.integers(20, 300) * scale) + 1, int(rng.integers(20, 300) * scale) + 1
        cv2.rectangle(
            img, (x, y), (x + bw, y + bh), float(rng.integers(10, 250)), int(rng.choice((-1, 2, 4)))
        )
    for _ in range(int(rng.integers(2, 8))):  # signs and labels
        org = (int(rng.integers(0, w - 50)), int(rng.integers(20, h)))
        cv2.putText(
            img,
            _clutter_text(rng),
            org,
            int(rng.choice((cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN))),
            float(rng.uniform(0.5, 2.0) * scale * 1.5),
            float(rng.choice((15, 30, 220, 240))),
            int(rng.integers(1, 4)),
            cv2.LINE_AA,
        )
    for _ in range(int(rng.integers(0, 3))):  # face-like blobs: an oval with eyes and a mouth
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        rx = int(rng.integers(40, 120) * scale) + 4
        ry = int(rx * 1.3)
        cv2.ellipse(img, (cx, cy), (rx, ry), 0, 0, 360, float(rng.integers(120, 200)), -1, cv2.LINE_AA)
        for ex in (-1, 1):
            cv2.circle(img, (cx + ex * rx // 3, cy - ry // 5), max(2, rx // 8), 40.0, -1, cv2.LINE_AA)
        cv2.ellipse(img, (cx, cy + ry // 3), (rx // 3, max(2, ry // 10)), 0, 0, 180, 60.0, 3, cv2.LINE_AA)
    if rng.random() < 0.5:  # a checkerboard tile floor or a patterned shirt
        period = int(rng.integers(6, 30) * scale) + 2
        yy, xx = np.mgrid[0:h, 0:w]
        checker = (((xx // period) + (yy // period)) % 2).astype(np.float32)
        region = _smooth_noise(rng, (h, w), 3) > 0.6
        img = np.where(region, img * 0.6 + 80 * checker, img).astype(np.uint8)
    img = img.astype(np.float32)
    img += rng.normal(0, 6, (h, w)).astype(np.float32) * _smooth_noise(rng, (h, w), 5)
    return img.astype(np.float32)


def _homography(
    rng: np.random.Generator, size: tuple[int, int], side_px: float, *, tilt_deg: float, spin_deg: float
) -> np.ndarray:
    """Homography from the unit square (the code plane, [0, 1]²) to frame pixels, via a 3-D pose."""
    w, h = size
    focal = 1.0 * w  # about a 53° horizontal field of view
    distance = focal / side_px  # the code is 1 unit wide: at this distance it spans side_px when frontal
    axis = rng.uniform(0, 2 * math.pi)
    tilt = math.radians(tilt_deg)
    # Rotate the plane by `tilt` around an in-plane axis at angle `axis`, then spin it around the view axis.
    ux, uy = math.cos(axis), math.sin(axis)
    c, s = math.cos(tilt), math.sin(tilt)
    rot_tilt = np.array(
        [
            [c + ux * ux * (1 - c), ux * uy * (1 - c), uy * s],
            [uy * ux * (1 - c), c + uy * uy * (1 - c), -ux * s],
            [-uy * s, ux * s, c],
        ]
    )
    sp = math.radians(spin_deg)
    rot_spin = np.array([[math.cos(sp), -math.sin(sp), 0], [math.sin(sp), math.cos(sp), 0], [0, 0, 1]])
    rot = rot_spin @ rot_tilt
    corners = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]])
    cam = corners @ rot.T + np.array([0, 0, distance])
    proj = focal * cam[:, :2] / cam[:, 2:3]
    extent = proj.max(axis=0) - proj.min(axis=0)
    margin = np.maximum(0, (np.array([w, h]) - extent) / 2 - 4)
    centre = np.array([w / 2, h / 2]) + rng.uniform(-1, 1, 2) * margin * 0.8
    dst = (proj - (proj.max(axis=0) + proj.min(axis=0)) / 2 + centre).astype(np.float32)
    src = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float32)
    return cv2.getPerspectiveTransform(src, dst)


@dataclass(slots=True)
class _Look:
    """How the carrier and the code are drawn (gray levels and carrier type)."""

    dark: float = 25.0
    light: float = 225.0
    carrier: str = "phone"  # "phone" | "paper" | "card"
    screen_grid: float = 0.0  # depth of the screen pixel grid (moiré) 0..1


def _plane(
    modules: np.ndarray, look: _Look, px: int, rng: np.random.Generator
) -> tuple[np.ndarray, int, int]:
    """The carrier with the code drawn on it at ``px`` pixels per module; returns (image, top, left)."""
    n = modules.shape[0]
    code = np.where(modules, look.dark, look.light).astype(np.float32)
    code = cv2.resize(code, (n * px, n * px), interpolation=cv2.INTER_NEAREST)
    pad = int(n * px * 0.12)
    bottom = pad if look.carrier != "phone" else int(n * px * 0.55)
    top = pad if look.carrier != "phone" else int(n * px * 0.3)
    margin_colour = look.light
    plane = np.full((top + n * px + bottom, 2 * pad + n * px), round(margin_colour), dtype=np.uint8)
    plane[top : top + n * px, pad : pad + n * px] = np.round(code).astype(np.uint8)
    ph = plane.shape[0]
    ink = round(look.dark)
    if look.carrier == "phone":
        cv2.putText(
            plane, "AnToan", (pad, top // 2 + px), cv2.FONT_HERSHEY_SIMPLEX, px * 0.5, ink, max(1, px)
        )
        bezel = max(2, px * 2)
        plane = cv2.copyMakeBorder(plane, bezel, bezel, bezel, bezel, cv2.BORDER_CONSTANT, value=12)
        return plane.astype(np.float32), bezel + top, bezel + pad
    for row in range(3):  # printed lines under the code
        y = top + n * px + (row + 1) * pad // 4
        if y < ph:
            cv2.putText(plane, _clutter_text(rng), (pad, y), cv2.FONT_HERSHEY_PLAIN, px * 0.25, ink, 1)
    return plane.astype(np.float32), top, pad


def _place(
    frame: np.ndarray,
    rng: np.random.Generator,
    modules: np.ndarray,
    look: _Look,
    *,
    module_px: float,
    tilt_deg: float,
    spin_deg: float,
) -> np.ndarray:
    """Draw the carrier with the code into ``frame`` (float32, in place); returns the code's homography."""
    h, w = frame.shape
    n = modules.shape[0]
    supersample = 3 if look.screen_grid > 0 else 1.5
    px = max(2, math.ceil(module_px * supersample))
    plane, top, left = _plane(modules, look, px, rng)
    if look.screen_grid > 0:
        # A phone screen's pixel grid at a slight angle: aliases into moiré when the camera samples it.
        period = rng.uniform(2.2, 3.6)
        angle = rng.uniform(-0.3, 0.3)
        yy, xx = np.mgrid[0 : plane.shape[0], 0 : plane.shape[1]].astype(np.float32)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
        grid = 1 - look.screen_grid * (0.5 + 0.5 * np.cos(phase))
        plane = plane * grid
    code_side = n * px
    hom = _homography(rng, (w, h), module_px * n, tilt_deg=tilt_deg, spin_deg=spin_deg)
    # plane pixels → unit square of the code → frame pixels
    to_unit = np.array(
        [[1 / code_side, 0, -left / code_side], [0, 1 / code_side, -top / code_side], [0, 0, 1]]
    )
    full = hom @ to_unit
    interp = cv2.INTER_NEAREST if look.screen_grid > 0 else cv2.INTER_LINEAR
    warped = cv2.warpPerspective(
        plane, full, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=-1
    )
    mask = warped >= 0
    frame[mask] = warped[mask]
    return hom


def _camera(img: np.ndarray, rng: np.random.Generator, *, noise: float, jpeg: bool) -> np.ndarray:
    """Optics blur, sensor noise, quantisation and optional JPEG: float32 scene → uint8 frame."""
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 0.8)))
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if jpeg:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 95))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


# ----- frames -------------------------------------------------------------------------------------


def make_code_frame(category: str, size: tuple[int, int], rng: np.random.Generator, index: int = 0) -> Frame:
    """One frame of ``category`` at ``size`` (width, height) with one code in it."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}")
    w, h = size
    k = h / 720  # the same field of view at both resolutions: fewer pixels per module at 480p
    card = category == "small" or rng.random() < 0.35
    payload = cccd_payload(rng) if card else health_pass_payload(rng)
    modules = qr_modules(payload)
    n = modules.shape[0]
    look = _Look(carrier="card" if card else str(rng.choice(("phone", "phone", "paper"))))
    # A normal presentation: the code fills 35-60 % of the frame height.
    module_px = rng.uniform(0.35, 0.6) * h / n
    tilt, spin = rng.uniform(0, 12), rng.uniform(-8, 8)
    noise = rng.uniform(1.5, 3.0)
    frame = background(rng, size)
    post = None

    if category == "perspective":
        tilt = rng.uniform(30, 60)
    elif category == "blur":
        post = "motion" if rng.random() < 0.5 else "defocus"
    elif category == "low_light":
        post = "dark"
    elif category == "low_contrast":
        mid, contrast = rng.uniform(90, 180), rng.uniform(12, 35)
        look.dark, look.light = mid - contrast / 2, mid + contrast / 2
    elif category == "glare":
        post = "glare"
    elif category == "moire":
        look.carrier = "phone"
        look.screen_grid = rng.uniform(0.4, 0.8)
        post = "banding"
    elif category == "small":
        module_px = rng.uniform(2.0, 3.0) * k
        tilt, spin = rng.uniform(0, 15), rng.uniform(-15, 15)
    elif category == "rotation":
        spin = rng.uniform(0, 360)
    elif category == "inverted":
        look.carrier = "phone"
        look.dark, look.light = rng.uniform(200, 235), rng.uniform(15, 40)  # light modules on a dark screen

    hom = _place(frame, rng, modules, look, module_px=module_px, tilt_deg=tilt, spin_deg=spin)

    if post == "motion":
        length = max(3, round(rng.uniform(5, 13) * k))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1 / length
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        frame = cv2.filter2D(frame, -1, kernel / max(kernel.sum(), 1e-6))
    elif post == "defocus":
        frame = cv2.GaussianBlur(frame, (0, 0), float(rng.uniform(1.4, 3.0) * k))
    elif post == "dark":
        frame = frame * rng.uniform(0.06, 0.2)
        noise = rng.uniform(3.0, 7.0)
    elif post == "glare":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        # A specular highlight somewhere on the code, 10-25 % of its side across.
        centre = cv2.perspectiveTransform(rng.uniform(0.15, 0.85, (1, 1, 2)).astype(np.float32), hom)
        cx, cy = (float(v) for v in centre[0, 0])
        side = module_px * n
        rx, ry = rng.uniform(0.12, 0.35) * side, rng.uniform(0.1, 0.3) * side
        blob = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2))
        frame = frame + rng.uniform(150, 260) * blob
    elif post == "banding":
        yy = np.arange(h, dtype=np.float32)[:, None]
        bands = 1 + rng.uniform(0.1, 0.3) * np.sin(
            yy * 2 * math.pi / rng.uniform(40, 160) + rng.uniform(0, 6)
        )
        frame = frame * bands

    image = _camera(frame, rng, noise=noise, jpeg=bool(rng.random() < 0.5))
    (centre,) = cv2.perspectiveTransform(np.array([[[0.5, 0.5]]], np.float32), hom)[0]
    return Frame(
        image=image,
        expected=payload,
        category=category,
        index=index,
        centre=(float(centre[0]), float(centre[1])),
    )


def make_empty_frame(size: tuple[int, int], rng: np.random.Generator, index: int = 0) -> Frame:
    """A frame with no code: background clutter only (sometimes dark, sometimes a blank phone/card)."""
    frame = background(rng, size)
    if rng.random() < 0.3:
        w, h = size
        x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        layer = np.clip(frame, 0, 255).astype(np.uint8)  # a blank phone or card held up
        cv2.rectangle(layer, (x, y), (x + int(0.3 * h), y + int(0.5 * h)), int(rng.integers(180, 240)), -1)
        cv2.putText(layer, _clutter_text(rng), (x + 5, y + 40), cv2.FONT_HERSHEY_SIMPLEX, h / 720, 20, 2)
        frame = layer.astype(np.float32)
    if rng.random() < 0.2:
        frame = frame * rng.uniform(0.15, 0.4)
    image = _camera(frame, rng, noise=float(rng.uniform(1.5, 4.0)), jpeg=bool(rng.random() < 0.5))
    return Frame(image=image, expected=None, category="empty", index=index)


def code_frames(size: tuple[int, int], count: int, *, seed: int = DEFAULT_SEED) -> Iterator[Frame]:
    """``count`` code frames at ``size``, categories in turn (frame ``i`` is ``CATEGORIES[i % 10]``)."""
    for i in range(count):
        rng = np.random.default_rng([seed, size[0], i])
        yield make_code_frame(CATEGORIES[i % len(CATEGORIES)], size, rng, index=i)


def empty_frames(size: tuple[int, int], count: int, *, seed: int = DEFAULT_SEED) -> Iterator[Frame]:
    """``count`` frames without a code at ``size``."""
    for i in range(count):
        rng = np.random.default_rng([seed, size[0], 1_000_000 + i])
        yield make_empty_frame(size, rng, index=i)


def exposure_frames(size: tuple[int, int], count: int, *, seed: int = DEFAULT_SEED) -> Iterator[Frame]:
    """``count`` card-size (``small``) code frames re-exposed in turn: ``EXPOSURES[i % 3]``.

    The cases a split at mid-gray cannot see: ``under`` (the whole frame darkened to 30-65 %), ``over``
    (dark modules lifted to 45-75 % of white) and ``shade`` (the card in a soft shadow, 45-70 % darker at
    its centre, while the scene around it is lit). The cards are new draws, not the benchmark's own.
    """
    for i in range(count):
        rng = np.random.default_rng([seed, size[0], 2_000_000 + i])
        frame = make_code_frame("small", size, rng, index=i)
        kind = EXPOSURES[i % len(EXPOSURES)]
        img = frame.image.astype(np.float32)
        if kind == "under":
            img = img * rng.uniform(0.3, 0.65)
        elif kind == "over":
            img = 255 - (255 - img) * rng.uniform(0.3, 0.6)
        else:
            h, w = img.shape
            cx, cy = frame.centre or (w / 2, h / 2)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            radius = rng.uniform(150, 260) * h / 720
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / radius**2)
            img = img * (1 - rng.uniform(0.45, 0.7) * blob) + rng.uniform(0, 40) * (1 - blob)
        image = np.clip(img, 0, 255).astype(np.uint8)
        yield Frame(image=image, expected=frame.expected, category=kind, index=i, centre=frame.centre)
