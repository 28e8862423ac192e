"""The fake Telegram Bot API answers aiogram over real HTTP the way Telegram does, faults included."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandStart
from aiogram.types import BotCommand, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions
from aiogram.types import Message as TgMessage

from bot.fakes.telegram import FakeTelegram
from bot.fakes.telegram_html import TelegramHTMLError, check_message_text, parse_telegram_entities
from tests.telegram_fixtures import QuickSession

USER = 222222222
GROUP = -1001234567890
KEYBOARD = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="Open", callback_data="open:1")]])


def make_bot(fake: FakeTelegram, token: str | None = None) -> Bot:
    return Bot(token or fake.token, session=QuickSession(api=TelegramAPIServer.from_base(fake.base_url), timeout=5))


@pytest.fixture
async def bot(fake):
    client = make_bot(fake)
    yield client
    await client.session.close()


# ── the validator itself ─────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ("<p>x</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("Ж<br/>", 'Unsupported start tag "br/" at byte offset 2'),
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ("<b", "Unclosed start tag at byte offset 0"),
        ("a &nbsp; b", 'Unsupported HTML entity "&nbsp;" at byte offset 2'),
        ("Tom & Jerry", 'Unsupported HTML entity "&" at byte offset 4'),
        ('<span class="x">s</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ],
)
def test_validator_rejects_like_tdlib(html, reason):
    """Markup outside Telegram's subset fails with TDLib's wording and UTF-8 byte offsets."""
    with pytest.raises(TelegramHTMLError) as caught:
        parse_telegram_entities(html)
    assert caught.value.reason == reason
    assert caught.value.description == f"Bad Request: can't parse entities: {reason}"


def test_validator_accepts_the_whole_subset():
    """Every tag and entity Telegram documents parses, with UTF-16 offsets in the entities."""
    html = (
        '😀 <b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins><s>s</s><strike>k</strike><del>d</del>'
        '<span class="tg-spoiler">p</span><tg-spoiler>q</tg-spoiler><a href="https://e.com/?a=1&amp;b=2">l</a>'
        '<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji><code>c</code>'
        '<pre><code class="language-python">x = 1</code></pre><blockquote expandable>q</blockquote>'
        "&lt;&gt;&amp;&quot;&#39;&#x41;"
    )
    parsed = parse_telegram_entities(html)
    assert parsed.text.endswith("<>&\"'A")
    types = [e.type for e in parsed.entities]
    assert types[:2] == ["bold", "bold"] and "expandable_blockquote" in types and "custom_emoji" in types
    link = next(e for e in parsed.entities if e.type == "text_link")
    assert link.url == "https://e.com/?a=1&b=2"
    assert parsed.entities[0].offset == 3  # the emoji before it counts two UTF-16 units
    assert next(e for e in parsed.entities if e.type == "pre").language == "python"


def test_length_is_counted_in_utf16_after_parsing():
    """4096 UTF-16 units after parsing pass, 4097 fail; tags and entities don't count, emoji count double."""
    assert check_message_text("😀" * 2048, None).text
    assert check_message_text("<b>" + "&amp;" * 4096 + "</b>", "HTML").text == "&" * 4096
    for text in ("😀" * 2048 + "x", "x" * 4097):
        with pytest.raises(ValueError, match="message is too long"):
            check_message_text(text, "HTML")
    with pytest.raises(ValueError, match="message text is empty"):
        check_message_text("<b> </b>", "HTML")


# ── aiogram against the fake ─────────────────────────────────────────────────────────────────────────────────


async def test_valid_html_is_recorded_with_plain_text_and_options(fake, bot):
    """An accepted sendMessage is recorded raw and as the user sees it, with every delivery option."""
    message = await bot.send_message(
        GROUP,
        '🔄 <b>#7</b> <a href="https://acme.planfix.ru/task/7">A &amp; B &lt;x&gt;</a>',
        parse_mode="HTML",
        reply_markup=KEYBOARD,
        disable_notification=True,
        link_preview_options=LinkPreviewOptions(is_disabled=True),
        message_thread_id=42,
    )
    assert message.text == "🔄 #7 A & B <x>" and message.chat.type == "supergroup"
    assert [e.type for e in message.entities] == ["bold", "text_link"]
    [sent] = fake.messages_to(GROUP)
    assert sent.plain_text == "🔄 #7 A & B <x>" and sent.text.startswith("🔄 <b>#7</b>")
    assert sent.parse_mode == "HTML" and sent.disable_notification and sent.link_preview_disabled
    assert sent.message_thread_id == 42 and not sent.edited and sent.message_id == message.message_id
    assert sent.reply_markup == {"inline_keyboard": [[{"text": "Open", "callback_data": "open:1"}]]}
    method, params = fake.calls[-1]
    assert method == "sendMessage" and params["chat_id"] == GROUP and params["reply_markup"] == sent.reply_markup


