"""Persistent state in one SQLite file: the only code that speaks SQL."""
