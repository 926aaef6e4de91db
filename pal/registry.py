"""Registries by name for the parts that get swept: datasets, backbones, strategies.

A registry maps a name to a factory. Registering a name twice raises; looking up an unknown name
raises a ``KeyError`` whose message lists the registered names, so a typo in a config or a sweep
says what would have been accepted.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pal.config import ConfigError

T = TypeVar("T")


class UnknownNameError(KeyError, ConfigError):
    """An unknown registry name in a config field; the message lists the choices."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> factory, with ``register`` as a decorator.

    Args:
        kind: what the registry holds ("dataset", "backbone", ...), used in error messages.
        field: the config field whose value is looked up here, used in error messages.
    """

    def __init__(self, kind: str, field: str):
        self.kind = kind
        self.field = field
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add

    def register_named(self, name: str) -> Callable[[T], T]:
        """Class decorator: register the class under ``name`` and set its ``name`` attribute to
        it (strategies and pretext tasks know their registered name)."""

        def add(cls: T) -> T:
            cls.name = name
            return self.register(name)(cls)

        return add

    def get(self, name: str, field: str | None = None) -> T:
        """The item called ``name``; ``field`` names the config field in the error message."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name, field)) from None

    def unknown_message(self, name: str, field: str | None = None) -> str:
        msg = f"{field or self.field}: unknown {self.kind} {name!r}; choose one of {self.names()}"
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        return msg

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