@pytest.mark.parametrize("text", ["<p>Hello</p>", "<b>unclosed", "1 < 2", "a&nbsp;b"])
async def test_invalid_html_is_rejected_as_telegram_does(fake, bot, text):
    """Markup Telegram can't parse raises aiogram's TelegramBadRequest "can't parse entities"; nothing arrives."""
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(USER, text, parse_mode="HTML")
    assert fake.sent == []


async def test_too_long_text_is_rejected(fake, bot):
    """2049 emoji are 4098 UTF-16 units: "message is too long", with or without parse_mode."""
    for parse_mode in ("HTML", None):
        with pytest.raises(TelegramBadRequest, match="message is too long"):
            await bot.send_message(USER, "😀" * 2049, parse_mode=parse_mode)
    await bot.send_message(USER, "😀" * 2048)
    assert len(fake.sent) == 1


async def test_retry_after_is_injected_once(fake, bot):
    """inject_retry_after answers 429 with parameters.retry_after, then Telegram works again."""
    fake.inject_retry_after(7, chat_id=USER)
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(USER, "hi")
    assert caught.value.retry_after == 7 and "Too Many Requests: retry after 7" in caught.value.message
    await bot.send_message(USER, "hi")
    assert [m.plain_text for m in fake.sent] == ["hi"]


async def test_injected_errors_respect_chat_and_method(fake, bot):
    """inject_error hits only the chat and method it names, `times` times, in order."""
    fake.inject_error(400, "Bad Request: chat not found", chat_id=GROUP, times=2)
    await bot.send_message(USER, "other chat is fine")
    for _ in range(2):
        with pytest.raises(TelegramBadRequest, match="chat not found"):
            await bot.send_message(GROUP, "x")
    await bot.send_message(GROUP, "third time works")
    fake.inject_error(500, "Internal Server Error", method="getMe")
    await bot.send_message(GROUP, "sendMessage is not getMe")
    with pytest.raises(TelegramServerError):
        await bot.get_me()


async def test_blocked_user_is_forbidden_until_unblocked(fake, bot):
    """block() answers 403 "bot was blocked by the user" on every send until unblock()."""
    fake.block(USER)
    for _ in range(2):
        with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
            await bot.send_message(USER, "hi")
    await bot.send_message(GROUP, "others still get messages")
    fake.unblock(USER)
    await bot.send_message(USER, "hi again")
    assert [m.chat_id for m in fake.sent] == [GROUP, USER]


async def test_migrated_group_keeps_failing_with_the_new_id(fake, bot):
    """inject_migrate: the old group id fails with migrate_to_chat_id every time; the new id works."""
    old, new = -4567, -1009876543210
    fake.inject_migrate(old, new)
    for _ in range(2):
        with pytest.raises(TelegramMigrateToChat) as caught:
            await bot.send_message(old, "hi")
        assert caught.value.migrate_to_chat_id == new
        assert "group chat was upgraded to a supergroup chat" in caught.value.message
    await bot.send_message(new, "hi")
    assert fake.messages_to(new)[0].plain_text == "hi"


async def test_edit_message_text(fake, bot):
    """editMessageText replaces the text; the same text and markup again is "message is not modified"."""
    message = await bot.send_message(USER, "<b>v1</b>", parse_mode="HTML", reply_markup=KEYBOARD)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            text="<b>v1</b>", chat_id=USER, message_id=message.message_id, parse_mode="HTML", reply_markup=KEYBOARD
        )
    edited = await bot.edit_message_text(
        text="<b>v2</b>", chat_id=USER, message_id=message.message_id, parse_mode="HTML", reply_markup=KEYBOARD
    )
    assert edited.text == "v2" and edited.edit_date is not None
    assert [(m.plain_text, m.edited) for m in fake.messages_to(USER)] == [("v1", False), ("v2", True)]
    assert fake.message(USER, message.message_id)["text"] == "v2"
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(text="x", chat_id=USER, message_id=999)


