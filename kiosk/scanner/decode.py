"""QR decoding of gray camera frames: zxing-cpp first, an optional pyzbar backend, a rate-limited second pass.

Decoders return raw payload bytes, never text: chip ID card codes carry UTF-8 Vietnamese without an ECI
header, and a library that guesses the charset turns "Nguyễn" into Shift_JIS or Big5 garbage. The caller
decodes the bytes itself. Defaults here were picked by ``python -m bench scanner`` (bench/scanner.py).
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
    """The primary decoder, a cheap glance at a half-size copy, then a rate-limited closer look.

    1. The primary decoder on the full frame (never downscaled: small ID-card codes need the pixels).
    2. When it finds nothing: a glance — zxing with the global-histogram binarizer on a half-size copy
       (area-averaged, which also smooths a phone screen's moiré and sensor noise). It costs a fraction
       of the primary pass, decodes some frames outright and locates symbols it cannot decode.
    3. When a symbol was located (by 1 or 2) but not decoded: a closer look at that region — crop with a
       quiet-zone margin, upscale ×2 (cubic), stretch the contrast, sharpen or smooth, decode again. At
       most ``max_second_pass_per_s`` closer looks a second, so a code that stays undecodable in front of
       the camera cannot make every frame expensive; frames where nothing is located (almost all empty
       frames) never pay for it.
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
    ) -> None:
        self.primary = primary
        self.second_pass = second_pass
        self.max_second_pass_per_s = max_second_pass_per_s
        self.clock = clock
        self.glance = glance
        self._glance = ZxingDecoder(binarizer="global_histogram", try_downscale=False)
        self._retry = ZxingDecoder(try_downscale=False)
        self._retry_global = ZxingDecoder(binarizer="global_histogram", try_downscale=False)
        self._last_second_pass: float | None = None
        # Counters for the benchmark and the status page.
        self.glance_hits = 0
        self.second_passes = 0
        self.second_pass_hits = 0
        self.second_pass_skipped = 0

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        locate = getattr(self.primary, "decode_and_locate", None)
        if locate is not None:
            decoded, located = locate(gray)
        else:
            decoded, located = self.primary.decode(gray), []
        if decoded or not self.second_pass or _as_gray(gray) is None:
            return decoded
        if self.glance:
            found, more = self._glance_half(gray)
            if found:
                self.glance_hits += 1
                return found
            located = located + more
        if not located:
            return []
        if not self._second_pass_allowed():
            self.second_pass_skipped += 1
            return []
        self.second_passes += 1
        for quad in located[:2]:
            found = self._closer_look(gray, quad)
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

    def _glance_half(self, gray: np.ndarray) -> tuple[list[Decoded], list[Quad]]:
        half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        found, located = self._glance.decode_and_locate(half)
        return [_shift(d, 0, 0, 0.5) for d in found], [_scale_quad(q, 2.0) for q in located]

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
        attempts = (
            (self._retry, sharp),
            (self._retry, smooth),
            (self._retry_global, smooth),
            (self._retry, big),
        )
        for decoder, image in attempts:
            found = decoder.decode(image)
            if found:
                return [_shift(d, left, top, scale) for d in found]
        return []


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
        return LayeredDecoder(ZxingDecoder())
    raise ValueError(f"unknown decoder {name!r}: choose 'layered', 'zxing' or 'pyzbar'")
