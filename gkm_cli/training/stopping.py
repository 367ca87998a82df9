"""Polite stops: SIGTERM/SIGINT become a request to stop at the next step boundary.

The trainer finishes the step in progress, saves a checkpoint at that step and exits with
:class:`~gkm_cli.training.loop.TrainingInterrupted` (exit code 128 + the signal number: 143 for
SIGTERM, 130 for SIGINT). With ``escalate`` a second SIGINT (Ctrl-C twice) raises
KeyboardInterrupt at once; under torchrun it is off because the launcher forwards the terminal's
Ctrl-C, so each worker sees it twice (torchrun SIGKILLs workers that are not done within 30 s).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager: records the first of ``signals`` in :attr:`signum`; restores handlers on exit.

    Handlers can only be installed from the main thread; elsewhere (e.g. a trainer run in a
    worker thread) it does nothing and signals keep their usual effect.
    """

    def __init__(
        self, signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS, *, escalate: bool = True, enabled: bool = True
    ) -> None:
        self.signals = signals
        self.escalate = escalate
        self.enabled = enabled
        self.signum: int | None = None
        self._old: dict[signal.Signals, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.signum is None:
            self.signum = signum
        elif self.escalate and signum == signal.SIGINT:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()


def signal_name(signum: int | None) -> str:
    """``SIGTERM`` for 15 and so on; ``a signal`` when unknown."""
    try:
        return signal.Signals(signum).name if signum is not None else "a signal"
    except ValueError:
        return f"signal {signum}"
