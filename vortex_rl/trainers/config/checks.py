"""The one check every config section uses: a false condition raises ``ValueError`` with a message that
names the dotted key, the bad value and what is accepted."""

from __future__ import annotations


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
