"""String options as enums, validated once."""
from __future__ import annotations

import re
from enum import Enum
from typing import Self


class Choice(str, Enum):
    """Base of every string option: ``parse`` accepts a member or its value and raises a
    ValueError naming the option and its values (never returns None on a typo). The option's
    name is the class name in snake case, or the class's ``__option__`` where they differ."""

    @classmethod
    def parse(cls, value: object) -> Self:
        try:
            return cls(value)
        except ValueError:
            name = getattr(cls, "__option__", None) or re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
            raise ValueError(f"{name} must be one of {[m.value for m in cls]}, got {value!r}") from None
