"""Fake Planfix and Telegram servers on loopback, for the tests, the benchmarks and the demo."""
