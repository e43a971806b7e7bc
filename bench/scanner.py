"""Scanner benchmark: decode rate per distortion category, wrong decodes and per-frame cost, per backend.

Frames come from bench/frames.py (seeded, so every run sees the same frames). Each frame is generated
once and given to every backend. The layered decoder gets a simulated clock that advances one second
per frame: every benchmark frame is a new presentation of a code, so its rate limit never binds here
(on the kiosk a code stays in view for many frames and the limit only spaces the retries out).

The empty-frame target is checked on a second measurement: the kiosk default and zxing-cpp alone take
turns, ``EMPTY_CHUNK`` empty frames each, over the whole set ``EMPTY_REPEATS`` times, so a noisy
neighbour on a shared machine slows both alike; wall time and process CPU time per call, their medians
and the ratio of the medians. An exposure set (card-size codes under- or over-exposed or in a
shadow) checks the cases a mid-gray split cannot see.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from bench.common import fmt, progress, table
from bench.frames import (
    CATEGORIES,
    DEFAULT_SEED,
    EXPOSURES,
    RESOLUTIONS,
    code_frames,
    empty_frames,
    exposure_frames,
)
from kiosk.scanner.decode import (
    Decoder,
    DecoderUnavailable,
    LayeredDecoder,
    PyzbarDecoder,
    ZxingDecoder,
    make_decoder,
)

TARGET_RATE_720P = 0.92
TARGET_EMPTY_MEDIAN_MS = 1.5
DEFAULT_BACKEND = "layered"
EMPTY_REPEATS = 10  # passes over the empty frames for the interleaved cost
EMPTY_CHUNK = 20  # frames each decoder takes in turn
EXPOSURE_FRAMES = 150  # at most; never more than the code frames per resolution


class _SimClock:
    """One simulated second per call: the layered decoder's rate limit never binds in the benchmark."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _kiosk_default() -> LayeredDecoder:
    """Exactly the kiosk's default decoder, with a simulated clock (see _SimClock)."""
    layered = make_decoder(DEFAULT_BACKEND)
    assert isinstance(layered, LayeredDecoder)
    layered.clock = _SimClock()
    return layered


def backends() -> dict[str, Decoder]:
    out: dict[str, Decoder] = {"zxing": ZxingDecoder()}
    try:
        out["pyzbar"] = PyzbarDecoder()
    except DecoderUnavailable as exc:
        progress(f"pyzbar skipped: {exc}")
    out["layered"] = _kiosk_default()
    return out


def _ms_stats(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"median_ms": None, "p95_ms": None}
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered) * 1e3, 3), "p95_ms": round(p95 * 1e3, 3)}


def run_resolution(
    size: tuple[int, int], code_count: int, empty_count: int, seed: int, *, empty_repeats: int = EMPTY_REPEATS
) -> dict[str, Any]:
    """All backends on the same ``code_count`` code frames and ``empty_count`` empty frames at ``size``,
    then the interleaved empty-frame cost of the kiosk default against zxing-cpp alone."""
    decoders = backends()
    hits: dict[str, Counter[str]] = {name: Counter() for name in decoders}
    wrong: dict[str, int] = dict.fromkeys(decoders, 0)
    wrong_examples: dict[str, list[str]] = defaultdict(list)
    code_cost: dict[str, list[float]] = defaultdict(list)
    empty_cost: dict[str, list[float]] = defaultdict(list)
    per_category: Counter[str] = Counter()
    label = f"{size[0]}x{size[1]}"

    def run(name: str, decoder: Decoder, image, expected: bytes | None, costs: list[float]) -> None:
        started = time.perf_counter()
        results = decoder.decode(image)
        costs.append(time.perf_counter() - started)
        if expected is not None and any(r.raw == expected for r in results):
            hits[name][category] += 1
        for r in results:
            if r.raw != expected:
                wrong[name] += 1
                if len(wrong_examples[name]) < 3:
                    wrong_examples[name].append(r.raw[:60].hex())

    # Each backend runs over the whole set in its own block after a short warm-up: interleaving
    # backends frame by frame let pyzbar's 30 ms passes evict zxing's caches and inflated its cost.
    empties = [frame.image for frame in empty_frames(size, empty_count, seed=seed)]
    for name, decoder in decoders.items():
        for image in empties[:10]:
            decoder.decode(image)
        for i, frame in enumerate(code_frames(size, code_count, seed=seed)):
            category = frame.category
            if name == next(iter(decoders)):
                per_category[category] += 1
            run(name, decoder, frame.image, frame.expected, code_cost[name])
            if (i + 1) % 250 == 0:
                progress(f"{label} {name}: {i + 1}/{code_count} code frames")
        category = "empty"
        for image in empties:
            run(name, decoder, image, None, empty_cost[name])
        progress(f"{label} {name}: {empty_count} empty frames done")

    out: dict[str, Any] = {"code_frames": code_count, "empty_frames": empty_count, "backends": {}}
    for name, decoder in decoders.items():
        total = sum(hits[name].values())
        entry: dict[str, Any] = {
            "decode_rate": round(total / code_count, 4) if code_count else None,
            "decoded": total,
            "wrong_decodes": wrong[name],
            "wrong_examples_hex": wrong_examples[name],
            "per_category": {
                c: round(hits[name][c] / per_category[c], 4) if per_category[c] else None for c in CATEGORIES
            },
            "cost_code_frame": _ms_stats(code_cost[name]),
            "cost_empty_frame": _ms_stats(empty_cost[name]),
        }
        if isinstance(decoder, LayeredDecoder):
            # Which stage decoded each frame (code and empty frames together; empty frames decode nothing).
            entry["layered_counters"] = _counters(decoder)
        out["backends"][name] = entry
    out["empty_interleaved"] = run_empty_interleaved(size, empty_count, seed, repeats=empty_repeats)
    return out


