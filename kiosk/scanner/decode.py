"""QR decoding of gray camera frames: zxing-cpp first, an optional pyzbar backend, a layered decoder.

Decoders return raw payload bytes, never text: chip ID card codes carry UTF-8 Vietnamese without an ECI
header, and a library that guesses the charset turns "Nguyễn" into Shift_JIS or Big5 garbage. The caller
decodes the bytes itself.

The kiosk's default is ``make_decoder("layered")``; its stages and settings were picked with
``python -m bench scanner`` (bench/scanner.py) on its 1,000 distorted code frames and 200 empty frames
per resolution (issue 3). Counts below are code frames decoded at 1280x720, 0 wrong decodes throughout:

- Full-frame zxing-cpp pass without ``try_invert`` and ``try_downscale``: 725. Those two options cost
  35-50 % of zxing's time on an empty frame and their work is done more cheaply by the glance
  (zxing with both on, alone: 853).
- The glance, when the full-frame pass finds nothing: +186 (100 of them inverted codes). zxing's
  LocalAverage binarizer treats blocks with a range under 24 grey levels as background, which is why
  low-contrast and low-light codes fail; moiré defeats it too. An OpenCV box-mean threshold with a
  ±2 margin on a copy with a ~360 px short side (half size at 1280x720) binarizes them, and the
  margin keeps flat noisy areas white, so the finder search on an empty frame stays short (±3: about
  4 % cheaper, 923). Tried and dropped: zxing's GlobalHistogram on the half
  copy (the previous glance, 894 in all), a plain half-size LocalAverage pass with ``try_invert``
  (879), CLAHE or histogram equalisation first (867-888), a band-pass with gain (930, but zxing on the
  amplified noise took three times as long), zxing's GlobalHistogram on the mean-subtracted copy (872),
  subsampling instead of area averaging (893), the glance before the full-frame pass with the latter
  gated on a location (loses 163 codes only the full-resolution pass sees: small ID cards, steep
  perspective).
- The closer look at a located but undecoded symbol: +21, 932 in all. Its band-pass variants add
  5 at 640x480 and none at 1280x720. It runs on no empty frame of the benchmark.
- The inverted search is not a separate gated pass: in the glance it costs one binarization and one
  zxing search of a binary image (about 0.18 ms at 1280x720), which no cheap "is it light on dark"
  test we found could undercut; and a glance at a half-size copy of a 640x480 frame loses inverted
  codes, so the glance copy keeps a short side of about 360 px.

Cost on an empty 1280x720 frame (median, same benchmark run, load average about 1): 1.66 ms against
1.61 ms for zxing-cpp alone with its defaults, so the issue's 1.5 ms target is missed. The full-frame
pass takes 0.5-0.65 of zxing's time (zxing's own binarization and finder search over 0.9 Mpixel, which
no option shortens further), the glance the rest: the resize and the box mean about 0.2 ms each, the
two binary searches about 0.15 ms each. Downscaling the full-frame pass to 0.75-0.8 would pay for the
glance but reads only 90 % of the small ID-card codes, against 100 %.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np
import zxingcpp

log = logging.getLogger(__name__)

Quad = tuple[tuple[int, int], ...]
MIN_SIDE = 21  # a version-1 QR needs at least 21 pixels across


class DecoderUnavailable(RuntimeError, ImportError):
    """A decoder backend cannot run here (a library is missing); the message says what to install."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decoded code: the payload bytes as stored in the symbol, and its corners (may be empty)."""

    raw: bytes
    position: Quad = ()


class Decoder(Protocol):
    name: str

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        """All QR codes in a 2-D uint8 frame, as raw bytes."""
        ...


def _as_gray(gray: np.ndarray) -> np.ndarray | None:
    """A C-contiguous 2-D uint8 view of ``gray``, or None when it is too small to hold a code."""
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D gray frame, got an array of shape {gray.shape}")
    if gray.shape[0] < MIN_SIDE or gray.shape[1] < MIN_SIDE:
        return None
    if gray.dtype != np.uint8:
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(gray)


def _quad(position: zxingcpp.Position) -> Quad:
    return tuple(
        (int(p.x), int(p.y))
        for p in (position.top_left, position.top_right, position.bottom_right, position.bottom_left)
    )


_BINARIZERS = {
    "local_average": zxingcpp.Binarizer.LocalAverage,
    "global_histogram": zxingcpp.Binarizer.GlobalHistogram,
    "fixed_threshold": zxingcpp.Binarizer.FixedThreshold,
}


