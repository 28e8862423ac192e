"""Admin notices on their own: once per kind and chat until the problem is over, raised together sent together."""

from __future__ import annotations

import asyncio

from bot.notify.admin_notices import AdminNotices, pack, reason


async def test_notices_raised_together_go_out_as_one_message_each_kind_once_per_chat():
    """Two chats gone at once are one message; the same kind for the same chat is not told twice until over."""
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    box = AdminNotices(send, batch_seconds=0.01)
    box.once("stuck", 1, "chat 1 stuck")
    box.once("stuck", 1, "chat 1 stuck again")
    box.once("stuck", 2, "chat 2 stuck")
    await asyncio.wait_for(box.sent(), 5)
    assert sent == ["chat 1 stuck\n\nchat 2 stuck"]
    box.once("stuck", 1, "chat 1 stuck again")
    box.over(1, "stuck")
    box.once("stuck", 1, "chat 1 stuck once more")
    await asyncio.wait_for(box.sent(), 5)
    assert sent[1:] == ["chat 1 stuck once more"]


def test_many_notices_are_packed_into_messages_within_the_limit():
    """Notices are joined by blank lines while the message fits; a notice is never split."""
    assert pack(["a" * 40, "b" * 40, "c" * 40], 90) == ["a" * 40 + "\n\n" + "b" * 40, "c" * 40]


def test_a_reason_is_one_escaped_line_without_secrets():
    """Error texts quoted to admins are redacted, on one line, bounded and HTML-escaped."""
    text = reason("Bad <Request>:\n  token 123456789:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA " + "x" * 500)
    assert "\n" not in text and "&lt;Request&gt;" in text and "AAAAAAAA" not in text and len(text) < 400
