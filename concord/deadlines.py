"""Coarse timers for deadlines that are nearly always cancelled before they fire.

Every request sets two: its upstream call's timeout and the moment the gateway starts listening
for the client hanging up. Both are almost always cancelled within milliseconds, yet a loop timer
(`call_later`, `asyncio.timeout`, aiohttp's own) costs a heap entry, a libuv handle and its
teardown each time: about as much as the rest of the request's bookkeeping together.

Here a deadline is an entry in a dict keyed by its tick (`RESOLUTION` seconds), and one loop timer
per event loop fires the ticks that came due. Setting and cancelling a deadline are two dict
operations. A deadline fires at the first tick at or after it: never early, at most one tick
late (aiohttp itself rounds timeouts of 5 s and more up to the whole second).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable

RESOLUTION = 0.05  # seconds per tick

Callback = Callable[[], object]


class Deadline:
    """A callback due at a tick; `cancel()` before then and it never runs."""

    __slots__ = ("_entry", "_slot", "_slots")

    def __init__(self, slots: dict[int, dict[int, Callback]], slot: int, entry: int) -> None:
        self._slots = slots
        self._slot = slot
        self._entry = entry

    def cancel(self) -> None:
        due = self._slots.get(self._slot)
        if due is not None:
            due.pop(self._entry, None)


class Deadlines:
    """The deadlines of one event loop, fired by a single repeating loop timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = RESOLUTION) -> None:
        self._loop = loop
        self._resolution = resolution
        self._slots: dict[int, dict[int, Callback]] = {}
        self._order: list[int] = []  # heap of the slots in `_slots`
        self._ids = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0  # the slot `_timer` is set for

    def call_later(self, delay: float, callback: Callback) -> Deadline:
        """Run `callback` once `delay` seconds have passed (up to one tick later)."""
        slot = math.ceil((self._loop.time() + delay) / self._resolution)
        due = self._slots.get(slot)
        if due is None:
            due = self._slots[slot] = {}
            heapq.heappush(self._order, slot)
            if self._timer is None or slot < self._timer_slot:  # rare: a shorter deadline
                self._schedule(slot)
        entry = next(self._ids)
        due[entry] = callback
        return Deadline(self._slots, slot, entry)

    def __len__(self) -> int:
        """Deadlines still to fire (cancelled ones are gone at once)."""
        return sum(len(due) for due in self._slots.values())

    def _tick(self) -> None:
        now = self._loop.time()
        order, slots = self._order, self._slots
        while order and order[0] * self._resolution <= now:
            for callback in slots.pop(heapq.heappop(order)).values():
                try:
                    callback()
                except Exception as error:  # one failing callback must not stop the rest
                    self._loop.call_exception_handler(
                        {"message": "deadline callback failed", "exception": error}
                    )
        while order and not slots[order[0]]:  # slots whose every deadline was cancelled
            del slots[heapq.heappop(order)]
        self._timer = None
        if order:
            self._schedule(order[0])

    def _schedule(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        # a hair after the tick: loops round their timers to the millisecond, either way
        when = max(slot * self._resolution, self._loop.time()) + _MARGIN
        self._timer = self._loop.call_at(when, self._tick)


_MARGIN = 0.001
# The deadlines of the loop that last asked: one loop per process (or worker) in the server; a
# different loop (another test, another thread) gets a fresh set, and any set still holding
# deadlines lives on through its loop timer.
_current: tuple[asyncio.AbstractEventLoop, Deadlines] | None = None


def call_later(delay: float, callback: Callback) -> Deadline:
    """`loop.call_later` for a deadline, on the running loop's coarse timer."""
    global _current
    loop = asyncio.get_running_loop()
    current = _current
    if current is None or current[0] is not loop:
        current = _current = (loop, Deadlines(loop))
    return current[1].call_later(delay, callback)
