"""A stored version of a resource: the record every layer passes around. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson


@dataclass(frozen=True)
class StoredResource:
    """One version of a resource as stored; ``text`` is the exact JSON served.

    A deletion is a version too: ``deleted`` is true and ``text`` is None.
    """

    type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    text: str | None
    method: str = "PUT"

    def json(self) -> dict[str, Any]:
        if self.text is None:
            raise ValueError("deleted version has no content")
        data: dict[str, Any] = orjson.loads(self.text)
        return data
