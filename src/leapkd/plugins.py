"""Named plug-ins: a registry maps a name to a class, filled by a decorator.

Methods (`leapkd.register_method`) and evaluation protocols (`leapkd.register_protocol`)
each have one. Registering from outside the package works the same way as inside it:
decorate the class, and the name is usable everywhere (config, CLI, report).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar, Generic, Protocol, TypeVar

from leapkd.errors import LeapkdError, closest_names


class Named(Protocol):
    """What a registered class declares: the `name` the registry sets on it."""

    name: ClassVar[str]


T = TypeVar("T", bound=type[Named])


class Registry(Generic[T]):
    """Name -> class, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "method", "protocol": used in messages
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: `@registry.register("name")`; sets `cls.name`."""

        def add(cls: T) -> T:
            if not name or name != name.strip():
                raise ValueError(f"a {self.kind} name must be a non-empty word, got {name!r}")
            known = self._entries.get(name)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by {known.__module__}.{known.__qualname__}"
                )
            cls.name = name
            self._entries[name] = cls
            return cls

        return add

    def get(self, name: str) -> T:
        """The class registered as `name`, or a LeapkdError naming the closest names."""
        if name in self._entries:
            return self._entries[name]
        close = closest_names(name, self._entries)
        raise LeapkdError(
            f"unknown {self.kind} '{name}'",
            (f"did you mean {' or '.join(close)}? " if close else "") + f"choose from {', '.join(self._entries)}",
        )

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())