class ZxingDecoder:
    """zxing-cpp, QR only, inverted (dark-mode) codes on; returns ``Barcode.bytes``, never its text."""

    name = "zxing"

    def __init__(
        self,
        *,
        binarizer: Literal["local_average", "global_histogram", "fixed_threshold"] = "local_average",
        try_rotate: bool = True,
        try_downscale: bool = True,
        try_invert: bool = True,
    ) -> None:
        if binarizer not in _BINARIZERS:
            raise ValueError(f"unknown binarizer {binarizer!r}; choose from {', '.join(_BINARIZERS)}")
        self.options = {
            "formats": zxingcpp.BarcodeFormat.QRCode,
            "binarizer": _BINARIZERS[binarizer],
            "try_rotate": try_rotate,
            "try_downscale": try_downscale,
            "try_invert": try_invert,
            "text_mode": zxingcpp.TextMode.Plain,  # we only read .bytes; Plain skips the HRI formatting
        }

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        return self.decode_and_locate(gray)[0]

    def decode_and_locate(self, gray: np.ndarray) -> tuple[list[Decoded], list[Quad]]:
        """Decoded codes, and the corners of QR symbols that were found but failed to decode.

        The failures come from the same zxing call (``return_errors``), so locating costs nothing extra.
        """
        image = _as_gray(gray)
        if image is None:
            return [], []
        decoded: list[Decoded] = []
        failed: list[Quad] = []
        for barcode in zxingcpp.read_barcodes(image, return_errors=True, **self.options):
            if barcode.valid:
                decoded.append(Decoded(raw=bytes(barcode.bytes), position=_quad(barcode.position)))
            elif barcode.format in (zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.QRCodeModel2):
                failed.append(_quad(barcode.position))
        return decoded, failed


class PyzbarDecoder:
    """ZBar through pyzbar in raw-bytes mode (``ZBAR_CFG_BINARY``): no charset guessing. QR only."""

    name = "pyzbar"
    _CFG_ENABLE = 0
    _CFG_BINARY = 4  # zbar >= 0.23: return the bytes as stored instead of guessing a text encoding
    _QRCODE = 64

    def __init__(self) -> None:
        try:
            from pyzbar import pyzbar
            from pyzbar import wrapper as zbar
        except ImportError as exc:  # pyzbar raises ImportError when libzbar.so is not found
            raise DecoderUnavailable(
                f"pyzbar cannot load ({exc}): install Debian's libzbar0 (apt install libzbar0) and "
                "pip install 'antoan-checkin[pyzbar]', or use decoder 'zxing'"
            ) from exc
        self._pyzbar = pyzbar
        self._zbar = zbar
        from ctypes import c_void_p, cast

        self._cast, self._c_void_p = cast, c_void_p
        self._scanner = zbar.zbar_image_scanner_create()
        if not self._scanner:
            raise DecoderUnavailable("libzbar could not create an image scanner")
        zbar.zbar_image_scanner_set_config(self._scanner, 0, self._CFG_ENABLE, 0)  # all symbologies off
        zbar.zbar_image_scanner_set_config(self._scanner, self._QRCODE, self._CFG_ENABLE, 1)
        if zbar.zbar_image_scanner_set_config(self._scanner, self._QRCODE, self._CFG_BINARY, 1) != 0:
            raise DecoderUnavailable(
                "this libzbar has no binary mode (needs zbar >= 0.23); it would mangle UTF-8 names: "
                "upgrade libzbar0 or use decoder 'zxing'"
            )

    def __del__(self) -> None:
        scanner = getattr(self, "_scanner", None)
        if scanner:
            self._zbar.zbar_image_scanner_destroy(scanner)
            self._scanner = None

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        image = _as_gray(gray)
        if image is None:
            return []
        zbar = self._zbar
        height, width = image.shape
        pixels = image.tobytes()
        out: list[Decoded] = []
        with self._pyzbar._image() as img:
            zbar.zbar_image_set_format(img, 808466521)  # 'Y800': 8-bit gray
            zbar.zbar_image_set_size(img, width, height)
            zbar.zbar_image_set_data(img, self._cast(pixels, self._c_void_p), len(pixels), None)
            if zbar.zbar_scan_image(self._scanner, img) < 0:
                return []
            for found in self._pyzbar._decode_symbols(self._pyzbar._symbols_for_image(img)):
                if found.type != "QRCODE":
                    continue
                corners = tuple((int(p.x), int(p.y)) for p in found.polygon)
                out.append(Decoded(raw=bytes(found.data), position=corners if len(corners) == 4 else ()))
        return out


