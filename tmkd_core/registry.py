"""One small registry per kind of thing (models, edge operators, distillers, ...).

A registry maps a name to a callable; an unknown name raises an error that lists the
registered ones, so a typo in a configuration says at once what would have worked.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def add(obj: T) -> T:
            key = name or obj.__name__
            if key in self._entries:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise KeyError(
                f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)
