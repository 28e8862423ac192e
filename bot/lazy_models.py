"""aiogram's ~400 Telegram models, built on first use instead of all at import (half the daemon's memory).

`aiogram.types` ends by calling `model_rebuild(_types_namespace=…)` on every model it defines, which makes pydantic
build every validator and serializer eagerly: about 100 MB and 2 s of start-up for models the daemon mostly never
sees. `install()` makes exactly those calls remember aiogram's namespace instead of building. The models stay
"incomplete", and pydantic builds each the first time it is used: its mock validator calls `model_rebuild`, and
for an aiogram model that call is given the remembered namespace, so the forward references of the model and of
every incomplete model nested in it resolve as they would have at import. Models outside aiogram are untouched.
tests/test_lazy_models.py builds every aiogram model through this path and checks the import's memory.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_pydantic_rebuild = BaseModel.__dict__["model_rebuild"]  # the classmethod object, restored by uninstall()
_aiogram_namespace: dict[str, Any] = {}  # what aiogram.types passes to model_rebuild: every type, by name


def _remember_or_rebuild(
    cls: type[BaseModel],
    *,
    force: bool = False,
    raise_errors: bool = True,
    _parent_namespace_depth: int = 2,
    _types_namespace: Any = None,
) -> bool | None:
    if cls.__module__.startswith("aiogram."):
        if _types_namespace is not None and not force:
            _aiogram_namespace.update(_types_namespace)
            return None
        if _types_namespace is None and _aiogram_namespace:
            _types_namespace = _aiogram_namespace  # first use: resolve as aiogram's import would have
    # One frame deeper than pydantic expects: keep the caller's namespace lookup pointing at the caller.
    depth = _parent_namespace_depth + 1 if _parent_namespace_depth > 0 else 0
    return _pydantic_rebuild.__func__(
        cls, force=force, raise_errors=raise_errors, _parent_namespace_depth=depth, _types_namespace=_types_namespace
    )


def install() -> None:
    """Defer aiogram's model builds. Call before aiogram is imported (bot/__init__.py does); idempotent."""
    BaseModel.model_rebuild = classmethod(_remember_or_rebuild)  # type: ignore[method-assign,assignment]


def uninstall() -> None:
    BaseModel.model_rebuild = _pydantic_rebuild  # type: ignore[method-assign]
