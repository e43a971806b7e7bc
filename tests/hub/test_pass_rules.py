"""The colour rules: symptoms or exposure -> yellow, a positive test or a case -> red, else green."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub import pass_rules
from hub.pass_rules import Colour, Exposure, Facts, Symptom, Verdict, combine, evaluate, reason_label


def test_nothing_declared_is_green_without_reasons():
    assert evaluate(Facts()) == Verdict(Colour.GREEN, ())


@pytest.mark.parametrize("symptom", list(Symptom))
def test_each_symptom_alone_makes_the_pass_yellow(symptom):
    verdict = evaluate(Facts.of(symptoms=[symptom]))
    assert verdict == Verdict(Colour.YELLOW, (f"symptom:{symptom.value}",))


@pytest.mark.parametrize("exposure", list(Exposure))
def test_each_exposure_alone_makes_the_pass_yellow(exposure):
    verdict = evaluate(Facts.of(exposures=[exposure]))
    assert verdict == Verdict(Colour.YELLOW, (f"exposure:{exposure.value}",))


def test_a_positive_test_is_red():
    assert evaluate(Facts(positive_test=True)) == Verdict(Colour.RED, ("positive_test",))


def test_a_confirmed_case_is_red_even_with_nothing_declared():
    assert evaluate(Facts(confirmed_case=True)) == Verdict(Colour.RED, ("case_confirmed",))


def test_red_wins_over_yellow_and_every_reason_is_kept_in_rule_order():
    verdict = evaluate(
        Facts.of(
            symptoms=["rash", "fever"], exposures=["case_contact"], positive_test=True, confirmed_case=True
        )
    )
    assert verdict.colour is Colour.RED
    assert verdict.reasons == (
        "case_confirmed",
        "positive_test",
        "symptom:fever",
        "symptom:rash",
        "exposure:case_contact",
    )


def test_unknown_symptom_code_is_refused():
    with pytest.raises(ValueError):
        Facts.of(symptoms=["headache"])


def test_combine_takes_the_worst_colour_and_each_reason_once():
    a = evaluate(Facts.of(symptoms=["cough"]))
    b = evaluate(Facts.of(symptoms=["cough"], positive_test=True))
    assert combine(a, b) == Verdict(Colour.RED, ("symptom:cough", "positive_test"))
    assert combine() == Verdict(Colour.GREEN, ())


def _every_code() -> list[str]:
    codes = [pass_rules.CASE_CONFIRMED, pass_rules.POSITIVE_TEST]
    codes += [f"symptom:{s.value}" for s in Symptom] + [f"exposure:{e.value}" for e in Exposure]
    return codes


@pytest.mark.parametrize("code", _every_code())
def test_every_reason_has_a_vietnamese_and_an_english_label(code):
    vi, en = reason_label(code, "vi"), reason_label(code, "en")
    assert vi != code and en != code
    assert vi != en
    assert en.isascii()
    assert not vi.isascii()  # Vietnamese with diacritics, not a copy of the English


def test_an_unknown_reason_code_shows_as_itself():
    assert reason_label("f1_contact", "vi") == "f1_contact"
    assert reason_label("symptom:headache", "en") == "symptom:headache"


def test_colour_labels():
    assert [pass_rules.colour_label(c) for c in Colour] == ["Xanh", "Vàng", "Đỏ"]
    assert [pass_rules.colour_label(c, "en") for c in Colour] == ["Green", "Yellow", "Red"]


@given(
    symptoms=st.frozensets(st.sampled_from(list(Symptom))),
    exposures=st.frozensets(st.sampled_from(list(Exposure))),
    positive=st.booleans(),
    case=st.booleans(),
)
def test_the_colour_follows_the_rules_for_any_facts(symptoms, exposures, positive, case):
    verdict = evaluate(Facts(symptoms, exposures, positive, case))
    if positive or case:
        expected = Colour.RED
    elif symptoms or exposures:
        expected = Colour.YELLOW
    else:
        expected = Colour.GREEN
    assert verdict.colour is expected
    assert len(verdict.reasons) == len(symptoms) + len(exposures) + positive + case
    assert len(set(verdict.reasons)) == len(verdict.reasons)
