"""A tiny name -> factory registry, one instance per concern (detectors, datasets, attacks)."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from silhouette.errors import SilhouetteError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factory functions; unknown names get a 'did you mean' error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a factory under `name`."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._factories[name] = fn
            return fn

        return deco

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory for `name`, or a clear error listing the choices."""
        if name not in self._factories:
            close = difflib.get_close_matches(name, self._factories, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SilhouetteError(f"unknown {self.kind} {name!r}{hint}; choose from: {', '.join(self.names())}")
        return self._factories[name]

    def create(self, name: str, **kwargs: object) -> T:
        """Build the object registered as `name`."""
        return self.get(name)(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
