"""End to end (issue 13 item 0): a comment reaches the people on the task, a reply to it becomes a comment, and
that comment reaches the others but not its author. One `planfix-bot run` subprocess against the fakes."""

from __future__ import annotations

from tests.e2e import Daemon, daemon_config, wait_polls, write_config
from tests.test_e2e_actions import comments, reply

TEAM, FEED = -100777, -100888
ANNA_TG, BORIS_TG = 501, 502
ANNA, BORIS = 10, 11


async def test_a_comment_reaches_the_others_and_a_reply_to_it_goes_back_as_a_comment(fakes, tmp_path):
    pf, tg = fakes
    pf.add_user(ANNA, "Anna", "Smirnova")
    pf.add_user(BORIS, "Boris")
    task = pf.add_task(title="Landing page", owner=ANNA, workers=(ANNA, BORIS))
    config = daemon_config(
        tmp_path, pf, tg, users=[{"telegram_id": ANNA_TG, "planfix_id": ANNA},
                                 {"telegram_id": BORIS_TG, "planfix_id": BORIS}],
        routes=[{"chat_id": TEAM}, {"chat_id": FEED, "events": ["comment"]}],
        delivery={"coalesce_seconds": 0}, actions={"enabled": True},
    )
    daemon = await Daemon(write_config(tmp_path / "config.toml", config), tmp_path / "daemon.log").start()
    try:
        await wait_polls(pf, 1)
        pf.add_comment(task.id, "<p>Copy is <b>ready</b> &amp; reviewed</p><script>x()</script>", by=BORIS,
                       files=["copy-v2.docx"])
        pf.mark_overdue(task.id)  # a system action ({event21}) is not a comment
        [notice] = await tg.wait_for_messages(1, chat_id=ANNA_TG, timeout=20)
        text = notice.plain_text
        assert "#1001" in text and "Boris writes:" in text and "Copy is ready & reviewed" in text, text
        assert "x()" not in text and "copy-v2.docx" in text
        [feed] = await tg.wait_for_messages(1, chat_id=FEED, timeout=20)
        assert "Copy is ready" in feed.plain_text

        # Anna replies to the notice: a comment on that task, authored by her.
        _, answer = await reply(tg, notice, "Thanks, publishing today", user=ANNA_TG)
        assert "Comment added" in answer.plain_text, answer.plain_text
        [mine] = [c for c in comments(pf, task.id) if "publishing" in c.description]
        assert mine.by == ANNA
        [told] = await tg.wait_for_messages(1, chat_id=BORIS_TG, timeout=20)
        assert "Anna Smirnova writes:" in told.plain_text and "Thanks, publishing today" in told.plain_text
        await tg.wait_for_messages(2, chat_id=FEED, timeout=20)
        await wait_polls(pf, 2)
        assert len(tg.messages_to(BORIS_TG)) == 1, "Boris is not told about his own comment"
        anna = [m.plain_text for m in tg.messages_to(ANNA_TG)]
        assert not any("publishing" in m and "writes:" in m for m in anna), "Anna is not told about her own comment"
        assert tg.messages_to(TEAM) == [], "the team route did not ask for comments"
    finally:
        code = await daemon.stop()
    assert code == 0
