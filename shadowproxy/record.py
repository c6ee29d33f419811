"""`@record`: the value objects built on the request path (exchange.py, the comparison).

To the type checker a record is a frozen dataclass: mypy rejects any assignment after
construction. At run time it is a slotted dataclass with a generated __hash__ but without
frozen's __init__, which sets each field through object.__setattr__: 2.2 µs for a 9-field
object against 0.3 µs (timeit), and several times that inside the loaded proxy, where a
shadowed request builds about ten of them. So "frozen" is a promise the checker keeps,
not a run-time guard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

T = TypeVar("T")

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform

    @dataclass_transform(frozen_default=True, field_specifiers=(field,))
    def record(cls: type[T]) -> type[T]: ...

else:

    def record(cls: type[Any]) -> type[Any]:
        return dataclass(slots=True, unsafe_hash=True)(cls)
