"""Old import paths of the modules moved in 0.2: each still imports, with a warning, for one
release. One finder serves them all, so the package's folders show only the current layout."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

#: Old module path -> new module path (the changelog lists the same moves).
MOVED = {
    "django_paubox.payload": "django_paubox.sending.payload",
    "django_paubox.scheduled_sends": "django_paubox.sending.scheduled",
    "django_paubox.templates_api": "django_paubox.sending.templates",
    "django_paubox.statuses": "django_paubox.tracking.statuses",
    "django_paubox.dispositions": "django_paubox.tracking.parsing",
    "django_paubox.receipts": "django_paubox.tracking.polling",
    "django_paubox.views": "django_paubox.tracking.webhook",
    "django_paubox.retention": "django_paubox.tracking.retention",
    "django_paubox.schedules": "django_paubox.beat",
    "django_paubox.dashboard": "django_paubox.admin.dashboard",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old path with the new module itself (one object: patches reach it)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {MOVED[spec.name]}; the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module is imported already."""


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
