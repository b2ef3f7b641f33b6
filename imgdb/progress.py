"""The one progress protocol: library code says what it found and what it finished.

``found(task, n)`` grows a task's total while it is still being discovered, ``total(task,
n)`` fixes it once the whole task is known (a folder counted, a crawl finished), ``done(task,
n)`` advances it and ``failed(task, n)`` counts the finished ones that failed. Tasks are short
words ("pages", "images", "hash"). The CLI draws them; library callers and tests pass nothing
and get ``NullProgress``.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def found(self, task: str, n: int = 1) -> None: ...

    def total(self, task: str, n: int) -> None: ...

    def done(self, task: str, n: int = 1) -> None: ...

    def failed(self, task: str, n: int = 1) -> None: ...


class NullProgress:
    def found(self, task: str, n: int = 1) -> None:
        pass

    def total(self, task: str, n: int) -> None:
        pass

    def done(self, task: str, n: int = 1) -> None:
        pass

    def failed(self, task: str, n: int = 1) -> None:
        pass