async def test_wrong_token_and_unknown_method(fake, bot):
    """A wrong token in the URL is 401 Unauthorized; an unknown method is 404 Not Found, in Telegram's JSON."""
    stranger = make_bot(fake, "999:WRONG")
    try:
        with pytest.raises(TelegramUnauthorizedError, match="Unauthorized"):
            await stranger.get_me()
    finally:
        await stranger.session.close()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{fake.base_url}/bot{fake.token}/sendTelepathy", json={"chat_id": 1}) as response:
            assert response.status == 404
            assert await response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


async def test_json_bodies_work_too(fake):
    """Clients that POST JSON (not aiogram's form fields) are understood the same way."""
    async with aiohttp.ClientSession() as http:
        url = f"{fake.base_url}/bot{fake.token}/sendMessage"
        async with http.post(url, json={"chat_id": USER, "text": "<i>hi</i>", "parse_mode": "HTML"}) as response:
            body = await response.json()
    assert body["ok"] and body["result"]["text"] == "hi" and fake.sent[0].plain_text == "hi"


async def test_command_scopes_are_checked_and_resolved_like_telegram(fake, bot):
    """setMyCommands with a BotCommandScope: a private chat's scope needs a chat the user opened ("chat not
    found" before); the menu a user sees prefers their chat's scope, then the default, language first."""
    from aiogram.exceptions import TelegramBadRequest
    from aiogram.types import BotCommandScopeChat

    everyone = [BotCommand(command="my", description="mine")]
    admins = everyone + [BotCommand(command="status", description="health")]
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.set_my_commands(admins, scope=BotCommandScopeChat(chat_id=USER))
    fake.user_sends(chat_id=USER, user_id=USER, text="/start")
    assert await bot.set_my_commands(everyone)
    assert await bot.set_my_commands(admins, scope=BotCommandScopeChat(chat_id=USER), language_code="en")
    assert fake.menu_for(USER, "en") == ["my", "status"] and fake.menu_for(USER, "ru") == ["my"]
    assert fake.menu_for(USER + 1, "en") == ["my"]
    assert [c.command for c in await bot.get_my_commands(scope=BotCommandScopeChat(chat_id=USER),
                                                         language_code="en")] == ["my", "status"]


async def test_housekeeping_methods(fake, bot):
    """getMe, commands, deleteWebhook, sendChatAction, getChat and close answer like Telegram."""
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (fake.bot_id, fake.username, True)
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert await bot.set_my_commands([BotCommand(command="task", description="Show a task")])
    assert [c.command for c in await bot.get_my_commands()] == ["task"]
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == []
    assert await bot.send_chat_action(USER, "typing")
    chat = await bot.get_chat(GROUP)
    assert chat.id == GROUP and chat.type == "supergroup"
    assert await bot.close()
    assert [name for name, _ in fake.calls][:3] == ["getMe", "deleteWebhook", "setMyCommands"]


async def test_transport_faults(fake, bot):
    """http500 → server error, drop → network error with nothing sent, lost_reply → network error but delivered."""
    fake.inject_fault("http500")
    with pytest.raises(TelegramServerError):
        await bot.send_message(USER, "a")
    fake.inject_fault("drop")
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(USER, "b")
    assert fake.sent == []
    fake.inject_fault("lost_reply")
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(USER, "c")
    assert [m.plain_text for m in fake.sent] == ["c"]


async def test_a_hung_send_does_not_block_long_polling(fake, bot):
    """A "hang" fault delays only its own request: getUpdates is served meanwhile."""
    fake.inject_fault("hang", seconds=3)
    slow = asyncio.create_task(bot.send_message(USER, "slow"))
    await asyncio.sleep(0.1)
    fake.user_sends(chat_id=USER, user_id=USER, text="hello")
    started = time.monotonic()
    updates = await bot.get_updates(timeout=5)
    assert time.monotonic() - started < 1 and updates[0].message.text == "hello"
    assert not slow.done()
    slow.cancel()


async def test_in_flight_counts_hung_sends_and_clear_faults_forgets_unused_rules(fake, bot):
    """in_flight shows sends received but not answered (what a crash test needs); clear_faults drops the rest of
    the injected rules while blocks stay."""
    fake.inject_fault("hang", seconds=0.3, times=5)
    fake.inject_error(400, "Bad Request: chat not found", times=5)
    fake.block(USER + 1)
    slow = asyncio.create_task(bot.send_message(USER, "slow"))
    await asyncio.sleep(0.1)
    assert fake.in_flight == 1
    await slow
    assert fake.in_flight == 0
    fake.clear_faults()
    await bot.send_message(USER, "fine")
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(USER + 1, "blocked")
    assert [m.plain_text for m in fake.sent] == ["slow", "fine"]


