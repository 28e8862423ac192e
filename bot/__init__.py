"""planfix-bot: watches a Planfix account and tells Telegram chats what changed."""

from bot import lazy_models

__version__ = "0.1.0"

lazy_models.install()  # before anything imports aiogram: see bot/lazy_models.py
