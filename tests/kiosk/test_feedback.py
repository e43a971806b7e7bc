"""Door feedback on gpiozero's MockFactory: the recorded pin history, never a sleep."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from kiosk.feedback import Feedback, FeedbackError, GpioSettings, NoFeedback, make_feedback
from tests.helpers import wait_for

FAST = GpioSettings(pin_factory="mock", indicator_s=0.05, door_open_s=0.08, beep_s=0.01)


@pytest.fixture
def feedback():
    factory = MockFactory()
    fb = Feedback(FAST, pin_factory=factory)
    yield fb, factory
    fb.close()


def _history(factory, pin):
    return [s.state for s in factory.pin(pin).states]


def _finish(fb):
    wait_for(fb.idle, timeout_s=5, what="the pattern to finish")


def test_green_lights_green_beeps_once_and_pulses_the_door(feedback):
    fb, factory = feedback
    fb.show("green")
    _finish(fb)
    assert _history(factory, FAST.green_led) == [False, True, False]
    assert _history(factory, FAST.red_led) == [False]
    assert _history(factory, FAST.buzzer) == [False, True, False]
    assert _history(factory, FAST.door_relay) == [False, True, False]


def test_yellow_lights_both_beeps_twice_and_keeps_the_door_shut(feedback):
    fb, factory = feedback
    fb.show("yellow")
    _finish(fb)
    assert _history(factory, FAST.green_led) == [False, True, False]
    assert _history(factory, FAST.red_led) == [False, True, False]
    assert _history(factory, FAST.buzzer) == [False, True, False, True, False]
    assert _history(factory, FAST.door_relay) == [False]


def test_red_lights_red_beeps_three_times_and_keeps_the_door_shut(feedback):
    fb, factory = feedback
    fb.show("red")
    _finish(fb)
    assert _history(factory, FAST.red_led) == [False, True, False]
    assert _history(factory, FAST.green_led) == [False]
    assert _history(factory, FAST.buzzer) == [False] + [True, False] * 3
    assert _history(factory, FAST.door_relay) == [False]


def test_an_active_low_relay_idles_high():
    factory = MockFactory()
    fb = Feedback(FAST.model_copy(update={"relay_active_high": False}), pin_factory=factory)
    try:
        fb.show("green")
        _finish(fb)
        # The mock pin starts low; the device drives it high (door shut), pulses low, returns high.
        assert _history(factory, FAST.door_relay) == [False, True, False, True]
    finally:
        fb.close()


def test_a_pin_used_twice_is_a_clear_error():
    with pytest.raises(FeedbackError, match="pin_factory"):
        Feedback(FAST.model_copy(update={"red_led": FAST.green_led}), pin_factory=MockFactory())


def test_no_outputs_mode_needs_no_gpio():
    fb = make_feedback(GpioSettings(pin_factory="none"))
    assert isinstance(fb, NoFeedback)
    fb.show("red")
    assert fb.idle()
