"""The one progress protocol: library code says what it found and what it finished.

``found(task, n)`` grows a task's total, ``done(task, n)`` advances it. Tasks are short
words ("pages", "images", "hash"). The CLI draws them with rich; library callers and
tests pass nothing and get ``NullProgress``.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def found(self, task: str, n: int = 1) -> None: ...

    def done(self, task: str, n: int = 1) -> None: ...


class NullProgress:
    def found(self, task: str, n: int = 1) -> None:
        pass

    def done(self, task: str, n: int = 1) -> None:
        pass
