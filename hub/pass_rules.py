"""The health-pass colour rules, all in one place: what a person reported (or was found to be) -> colour.

Rules, from most to least severe; every rule that applies adds its reason codes, and the colour is the
most severe of the rules that apply:

1. ``case_confirmed`` -> red: a health official marked the person as a case (F0). Declarations never set
   this; the tracing issue will (it reuses :func:`evaluate` with ``confirmed_case=True``).
2. ``positive_test`` -> red: the declaration reports a positive COVID-19 test (declarations only accept
   tests from the last 14 days, so a positive result there means a current infection).
3. ``symptom:<code>`` -> yellow: a symptom in the last 14 days (fever, cough, breathlessness, sore
   throat, nausea/vomiting, diarrhoea, skin bleeding, rash), one reason per symptom.
4. ``exposure:<code>`` -> yellow: contact with a case, a visit to an outbreak area, contact with someone
   from an outbreak area or with someone who has a fever, one reason per exposure.
5. Nothing of the above -> green, with no reason.

Reason codes are stable strings (stored in ``declarations.colour_reasons``); :func:`reason_label`
gives their Vietnamese or English label. Vaccination does not change the colour: a vaccinated person
with symptoms still has to be checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from protocol.healthpass import Colour

__all__ = [
    "Colour",
    "Exposure",
    "Facts",
    "Symptom",
    "Verdict",
    "colour_label",
    "combine",
    "evaluate",
    "exposure_label",
    "reason_label",
    "symptom_label",
]


class Symptom(StrEnum):
    """Symptoms asked about for the last 14 days."""

    FEVER = "fever"
    COUGH = "cough"
    BREATHLESSNESS = "breathlessness"
    SORE_THROAT = "sore_throat"
    NAUSEA_VOMITING = "nausea_vomiting"
    DIARRHOEA = "diarrhoea"
    SKIN_BLEEDING = "skin_bleeding"
    RASH = "rash"


class Exposure(StrEnum):
    """Exposures asked about for the last 14 days."""

    CASE_CONTACT = "case_contact"  # close contact with a confirmed or suspected case
    OUTBREAK_AREA_VISIT = "outbreak_area_visit"  # was in a place or country with an outbreak
    OUTBREAK_AREA_PERSON = "outbreak_area_person"  # contact with someone coming from an outbreak area
    FEVER_PERSON = "fever_person"  # contact with someone with fever, cough or breathlessness


CASE_CONFIRMED = "case_confirmed"
POSITIVE_TEST = "positive_test"
SYMPTOM_PREFIX = "symptom:"
EXPOSURE_PREFIX = "exposure:"

#: (Vietnamese, English) labels.
_SYMPTOM_LABELS: dict[Symptom, tuple[str, str]] = {
    Symptom.FEVER: ("Sốt", "Fever"),
    Symptom.COUGH: ("Ho", "Cough"),
    Symptom.BREATHLESSNESS: ("Khó thở", "Breathlessness"),
    Symptom.SORE_THROAT: ("Đau họng", "Sore throat"),
    Symptom.NAUSEA_VOMITING: ("Buồn nôn, nôn", "Nausea or vomiting"),
    Symptom.DIARRHOEA: ("Tiêu chảy", "Diarrhoea"),
    Symptom.SKIN_BLEEDING: ("Xuất huyết ngoài da", "Bleeding under the skin"),
    Symptom.RASH: ("Nổi ban ngoài da", "Skin rash"),
}
_EXPOSURE_LABELS: dict[Exposure, tuple[str, str]] = {
    Exposure.CASE_CONTACT: (
        "Tiếp xúc gần với người bệnh hoặc nghi mắc COVID-19",
        "Close contact with a confirmed or suspected COVID-19 case",
    ),
    Exposure.OUTBREAK_AREA_VISIT: (
        "Đến hoặc ở nơi có dịch COVID-19",
        "Was in a place or country with a COVID-19 outbreak",
    ),
    Exposure.OUTBREAK_AREA_PERSON: (
        "Tiếp xúc với người từ nơi có dịch COVID-19",
        "Contact with someone from a place or country with an outbreak",
    ),
    Exposure.FEVER_PERSON: (
        "Tiếp xúc với người có biểu hiện sốt, ho, khó thở",
        "Contact with someone with fever, cough or breathlessness",
    ),
}
_RULE_LABELS: dict[str, tuple[str, str]] = {
    CASE_CONFIRMED: (
        "Được cơ quan y tế xác định là ca bệnh (F0)",
        "Confirmed case (F0) by the health authority",
    ),
    POSITIVE_TEST: ("Có kết quả xét nghiệm dương tính", "Reported a positive test"),
}
_SYMPTOM_PREFIX_LABEL = ("Triệu chứng trong 14 ngày", "Symptom in the last 14 days")
_EXPOSURE_PREFIX_LABEL = ("Yếu tố dịch tễ trong 14 ngày", "Exposure in the last 14 days")


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules look at for one person."""

    symptoms: frozenset[Symptom] = field(default_factory=frozenset)
    exposures: frozenset[Exposure] = field(default_factory=frozenset)
    positive_test: bool = False
    confirmed_case: bool = False

    @classmethod
    def of(
        cls,
        *,
        symptoms: Iterable[Symptom | str] = (),
        exposures: Iterable[Exposure | str] = (),
        positive_test: bool = False,
        confirmed_case: bool = False,
    ) -> Facts:
        """Facts from plain codes (raises ``ValueError`` for an unknown symptom or exposure code)."""
        return cls(
            symptoms=frozenset(Symptom(s) for s in symptoms),
            exposures=frozenset(Exposure(e) for e in exposures),
            positive_test=bool(positive_test),
            confirmed_case=bool(confirmed_case),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """A colour and the reason codes that led to it (empty for green)."""

    colour: Colour
    reasons: tuple[str, ...] = ()


def evaluate(facts: Facts) -> Verdict:
    """Apply the rules in the module docstring to one person's facts."""
    colour = Colour.GREEN
    reasons: list[str] = []
    if facts.confirmed_case:
        colour = Colour.worst(colour, Colour.RED)
        reasons.append(CASE_CONFIRMED)
    if facts.positive_test:
        colour = Colour.worst(colour, Colour.RED)
        reasons.append(POSITIVE_TEST)
    # Enum order, not set order: the same facts always give the same reasons in the same order.
    for symptom in Symptom:
        if symptom in facts.symptoms:
            colour = Colour.worst(colour, Colour.YELLOW)
            reasons.append(SYMPTOM_PREFIX + symptom.value)
    for exposure in Exposure:
        if exposure in facts.exposures:
            colour = Colour.worst(colour, Colour.YELLOW)
            reasons.append(EXPOSURE_PREFIX + exposure.value)
    return Verdict(colour=colour, reasons=tuple(reasons))


def combine(*verdicts: Verdict) -> Verdict:
    """The most severe colour of several verdicts, with their reasons (each once, first seen first)."""
    colour = Colour.GREEN
    reasons: list[str] = []
    for verdict in verdicts:
        colour = Colour.worst(colour, verdict.colour)
        reasons.extend(r for r in verdict.reasons if r not in reasons)
    return Verdict(colour=colour, reasons=tuple(reasons))


def _pick(labels: tuple[str, str], locale: object) -> str:
    return labels[1] if str(locale or "vi").lower().startswith("en") else labels[0]


def symptom_label(symptom: Symptom | str, locale: object = "vi") -> str:
    """The label of a symptom in Vietnamese (default) or English (``locale`` "en")."""
    return _pick(_SYMPTOM_LABELS[Symptom(symptom)], locale)


def exposure_label(exposure: Exposure | str, locale: object = "vi") -> str:
    """The label of an exposure in Vietnamese (default) or English (``locale`` "en")."""
    return _pick(_EXPOSURE_LABELS[Exposure(exposure)], locale)


def reason_label(code: str, locale: object = "vi") -> str:
    """The label of a reason code in Vietnamese (default) or English; an unknown code is returned as is.

    Unknown codes pass through so that reasons added later (tracing) still show something.
    """
    if code in _RULE_LABELS:
        return _pick(_RULE_LABELS[code], locale)
    try:
        if code.startswith(SYMPTOM_PREFIX):
            name = symptom_label(code[len(SYMPTOM_PREFIX) :], locale)
            return f"{_pick(_SYMPTOM_PREFIX_LABEL, locale)}: {name.lower()}"
        if code.startswith(EXPOSURE_PREFIX):
            name = exposure_label(code[len(EXPOSURE_PREFIX) :], locale)
            return f"{_pick(_EXPOSURE_PREFIX_LABEL, locale)}: {name[0].lower()}{name[1:]}"
    except ValueError:
        pass
    return code


def colour_label(colour: Colour | str, locale: object = "vi") -> str:
    """The colour's name for citizens: Xanh / Vàng / Đỏ (Green / Yellow / Red)."""
    names = {Colour.GREEN: ("Xanh", "Green"), Colour.YELLOW: ("Vàng", "Yellow"), Colour.RED: ("Đỏ", "Red")}
    return _pick(names[Colour(colour)], locale)
