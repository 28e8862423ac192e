"""planfix-bot: watches a Planfix account and tells Telegram chats what changed."""

__version__ = "0.1.0"
