"""Coarse deadlines: never early, at most a tick late, and a cancelled one never runs."""

from __future__ import annotations

import asyncio

from concord import deadlines
from concord.deadlines import RESOLUTION, Deadlines


async def test_a_deadline_fires_after_its_delay_and_at_most_a_tick_late():
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    set_at = loop.time()
    deadlines.call_later(0.12, lambda: fired.append(loop.time()))
    await asyncio.sleep(0.12 + 2 * RESOLUTION + 0.05)
    assert len(fired) == 1
    assert set_at + 0.12 <= fired[0] <= set_at + 0.12 + RESOLUTION + 0.05


async def test_a_cancelled_deadline_never_runs_and_the_timer_stops():
    loop = asyncio.get_running_loop()
    timers = Deadlines(loop)
    fired: list[str] = []
    handles = [timers.call_later(0.05, lambda: fired.append("x")) for _ in range(100)]
    for handle in handles:
        handle.cancel()
    assert len(timers) == 0
    await asyncio.sleep(0.05 + 2 * RESOLUTION)
    assert fired == []
    assert timers._timer is None  # nothing left: no loop timer keeps ticking


async def test_a_shorter_deadline_set_after_a_longer_one_still_fires_on_time():
    loop = asyncio.get_running_loop()
    timers = Deadlines(loop)
    fired: list[str] = []
    timers.call_later(30, lambda: fired.append("long"))
    timers.call_later(0.05, lambda: fired.append("short"))
    await asyncio.sleep(0.05 + 2 * RESOLUTION)
    assert fired == ["short"]
    assert len(timers) == 1


async def test_a_failing_callback_is_reported_and_the_others_still_run():
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    timers = Deadlines(loop)
    fired: list[str] = []
    timers.call_later(0.02, lambda: 1 / 0)
    timers.call_later(0.02, lambda: fired.append("second"))
    await asyncio.sleep(0.02 + 2 * RESOLUTION)
    loop.set_exception_handler(None)
    assert fired == ["second"]
    assert isinstance(reported[0]["exception"], ZeroDivisionError)
