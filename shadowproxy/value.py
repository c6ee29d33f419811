"""`Value`: the base of the value objects built on the request path (exchange.py, the
comparison, decoding), which subclass it and write their own __init__.

Not dataclasses: in the compiled build a decorated class compiles as an ordinary Python
class, and a dataclass's generated __init__ stays interpreted. A native class with its own
__init__ builds and reads in a twelfth of the instructions (callgrind, 9 fields: 490
against 6,360 to build one and read four), and a shadowed request builds ten or more.
Each field is Final, so the type checker rejects assignment after construction, as it
would on a frozen dataclass; equality, hash and repr come from here, as a dataclass's did.
"""

from __future__ import annotations

from typing import ClassVar


class Value:
    """A value: compared, hashed and shown by the fields `__match_args__` names."""

    __match_args__: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self.__match_args__])

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self) or not isinstance(other, Value):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        # A compiled class's default reduction calls __init__ with no arguments. Our child
        # processes get plain tuples instead (plain.py: a sixth of the cost); this keeps a
        # Value picklable for anything else.
        return (type(self), self._values())

    def __repr__(self) -> str:
        shown = ", ".join([f"{name}={getattr(self, name)!r}" for name in self.__match_args__])
        return f"{type(self).__name__}({shown})"
