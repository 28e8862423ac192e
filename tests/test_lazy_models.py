"""aiogram's models are built on first use (bot/lazy_models.py): every one still builds, and the import stays small.

Each check runs in a fresh interpreter: in the test process other tests may already have built the models."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_every_aiogram_model_builds_on_first_use():
    out = fresh("""
        import inspect
        import bot, aiogram.methods, aiogram.types
        from pydantic import BaseModel
        models = {o: None for module in (aiogram.methods, aiogram.types)  # methods first: they nest unbuilt types
                  for o in map(lambda n: getattr(module, n), module.__all__)
                  if inspect.isclass(o) and issubclass(o, BaseModel)}
        deferred = sum(not m.__pydantic_complete__ for m in models)
        for model in models:
            model.model_rebuild(raise_errors=True)  # what the first use does
            assert model.__pydantic_complete__, model.__name__
        print(len(models), deferred)
    """)
    models, deferred = map(int, out.split())
    assert models > 300 and deferred > 300


def test_an_update_and_a_method_work_on_first_use():
    out = fresh("""
        import bot, aiogram.methods, aiogram.types
        method = aiogram.methods.SendMessage(chat_id=1, text="hi", reply_markup=aiogram.types.InlineKeyboardMarkup(
            inline_keyboard=[[aiogram.types.InlineKeyboardButton(text="ok", callback_data="x")]]))
        assert method.model_dump(exclude_none=True)["reply_markup"]["inline_keyboard"][0][0]["text"] == "ok"
        update = aiogram.types.Update.model_validate({
            "update_id": 7,
            "message": {"message_id": 3, "date": 0, "chat": {"id": -100, "type": "supergroup", "title": "Team"},
                        "from": {"id": 5, "is_bot": False, "first_name": "Anna"}, "text": "/my",
                        "reply_to_message": {"message_id": 2, "date": 0, "chat": {"id": -100, "type": "supergroup"}}}})
        assert isinstance(update.message.reply_to_message, aiogram.types.Message)
        print(update.message.from_user.first_name)
    """)
    assert out == "Anna"


def test_the_daemon_imports_within_its_memory_ceiling():
    """Eagerly built, the import peaks at ~185 MB; deferred, at ~80 MB."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent.
    peak_kib = int(fresh("""
        import pathlib, bot.app
        print(next(line.split()[1] for line in pathlib.Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM")))
    """))
    assert peak_kib < 120 * 1024, f"import bot.app peaked at {peak_kib // 1024} MB"
