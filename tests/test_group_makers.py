"""Group subscriptions follow the people who made them (issue 11, item 4): a maker who leaves the group, loses its
admin rights or is unlinked stops feeding it — from chat_member updates and from the daily getChatMember check —
and the group is told once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.chat import makers
from bot.chat.access import Standing, Viewer, maker_standing
from tests.chat_harness import ADMIN_TG, ANNA, BORIS, BORIS_TG, ChatHarness
from tests.e2e import Daemon, daemon_config, wait_polls, write_config

GROUP = -100444


@pytest.mark.parametrize(("viewer", "status", "is_member", "expected"), [
    (None, "administrator", True, Standing.UNLINKED),
    (Viewer(1, 10, False), "administrator", True, Standing.QUALIFIES),
    (Viewer(1, 10, False), "creator", True, Standing.QUALIFIES),
    (Viewer(1, 10, False), "member", True, Standing.NOT_ADMIN),
    (Viewer(1, 10, False), "left", True, Standing.LEFT),
    (Viewer(1, 10, False), "kicked", True, Standing.LEFT),
    (Viewer(1, 10, False), "restricted", False, Standing.LEFT),
    (Viewer(1, None, True), "member", True, Standing.QUALIFIES),  # a bot admin need not administer the group
    (Viewer(1, None, True), "left", True, Standing.LEFT),  # …but must still be in it
])
def test_maker_standing(viewer, status, is_member, expected):
    assert maker_standing(viewer, status, is_member=is_member) is expected


@pytest.fixture
async def h(tmp_path):
    async with ChatHarness(tmp_path) as harness:
        harness.site = harness.pf.add_task(title="Site task", owner=ANNA, workers=(BORIS,), project=(7, "Website"))
        await harness.poll()
        harness.tg.set_chat_admins(GROUP, BORIS_TG)
        [ok] = await harness.send("/subscribe", user=BORIS_TG, chat=GROUP)
        assert "every project" in ok.plain_text
        yield harness


def queued(h: ChatHarness) -> int:
    return len(h.store.outbox.outbox_rows(GROUP))


async def change(h: ChatHarness, status: int) -> None:
    h.pf.change_status(h.site.id, status, by=ANNA)
    await h.poll()


def notices(h: ChatHarness) -> list[str]:
    return [m.plain_text for m in h.tg.messages_to(GROUP) if "paused" in m.plain_text]


async def test_a_maker_who_leaves_stops_the_groups_subscription_and_the_group_is_told_once(h):
    await change(h, 2)
    assert queued(h) == 1
    h.tg.set_member_status(GROUP, BORIS_TG, "left")
    await h._feed()
    [notice] = notices(h)
    assert "no longer in the group" in notice and "/subscribe" in notice
    await change(h, 3)
    assert queued(h) == 1
    h.tg.set_member_status(GROUP, BORIS_TG, "kicked")  # another update about the same person: no second notice
    await h._feed()
    h.now = datetime.now(UTC) + timedelta(days=2)
    await makers.check_makers(h.ctx, h.bot)  # the daily check agrees: still no second notice
    assert len(notices(h)) == 1
    [listing] = await h.send("/subscriptions", user=ADMIN_TG, chat=GROUP)
    assert "paused" in listing.plain_text


async def test_lost_admin_rights_found_by_the_daily_check_when_no_update_came(h):
    """The bot is not an administrator of the group, so Telegram sends no chat_member update: getChatMember at
    the next daily check finds it; checks in between ask Telegram nothing."""
    h.now = datetime.now(UTC)
    assert await makers.check_makers(h.ctx, h.bot) == 0  # just made: checked
    h.tg.set_member_status(GROUP, BORIS_TG, "member", bot_is_admin=False)
    h.now += timedelta(hours=12)
    assert await makers.check_makers(h.ctx, h.bot) == 0
    await change(h, 2)
    assert queued(h) == 1  # not yet known
    h.now += timedelta(hours=13)
    assert await makers.check_makers(h.ctx, h.bot) == 1
    [notice] = notices(h)
    assert "no longer an administrator" in notice
    await change(h, 3)
    assert queued(h) == 1
    h.now += timedelta(days=1, minutes=1)
    await makers.check_makers(h.ctx, h.bot)
    assert len(notices(h)) == 1


async def test_a_re_promoted_maker_resumes_and_an_unlinked_one_is_suspended(h):
    h.tg.set_member_status(GROUP, BORIS_TG, "member")
    await h._feed()
    h.tg.set_member_status(GROUP, BORIS_TG, "administrator")
    await h._feed()
    await change(h, 2)
    assert queued(h) == 1 and len(notices(h)) == 1
    # Boris is unlinked by a config reload: the next check needs no request to suspend and tell.
    unlinked = h.settings.model_copy(update={"users": [u for u in h.settings.users if u.telegram_id != BORIS_TG]})
    h.ctx.settings = h.audience.settings = unlinked
    assert await makers.check_makers(h.ctx, h.bot) == 0
    assert len(notices(h)) == 2 and "no longer use the bot" in notices(h)[-1]


async def test_a_failed_notice_is_told_by_the_next_check(h):
    h.tg.inject_error(403, "Forbidden: bot was kicked from the supergroup chat", chat_id=GROUP)
    h.tg.set_member_status(GROUP, BORIS_TG, "left")
    await h._feed()
    assert notices(h) == []
    await makers.check_makers(h.ctx, h.bot)
    assert len(notices(h)) == 1


async def test_the_daemon_asks_for_chat_member_updates_and_acts_on_them(tmp_path):
    """The real daemon: getUpdates asks for chat_member; the group admin who made /subscribe leaves, the group is
    told once and hears of no further change, while a [[routes]] chat still does."""
    from bot.fakes.planfix import FakePlanfix
    from bot.fakes.telegram import FakeTelegram

    async with FakePlanfix() as pf, FakeTelegram() as tg:
        pf.add_user(10, "Anna")
        task = pf.add_task(title="Watched", owner=10)
        config = daemon_config(tmp_path, pf, tg, routes=[{"chat_id": -1}],
                               users=[{"telegram_id": BORIS_TG, "planfix_id": 10}])
        tg.set_chat_admins(GROUP, BORIS_TG)
        daemon = await Daemon(write_config(tmp_path / "c.toml", config), tmp_path / "d.log").start()
        try:
            tg.user_sends(chat_id=GROUP, user_id=BORIS_TG, text="/subscribe", chat_type="supergroup")
            await tg.wait_for_messages(1, chat_id=GROUP, timeout=60)
            await wait_polls(pf, 2)
            pf.change_status(task.id, 2, by=11)
            await tg.wait_for_messages(2, chat_id=GROUP, timeout=60)
            getupdates = [params for method, params in tg.calls if method.lower() == "getupdates"]
            assert "chat_member" in getupdates[-1].get("allowed_updates", [])
            tg.set_member_status(GROUP, BORIS_TG, "left")
            await tg.wait_for_messages(3, chat_id=GROUP, timeout=60)
            pf.change_status(task.id, 3, by=11)
            await tg.wait_for_messages(2, chat_id=-1, timeout=60)
        finally:
            assert await daemon.stop() == 0
        group = [m.plain_text for m in tg.messages_to(GROUP)]
    assert len(group) == 3 and "paused" in group[2], group
    assert "Traceback" not in daemon.output()
