"""aiogram's ~400 Telegram models, built on first use instead of all at import (half the daemon's memory).

`aiogram.types` ends by calling `model_rebuild(_types_namespace=…)` on every model it defines, which makes pydantic
build every validator and serializer eagerly: about 100 MB and 2 s of start-up for models the daemon mostly never
sees. `install()` makes exactly those calls remember the namespace on the model instead of building it. The model
stays "incomplete", and pydantic builds it the first time it is used (its mock validator calls `model_rebuild`,
which then resolves the forward references through that remembered namespace). Nothing else changes: any other
`model_rebuild` call, and every call after aiogram's import, goes to pydantic as before.
tests/test_lazy_models.py builds every aiogram model through this path and checks the import's memory.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_pydantic_rebuild = BaseModel.__dict__["model_rebuild"]  # the classmethod object, restored by uninstall()


def _remember_or_rebuild(
    cls: type[BaseModel],
    *,
    force: bool = False,
    raise_errors: bool = True,
    _parent_namespace_depth: int = 2,
    _types_namespace: Any = None,
) -> bool | None:
    if _types_namespace is not None and not force and cls.__module__.startswith("aiogram."):
        # Forward references are resolved against the parent namespace when pydantic builds the model on first use.
        cls.__pydantic_parent_namespace__ = dict(_types_namespace)
        return None
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
