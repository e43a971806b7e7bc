"""Door-side feedback through gpiozero: green and red LEDs, a buzzer and the door relay.

A verdict's pattern runs in gpiozero's background threads, so the scan loop never waits for a
beep; a new verdict replaces the pattern still running. gpiozero is imported only here, and the
pin factory comes from configuration: ``auto`` on a Raspberry Pi, ``mock`` (gpiozero's
MockFactory) for the demo and tests, ``none`` for a kiosk without wired outputs.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from protocol.settings import Section

log = logging.getLogger(__name__)

Colour = Literal["green", "yellow", "red"]


class FeedbackError(RuntimeError):
    """The GPIO outputs could not be set up; the message says what to change."""


class GpioSettings(Section):
    pin_factory: Literal["auto", "mock", "none"] = Field(
        default="auto",
        description="auto: the Pi's GPIO; mock: gpiozero MockFactory (demo); none: no outputs.",
    )
    green_led: int = Field(default=17, ge=0, le=27, description="BCM pin of the green LED.")
    red_led: int = Field(default=27, ge=0, le=27, description="BCM pin of the red LED.")
    buzzer: int = Field(default=22, ge=0, le=27, description="BCM pin of the buzzer.")
    door_relay: int = Field(default=23, ge=0, le=27, description="BCM pin of the door relay.")
    relay_active_high: bool = Field(default=True, description="False for relay boards that switch on low.")
    indicator_s: float = Field(default=2.0, gt=0, le=30, description="How long an LED shows a verdict.")
    door_open_s: float = Field(
        default=3.0, gt=0, le=30, description="How long the relay holds the door open."
    )
    beep_s: float = Field(default=0.12, gt=0, le=2, description="Length of one beep.")


class Feedback:
    """Shows a verdict on the LEDs, buzzer and door relay."""

    def __init__(self, settings: GpioSettings, *, pin_factory=None):
        from gpiozero import LED, Buzzer, DigitalOutputDevice
        from gpiozero.exc import GPIOZeroError

        self._s = settings
        if pin_factory is None and settings.pin_factory == "mock":
            from gpiozero.pins.mock import MockFactory

            pin_factory = MockFactory()
        self.pin_factory = pin_factory
        try:
            self.green = LED(settings.green_led, pin_factory=pin_factory)
            self.red = LED(settings.red_led, pin_factory=pin_factory)
            self.buzzer = Buzzer(settings.buzzer, pin_factory=pin_factory)
            self.door = DigitalOutputDevice(
                settings.door_relay, active_high=settings.relay_active_high, pin_factory=pin_factory
            )
        except GPIOZeroError as exc:
            raise FeedbackError(
                f"cannot use the GPIO pins ({exc}); on a machine without GPIO set gpio.pin_factory = 'mock' "
                "or 'none'"
            ) from exc

    def show(self, colour: Colour) -> None:
        """Green: green light, one beep, door opens. Yellow: both lights, two beeps. Red: red light, three."""
        s = self._s
        hold = dict(on_time=s.indicator_s, off_time=0, n=1, background=True)
        self.green.off()
        self.red.off()
        if colour == "green":
            self.green.blink(**hold)
            self.buzzer.beep(on_time=s.beep_s, off_time=s.beep_s, n=1, background=True)
            self.door.blink(on_time=s.door_open_s, off_time=0, n=1, background=True)
        elif colour == "yellow":
            self.green.blink(**hold)
            self.red.blink(**hold)
            self.buzzer.beep(on_time=s.beep_s, off_time=s.beep_s, n=2, background=True)
        else:
            self.red.blink(**hold)
            self.buzzer.beep(on_time=s.beep_s, off_time=s.beep_s, n=3, background=True)

    def idle(self) -> bool:
        """True when no output is on (a pattern has finished)."""
        return not any(d.value for d in (self.green, self.red, self.buzzer, self.door))

    def close(self) -> None:
        for device in (self.green, self.red, self.buzzer, self.door):
            device.close()


class NoFeedback:
    """For kiosks without wired outputs: verdicts show on the screen only."""

    def show(self, colour: Colour) -> None:
        log.debug("verdict %s (no GPIO outputs configured)", colour)

    def idle(self) -> bool:
        return True

    def close(self) -> None:
        pass


def make_feedback(settings: GpioSettings) -> Feedback | NoFeedback:
    return NoFeedback() if settings.pin_factory == "none" else Feedback(settings)