def _counters(decoder: LayeredDecoder) -> dict[str, int]:
    return {
        "midgray_hits": decoder.midgray_hits,
        "glance_hits": decoder.glance_hits,
        "glance_inverted_hits": decoder.glance_inverted_hits,
        "local_pass_runs": decoder.primary_runs,
        "local_pass_hits": decoder.primary_hits,
        "second_passes": decoder.second_passes,
        "second_pass_hits": decoder.second_pass_hits,
        "second_pass_skipped": decoder.second_pass_skipped,
    }


def run_empty_interleaved(
    size: tuple[int, int], empty_count: int, seed: int, *, repeats: int
) -> dict[str, Any]:
    """zxing-cpp alone and the kiosk default taking turns over the empty frames, ``repeats`` passes.

    They alternate every ``EMPTY_CHUNK`` frames, in a random order per chunk: each decoder works through
    a run of frames with its own buffers warm, as on the kiosk, and a busy spell of a shared machine
    falls on both. (Alternating on every frame instead makes each evict the other's caches.)
    """
    decoders: dict[str, Decoder] = {"zxing": ZxingDecoder(), "layered": _kiosk_default()}
    empties = [frame.image for frame in empty_frames(size, empty_count, seed=seed)]
    wall: dict[str, list[float]] = {name: [] for name in decoders}
    cpu: dict[str, list[float]] = {name: [] for name in decoders}
    pass_wall: dict[str, list[float]] = {name: [] for name in decoders}
    order = random.Random(seed)
    names = list(decoders)
    for decoder in decoders.values():  # warm-up
        for image in empties[:10]:
            decoder.decode(image)
    for _ in range(repeats):
        first = {name: len(wall[name]) for name in names}
        for start in range(0, len(empties), EMPTY_CHUNK):
            order.shuffle(names)
            for name in names:
                decoder = decoders[name]
                for image in empties[start : start + EMPTY_CHUNK]:
                    started, started_cpu = time.perf_counter(), time.process_time()
                    decoder.decode(image)
                    cpu[name].append(time.process_time() - started_cpu)
                    wall[name].append(time.perf_counter() - started)
        for name in names:
            pass_wall[name].append(statistics.median(wall[name][first[name] :]))
    label = f"{size[0]}x{size[1]}"
    progress(f"{label}: {repeats} interleaved passes over {empty_count} empty frames done")
    out: dict[str, Any] = {"repeats": repeats, "chunk": EMPTY_CHUNK, "frames": empty_count, "backends": {}}
    for name in decoders:
        out["backends"][name] = {
            "wall": _ms_stats(wall[name]),
            "cpu": _ms_stats(cpu[name]),
            "pass_median_wall_ms": [round(v * 1e3, 3) for v in pass_wall[name]],
        }
    layered = decoders["layered"]
    assert isinstance(layered, LayeredDecoder)
    out["layered_counters"] = _counters(layered)
    base, ours = out["backends"]["zxing"], out["backends"]["layered"]
    out["ratio_layered_to_zxing"] = {
        "wall_median": round(ours["wall"]["median_ms"] / base["wall"]["median_ms"], 3),
        "cpu_median": round(ours["cpu"]["median_ms"] / base["cpu"]["median_ms"], 3),
        # The same ratio per pass, then its median: a pass the machine was busy in slows both.
        "wall_median_of_passes": round(
            statistics.median(a / b for a, b in zip(pass_wall["layered"], pass_wall["zxing"], strict=True)),
            3,
        ),
    }
    return out


