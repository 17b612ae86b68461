"""`Registry`: a name -> callable table whose unknown names fail with the list of known ones."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """Named callables of one kind (datasets, rewards, advantage estimators, ...) sharing one signature.

    Parameters
    ----------
    kind:
        What the entries are, used in error messages (``"dataset"``, ``"reward"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make ``fn`` available as ``get(name)``. Re-registering the same function is a no-op."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorate(fn: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and getattr(existing, "__qualname__", None) != getattr(fn, "__qualname__", None):
                raise ValueError(f"{self.kind} {name!r} is already registered to {existing!r}")
            self._entries[name] = fn
            return fn

        return decorate

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
