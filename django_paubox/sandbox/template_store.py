"""The sandbox's dynamic templates: what was uploaded, under which id. No HTTP here.

Ids are strings, ``template_1``, ``template_2``... as in the example of Paubox's OpenAPI file
(``"id": "template_123"``); Paubox's prose docs show integers instead, so a template can also
be named by its number alone (``/dynamic_templates/1``). See :func:`number_of`.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..handlebars import HandlebarsError, check
from .times import iso_z

#: ``template_<n>``; the number alone (``<n>``) names the same template.
ID_PREFIX = "template_"
_ID = re.compile(rf"(?:{ID_PREFIX})?([1-9][0-9]{{0,17}})")


def number_of(template_id: str) -> int | None:
    """The template number an id names (``template_7`` or ``7``); None for anything else."""
    found = _ID.fullmatch(template_id)
    return int(found.group(1)) if found else None


@dataclass
class SandboxTemplate:
    """One uploaded template."""

    number: int
    name: str
    body: str
    created_at: datetime
    updated_at: datetime

    @property
    def id(self) -> str:
        """The id Paubox's OpenAPI file shows: a string (``template_1``)."""
        return f"{ID_PREFIX}{self.number}"

    def to_dict(self, *, with_body: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name}
        if with_body:
            data["body"] = self.body
        data["created_at"] = iso_z(self.created_at)
        data["updated_at"] = iso_z(self.updated_at)
        return data


class TemplateStore:
    """The sandbox's templates; thread-safe. Names are unique and matched exactly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._templates: dict[int, SandboxTemplate] = {}
        self._numbers = itertools.count(1)

    def all(self) -> list[SandboxTemplate]:
        with self._lock:
            return sorted(self._templates.values(), key=lambda t: t.number)

    def get(self, template_id: str | int) -> SandboxTemplate | None:
        """The template ``template_id`` names (``template_1``, ``"1"`` or ``1``), if any."""
        number = template_id if isinstance(template_id, int) else number_of(template_id)
        with self._lock:
            return self._templates.get(number) if number is not None else None

    def by_name(self, name: str) -> SandboxTemplate | None:
        with self._lock:
            return next((t for t in self._templates.values() if t.name == name), None)

    def create(self, name: str, body: str) -> SandboxTemplate:
        """Store a template; ``ValueError`` for a bad name or body (checked first)."""
        _check_template(name, body)
        now = datetime.now(timezone.utc)
        with self._lock:
            self._check_unique(name, None)
            template = SandboxTemplate(next(self._numbers), name, body, now, now)
            self._templates[template.number] = template
            return template

    def update(
        self, template_id: str | int, name: str | None = None, body: str | None = None
    ) -> SandboxTemplate | None:
        """Change a template; None for an unknown id, ``ValueError`` for a bad name or body."""
        template = self.get(template_id)
        with self._lock:
            if template is None or self._templates.get(template.number) is not template:
                return None
            new_name = template.name if name is None else name
            new_body = template.body if body is None else body
            _check_template(new_name, new_body)
            self._check_unique(new_name, template.number)
            template.name, template.body = new_name, new_body
            template.updated_at = datetime.now(timezone.utc)
            return template

    def delete(self, template_id: str | int) -> bool:
        template = self.get(template_id)
        with self._lock:
            return template is not None and self._templates.pop(template.number, None) is not None

    def reset(self) -> None:
        with self._lock:
            self._templates.clear()
            self._numbers = itertools.count(1)

    def _check_unique(self, name: str, own_number: int | None) -> None:
        if any(t.name == name and t.number != own_number for t in self._templates.values()):
            raise ValueError("name has already been taken")


def _check_template(name: str, body: str) -> None:
    if not name.strip():
        raise ValueError("data[name] must not be blank")
    if len(name) > 255:
        raise ValueError("data[name] is too long (at most 255 characters)")
    if not body.strip():
        raise ValueError("data[body] must not be blank")
    try:
        check(body)
    except HandlebarsError as error:
        raise ValueError(f"data[body] is not a template the sandbox can render: {error}") from None
