"""Planfix XML API client: transport, auth, parsing into typed models. Knows nothing of Telegram or SQLite."""