async def test_long_polling_waits_and_offset_confirms(fake, bot):
    """getUpdates holds until an update is queued; an offset past it confirms it for good."""
    asyncio.get_running_loop().call_later(0.2, lambda: fake.user_sends(chat_id=USER, user_id=USER, text="/start"))
    started = time.monotonic()
    [update] = await bot.get_updates(timeout=5)
    assert 0.15 < time.monotonic() - started < 2
    assert update.message.text == "/start" and update.message.entities[0].type == "bot_command"
    assert await bot.get_updates(offset=update.update_id + 1, timeout=0) == []


async def test_second_poller_terminates_the_first(fake, bot):
    """Two concurrent getUpdates: the earlier one gets 409 Conflict, as with two bot instances."""
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(bot.get_updates(timeout=1))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await first
    assert await second == []


async def test_dispatcher_polling_delivers_messages_and_button_presses(fake, bot):
    """user_sends()/user_presses() reach aiogram handlers through getUpdates; their replies are recorded."""
    router = Router()

    @router.message(CommandStart())
    async def start(message: TgMessage) -> None:
        await message.answer(f"Hello, <b>{message.from_user.first_name}</b>", reply_markup=KEYBOARD)

    @router.callback_query(F.data == "open:1")
    async def pressed(query: CallbackQuery) -> None:
        await query.answer("Opening")
        await query.message.edit_text("Opened")

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    bot.default.parse_mode = "HTML"
    polling = asyncio.create_task(
        dispatcher.start_polling(bot, polling_timeout=1, handle_signals=False, close_bot_session=False)
    )
    try:
        fake.user_sends(chat_id=USER, user_id=USER, text="/start", first_name="Анна")
        [greeting] = await fake.wait_for_messages(1, chat_id=USER)
        assert greeting.plain_text == "Hello, Анна" and greeting.parse_mode == "HTML"
        fake.user_presses(chat_id=USER, user_id=USER, message_id=greeting.message_id, data="open:1")
        messages = await fake.wait_for_messages(2, chat_id=USER)
        assert messages[1].edited and messages[1].plain_text == "Opened"
        assert fake.calls_of("answerCallbackQuery")[0]["text"] == "Opening"
    finally:
        await dispatcher.stop_polling()
        await polling
    offsets = [params.get("offset") for params in fake.calls_of("getUpdates")]
    assert offsets[-1] == 3  # both updates confirmed, none delivered twice


async def test_strict_limits_answer_429_on_a_burst_to_one_group():
    """strict_limits: a burst to one group exceeds the per-chat burst and gets 429 with retry_after."""
    strict = FakeTelegram(strict_limits=True)
    await strict.start()
    client = make_bot(strict)
    try:
        results = await asyncio.gather(
            *(client.send_message(GROUP, f"n{i}") for i in range(10)), return_exceptions=True
        )
    finally:
        await client.session.close()
        await strict.stop()
    limited = [r for r in results if isinstance(r, TelegramRetryAfter)]
    assert len(strict.sent) == FakeTelegram.PER_CHAT_BURST
    assert len(limited) == 10 - FakeTelegram.PER_CHAT_BURST == strict.rate_limit_hits
    assert all(r.retry_after >= 1 for r in limited)


async def test_wait_for_messages_times_out_with_what_it_saw(fake, bot):
    """wait_for_messages fails fast and says what arrived instead of hanging the test."""
    await bot.send_message(USER, "only one")
    with pytest.raises(TimeoutError, match="only one"):
        await fake.wait_for_messages(2, timeout=0.2)


async def test_restart_on_the_same_port_keeps_state(fake, bot):
    """stop() then start(port=...) fakes a Telegram outage: requests fail meanwhile, history survives."""
    await bot.send_message(USER, "before")
    port = int(fake.base_url.rsplit(":", 1)[1])
    await fake.stop()
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(USER, "during")
    await fake.start(port=port)
    await bot.send_message(USER, "after")
    assert [m.plain_text for m in fake.sent] == ["before", "after"]
