"""aiogram's models are built on first use (bot/lazy_models.py): every one still builds, and the import stays small."""

from __future__ import annotations

import inspect
import subprocess
import sys

import aiogram.methods
import aiogram.types
from pydantic import BaseModel

import bot  # noqa: F401  (installs the deferral before aiogram is imported anywhere in the process)


def aiogram_models() -> list[type[BaseModel]]:
    found = {}
    for module in (aiogram.types, aiogram.methods):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, BaseModel):
                found[obj] = None
    return list(found)


def test_every_aiogram_model_builds_from_the_remembered_namespace():
    models = aiogram_models()
    assert len(models) > 300
    for model in models:
        model.model_rebuild(raise_errors=True)  # resolves the forward references as first use would
        assert model.__pydantic_complete__, model.__name__


def test_an_update_parses_into_real_models_on_first_use():
    update = aiogram.types.Update.model_validate({
        "update_id": 7,
        "message": {"message_id": 3, "date": 0, "chat": {"id": -100, "type": "supergroup", "title": "Team"},
                    "from": {"id": 5, "is_bot": False, "first_name": "Anna"}, "text": "/my",
                    "reply_to_message": {"message_id": 2, "date": 0, "chat": {"id": -100, "type": "supergroup"}}},
    })
    assert isinstance(update.message, aiogram.types.Message)
    assert isinstance(update.message.reply_to_message, aiogram.types.Message)
    assert update.message.from_user.first_name == "Anna"
    method = aiogram.methods.SendMessage(chat_id=1, text="hi", reply_markup=aiogram.types.InlineKeyboardMarkup(
        inline_keyboard=[[aiogram.types.InlineKeyboardButton(text="ok", callback_data="x")]]))
    assert method.model_dump(exclude_none=True)["reply_markup"]["inline_keyboard"][0][0]["text"] == "ok"


def test_the_daemon_imports_within_its_memory_ceiling():
    """Eagerly built, aiogram alone peaks at ~170 MB; deferred, the whole daemon imports in ~80 MB."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest, with aiogram built).
    code = ("import bot.app, pathlib; print(next(line.split()[1] for line in "
            "pathlib.Path('/proc/self/status').read_text().splitlines() if line.startswith('VmHWM')))")
    peak_kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert peak_kib < 120 * 1024, f"import bot.app peaked at {peak_kib // 1024} MB"