def run_exposure(size: tuple[int, int], count: int, seed: int) -> dict[str, Any]:
    """Decode rate on card-size codes the mid-gray pass cannot see (bench/frames.py ``exposure_frames``).

    ``layered`` is the kiosk default; ``layered_without_local_pass`` the same decoder with its gated
    full-frame LocalAverage pass switched off, to show what that pass is for.
    """
    blind = _kiosk_default()
    blind.primary = _NeverDecoder()
    decoders: dict[str, Decoder] = {"zxing": ZxingDecoder(), "layered": _kiosk_default()}
    decoders["layered_without_local_pass"] = blind
    hits: dict[str, Counter[str]] = {name: Counter() for name in decoders}
    wrong: dict[str, int] = dict.fromkeys(decoders, 0)
    per_kind: Counter[str] = Counter()
    for frame in exposure_frames(size, count, seed=seed):
        per_kind[frame.category] += 1
        for name, decoder in decoders.items():
            results = decoder.decode(frame.image)
            hits[name][frame.category] += any(r.raw == frame.expected for r in results)
            wrong[name] += sum(r.raw != frame.expected for r in results)
    progress(f"{size[0]}x{size[1]}: {count} exposure frames done")
    out: dict[str, Any] = {"frames": count, "backends": {}}
    for name in decoders:
        out["backends"][name] = {
            "decode_rate": round(sum(hits[name].values()) / count, 4) if count else None,
            "wrong_decodes": wrong[name],
            "per_kind": {
                k: round(hits[name][k] / per_kind[k], 4) if per_kind[k] else None for k in EXPOSURES
            },
        }
    return out


class _NeverDecoder:
    """A primary that finds nothing: switches the layered decoder's gated local pass off."""

    name = "never"

    def decode(self, gray: np.ndarray) -> list:
        """Nothing, for any frame."""
        return []


def run_scanner(
    *,
    code_count: int,
    empty_count: int,
    seed: int = DEFAULT_SEED,
    empty_repeats: int = EMPTY_REPEATS,
    exposure_count: int | None = None,
) -> dict[str, Any]:
    """The whole benchmark: every resolution, every backend; targets checked for the kiosk default."""
    resolutions = {}
    for size in RESOLUTIONS:
        resolutions[f"{size[0]}x{size[1]}"] = run_resolution(
            size, code_count, empty_count, seed, empty_repeats=empty_repeats
        )
    exposure_count = min(EXPOSURE_FRAMES, code_count) if exposure_count is None else exposure_count
    exposure = run_exposure((1280, 720), exposure_count, seed)
    chosen = resolutions["1280x720"]["backends"][DEFAULT_BACKEND]
    rate = chosen["decode_rate"]
    interleaved = resolutions["1280x720"]["empty_interleaved"]
    empty_ms = interleaved["backends"][DEFAULT_BACKEND]["wall"]["median_ms"]
    no_wrong = all(b["wrong_decodes"] == 0 for r in resolutions.values() for b in r["backends"].values())
    no_wrong = no_wrong and all(b["wrong_decodes"] == 0 for b in exposure["backends"].values())
    return {
        "seed": seed,
        "categories": list(CATEGORIES),
        "resolutions": resolutions,
        "exposure_1280x720": exposure,
        "kiosk_default": {
            "backend": DEFAULT_BACKEND,
            "settings": {
                "midgray": "zxing-cpp on the full frame: QR only, FixedThreshold binarizer (split at 127), "
                "no try_invert, no try_downscale, no try_rotate; decodes or locates",
                "glance": "when nothing was decoded: INTER_AREA copy with a ~360 px short side, "
                "15x15 box mean, binarized by OpenCV at mean -/+ 2 (dark-on-light, then light-on-dark), "
                "zxing-cpp FixedThreshold on each; decodes or locates",
                "local_pass": "zxing-cpp LocalAverage on the full frame (no try_invert/try_downscale/"
                "try_rotate), only when a textured patch of 5x5 blocks (8x8 px at 1280x720, from 2x2 "
                "blocks of a quarter copy: max - min > 12) lies wholly above 117 or below 137",
                "closer_look": "crop located symbol + 20% margin, x2 INTER_CUBIC, min-max normalise, "
                "unsharp / Gaussian σ1 variants, LocalAverage then GlobalHistogram, then band-pass "
                "(difference of Gaussians) with gain",
                "max_second_pass_per_s": 5.0,
            },
            "why": (
                "highest decode rate at 1280x720 of the three backends with 0 wrong decodes. The full-frame "
                "pass splits at mid-gray: zxing's LocalAverage binarization and its search of the speckle "
                "it makes of clutter are most of zxing's time on an empty frame, and on a normally exposed "
                "frame the split reads the same codes, small cards included. Where it cannot (a textured "
                "patch wholly on one side of mid-gray: under- or over-exposure, a card in shadow) the "
                "LocalAverage pass still runs (see exposure_1280x720). The glance's own binarization has no "
                "minimum contrast, so low-contrast, low-light and moiré codes binarize, and its margin keeps "
                "empty areas white so its finder search is cheap; the closer look runs only when a symbol "
                "is located"
            ),
        },
        "target": {
            "decode_rate_720p": TARGET_RATE_720P,
            "empty_median_ms": TARGET_EMPTY_MEDIAN_MS,
            "decode_rate_720p_measured": rate,
            "empty_median_ms_measured": empty_ms,
            "empty_median_measured_as": f"wall time, alternating with zxing-cpp alone every {EMPTY_CHUNK} "
            f"frames, {empty_repeats} passes (resolutions.1280x720.empty_interleaved)",
            "empty_ratio_to_zxing": interleaved["ratio_layered_to_zxing"],
            "rate_met": rate is not None and rate >= TARGET_RATE_720P,
            "empty_cost_met": empty_ms is not None and empty_ms <= TARGET_EMPTY_MEDIAN_MS,
            "no_wrong_decodes": no_wrong,
        },
    }