class LayeredDecoder:
    """A full-frame zxing pass, a local-threshold glance at a small copy, a rate-limited closer look.

    1. The primary decoder on the full frame (never downscaled: small ID-card codes need the pixels).
       ``make_decoder("layered")`` gives it zxing-cpp with ``try_invert``/``try_downscale`` off: the
       glance covers both on a smaller copy (a quarter of the pixels at 1280x720).
    2. When it finds nothing: a glance at a copy whose short side is about ``glance_side`` pixels
       (averaged down, which also smooths sensor noise and a phone screen's moiré). OpenCV binarizes it
       against a 15×15 local mean with a small margin, once for dark-on-light and once for light-on-dark
       (inverted, dark-mode screens), and zxing-cpp searches each binary image. Unlike zxing's own
       LocalAverage binarizer this has no minimum contrast, so low-contrast and low-light codes binarize;
       the margin keeps flat, noisy areas white, so the finder search on an empty frame stays cheap.
    3. When a symbol was located (by 1 or 2) but not decoded, and ``second_pass`` is on: a closer look
       at that region of the full frame — crop with a quiet-zone margin, upscale ×2 (cubic), stretch the
       contrast, sharpen, smooth or band-pass, decode again. At most ``max_second_pass_per_s`` closer
       looks a second, so a code that stays undecodable in front of the camera cannot make every frame
       expensive; frames where nothing is located (almost all empty frames) never pay for it.
    """

    name = "layered"

    def __init__(
        self,
        primary: Decoder,
        *,
        second_pass: bool = True,
        max_second_pass_per_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        glance: bool = True,
        glance_side: int = 360,
        glance_window: int = 15,
        glance_margin: int = 2,
    ) -> None:
        self.primary = primary
        self.second_pass = second_pass
        self.max_second_pass_per_s = max_second_pass_per_s
        self.clock = clock
        self.glance = glance
        self.glance_side = glance_side
        self.glance_window = glance_window
        self.glance_margin = glance_margin
        self._binary = ZxingDecoder(binarizer="fixed_threshold", try_downscale=False, try_invert=False)
        self._retry = ZxingDecoder(try_downscale=False)
        self._retry_global = ZxingDecoder(binarizer="global_histogram", try_downscale=False)
        self._last_second_pass: float | None = None
        # Counters for the benchmark and the status page.
        self.primary_hits = 0
        self.glance_hits = 0
        self.glance_inverted_hits = 0
        self.second_passes = 0
        self.second_pass_hits = 0
        self.second_pass_skipped = 0

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        locate = getattr(self.primary, "decode_and_locate", None)
        if locate is not None:
            decoded, located = locate(gray)
        else:
            decoded, located = self.primary.decode(gray), []
        if decoded:
            self.primary_hits += 1
            return decoded
        image = _as_gray(gray)
        if image is None:
            return []
        if self.glance:
            found, more = self._glance(image)
            if found:
                self.glance_hits += 1
                return found
            located = located + more
        if not located or not self.second_pass:
            return []
        if not self._second_pass_allowed():
            self.second_pass_skipped += 1
            return []
        self.second_passes += 1
        for quad in located[:2]:
            found = self._closer_look(image, quad)
            if found:
                self.second_pass_hits += 1
                return found
        return []

    def _second_pass_allowed(self) -> bool:
        """At most ``max_second_pass_per_s`` closer looks a second (0 or less: none; ``math.inf``: all)."""
        if self.max_second_pass_per_s <= 0:
            return False
        now = self.clock()
        if (
            self._last_second_pass is not None
            and now - self._last_second_pass < 1.0 / self.max_second_pass_per_s
        ):
            return False
        self._last_second_pass = now
        return True

    def _glance(self, gray: np.ndarray) -> tuple[list[Decoded], list[Quad]]:
        """Local-mean binarization of a small copy, both polarities; decoded codes or located symbols."""
        factor = min(1.0, self.glance_side / min(gray.shape))
        # At exactly 1/2 both average 2x2 pixels; at other factors above 1/2 OpenCV's INTER_AREA takes a
        # slow generic path (0.8 ms against 0.14 ms for 640x480 -> 480x360, measured here).
        interpolation = cv2.INTER_AREA if factor <= 0.5 else cv2.INTER_LINEAR
        small = (
            cv2.resize(gray, None, fx=factor, fy=factor, interpolation=interpolation) if factor < 1 else gray
        )
        mean = cv2.blur(small, (self.glance_window, self.glance_window))
        located: list[Quad] = []
        # 255 (white) unless the pixel is clearly darker than its neighbourhood: dark-on-light codes.
        dark_on_light = cv2.compare(small, cv2.subtract(mean, self.glance_margin), cv2.CMP_GE)
        # 255 unless the pixel is clearly lighter: light-on-dark (inverted) codes come out dark-on-light.
        light_on_dark = cv2.compare(small, cv2.add(mean, self.glance_margin), cv2.CMP_LE)
        for binary, inverted in ((dark_on_light, False), (light_on_dark, True)):
            found, more = self._binary.decode_and_locate(binary)
            if found:
                self.glance_inverted_hits += inverted
                return [_shift(d, 0, 0, factor) for d in found], []
            located += [_scale_quad(q, 1 / factor) for q in more]
        return [], located

    def _closer_look(self, gray: np.ndarray, quad: Quad) -> list[Decoded]:
        """Crop around ``quad`` (with a quiet-zone margin), upscale, normalise, filter, decode again."""
        pts = np.array(quad, dtype=np.float32)
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        margin = 0.2 * max(x1 - x0, y1 - y0) + 8
        h, w = gray.shape
        left, top = max(0, int(x0 - margin)), max(0, int(y0 - margin))
        right, bottom = min(w, int(x1 + margin) + 1), min(h, int(y1 + margin) + 1)
        crop = gray[top:bottom, left:right]
        if crop.shape[0] < MIN_SIDE or crop.shape[1] < MIN_SIDE:
            return []
        scale = 2.0 if max(crop.shape) <= 700 else 1.0
        big = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale > 1 else crop
        big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)
        soft = cv2.GaussianBlur(big, (0, 0), 2.0 * scale)
        sharp = cv2.addWeighted(big, 1.8, soft, -0.8, 0)
        smooth = cv2.GaussianBlur(big, (0, 0), 1.0 * scale)
        attempts = [
            (self._retry, sharp),
            (self._retry, smooth),
            (self._retry_global, smooth),
            (self._retry, big),
        ]
        for decoder, image in attempts:
            found = decoder.decode(image)
            if found:
                return [_shift(d, left, top, scale) for d in found]
        # Band-pass (difference of Gaussians) with gain: removes banding and glare gradients, keeps the
        # module frequency, and lifts low contrast above zxing's minimum dynamic range.
        for sigma_low, gain in ((6.0, 4.0), (6.0, 2.0), (9.0, 4.0)):
            band = _band_pass(crop, sigma_low, gain)
            if scale > 1:
                band = cv2.resize(band, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            found = self._retry.decode(band)
            if found:
                return [_shift(d, left, top, scale) for d in found]
        return []


def _band_pass(gray: np.ndarray, sigma_low: float, gain: float) -> np.ndarray:
    """``128 + gain × (G(σ=1) − G(σ=sigma_low))`` of ``gray``, as uint8."""
    f = gray.astype(np.float32)
    band = cv2.GaussianBlur(f, (0, 0), 1.0) - cv2.GaussianBlur(f, (0, 0), sigma_low)
    return np.clip(128.0 + gain * band, 0, 255).astype(np.uint8)


def _scale_quad(quad: Quad, factor: float) -> Quad:
    return tuple((int(x * factor), int(y * factor)) for x, y in quad)


def _shift(decoded: Decoded, left: int, top: int, scale: float) -> Decoded:
    """Corners from crop coordinates back to frame coordinates."""
    position = tuple((int(x / scale) + left, int(y / scale) + top) for x, y in decoded.position)
    return Decoded(raw=decoded.raw, position=position)


def make_decoder(name: Literal["zxing", "pyzbar", "layered"] = "layered") -> Decoder:
    """The kiosk's decoder by config name; ``layered`` (zxing-cpp plus a second pass) is the default."""
    if name == "zxing":
        return ZxingDecoder()
    if name == "pyzbar":
        return PyzbarDecoder()
    if name == "layered":
        return LayeredDecoder(ZxingDecoder(try_invert=False, try_downscale=False, try_rotate=False))
    raise ValueError(f"unknown decoder {name!r}: choose 'layered', 'zxing' or 'pyzbar'")
