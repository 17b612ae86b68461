"""`Registry`: the one name -> entry table of the package (flows, datasets, rewards, estimators, losses,
dynamic-sampling and rollout-correction modes). An unknown name fails with `RegistryError` listing the
known ones.

It imports nothing from ``vortex_rl``, so every layer (``kernels`` <- ``sparse`` <- ``rollout`` <-
``trainers``, and ``data``) may use it.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class RegistryError(KeyError, ValueError):
    """An unknown or clashing registry name. A ``KeyError`` (a failed lookup) and a ``ValueError`` (a bad
    config value), so callers that catch either keep working."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named entries of one kind (functions or classes) sharing one signature.

    Parameters
    ----------
    kind:
        What the entries are, used in error messages (``"dataset"``, ``"flow"``).
    check:
        Optional ``check(name, entry)`` run at registration; raise ``TypeError`` to refuse an entry.
    """

    def __init__(self, kind: str, *, check: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self._check = check
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the entry available as ``get(name)``. Registering the same qualified name again
        (a module re-imported) replaces it; another entry under a taken name raises ``RegistryError``."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorate(entry: T) -> T:
            if self._check is not None:
                self._check(name, entry)
            existing = self._entries.get(name)
            if existing is not None and getattr(existing, "__qualname__", None) != getattr(entry, "__qualname__", None):
                raise RegistryError(f"{self.kind} {name!r} is already registered to {existing!r}")
            self._entries[name] = entry
            return entry

        return decorate

    def unregister(self, name: str) -> None:
        """Remove ``name`` (an entry registered for a while, e.g. by a test); an unknown name raises."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises ``RegistryError`` listing the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def check_name(self, name: object, key: str) -> None:
        """Raise ``RegistryError`` naming the config ``key`` when ``name`` is not registered."""
        if name not in self:
            raise RegistryError(f"{key}={name!r} is not a registered {self.kind}; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # unhashable
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