def render(doc: dict[str, Any]) -> str:
    """Overall and per-category tables, then the targets."""
    overall_rows = []
    for res, data in doc["resolutions"].items():
        for name, b in data["backends"].items():
            overall_rows.append(
                [
                    f"{name} @ {res}",
                    f"{b['decode_rate'] * 100:.1f}%",
                    str(b["wrong_decodes"]),
                    fmt(b["cost_empty_frame"]["median_ms"], 2),
                    fmt(b["cost_empty_frame"]["p95_ms"], 2),
                    fmt(b["cost_code_frame"]["median_ms"], 2),
                    fmt(b["cost_code_frame"]["p95_ms"], 2),
                ]
            )
    first = next(iter(doc["resolutions"].values()))
    lines = [
        f"Scanner: {first['code_frames']} code frames + {first['empty_frames']} empty frames per resolution",
        table(
            [
                "backend @ resolution",
                "decoded",
                "wrong",
                "empty med ms",
                "empty p95 ms",
                "code med ms",
                "code p95",
            ],
            overall_rows,
        ),
        "",
        "Decode rate per category (%)",
    ]
    headers = ["backend @ resolution", *[c[:8] for c in doc["categories"]]]
    rows = []
    for res, data in doc["resolutions"].items():
        for name, b in data["backends"].items():
            rows.append(
                [f"{name} @ {res}", *[f"{(b['per_category'][c] or 0) * 100:.0f}" for c in doc["categories"]]]
            )
    lines.append(table(headers, rows))
    lines += [
        "",
        f"Empty frames, kiosk default and zxing-cpp alone taking turns every {EMPTY_CHUNK} frames "
        "(median ms; ratio layered/zxing)",
    ]
    rows = []
    for res, data in doc["resolutions"].items():
        inter = data["empty_interleaved"]
        z, lay, r = inter["backends"]["zxing"], inter["backends"]["layered"], inter["ratio_layered_to_zxing"]
        rows.append(
            [
                f"{res} x{inter['repeats']}",
                fmt(z["wall"]["median_ms"], 2),
                fmt(lay["wall"]["median_ms"], 2),
                fmt(r["wall_median"], 2),
                fmt(r["wall_median_of_passes"], 2),
                fmt(z["cpu"]["median_ms"], 2),
                fmt(lay["cpu"]["median_ms"], 2),
                fmt(r["cpu_median"], 2),
            ]
        )
    lines.append(
        table(
            [
                "resolution",
                "zxing wall",
                "layered wall",
                "ratio",
                "ratio/pass",
                "zxing cpu",
                "layered cpu",
                "ratio",
            ],
            rows,
        )
    )
    exposure = doc["exposure_1280x720"]
    lines += ["", f"Exposure set at 1280x720: {exposure['frames']} card-size codes (%)"]
    lines.append(
        table(
            ["backend", "decoded", "wrong", *EXPOSURES],
            [
                [
                    name,
                    f"{b['decode_rate'] * 100:.1f}",
                    str(b["wrong_decodes"]),
                    *[f"{(b['per_kind'][k] or 0) * 100:.0f}" for k in EXPOSURES],
                ]
                for name, b in exposure["backends"].items()
            ],
        )
    )
    t = doc["target"]
    lines += [
        "",
        f"Kiosk default: {doc['kiosk_default']['backend']}. Targets at 1280x720: decode rate "
        f"{t['decode_rate_720p_measured'] * 100:.1f}% (target ≥ {t['decode_rate_720p'] * 100:.0f}%: "
        f"{fmt(t['rate_met'])}), empty frame median {fmt(t['empty_median_ms_measured'], 2)} ms "
        f"(target ≤ {t['empty_median_ms']} ms: {fmt(t['empty_cost_met'])}; "
        f"{t['empty_ratio_to_zxing']['wall_median']:.2f}x zxing-cpp alone), "
        f"0 wrong decodes: {fmt(t['no_wrong_decodes'])}",
    ]
    return "\n".join(lines)
