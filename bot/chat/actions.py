"""Writing to Planfix from Telegram: who may act, what is sent, and each write exactly once."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import TypeVar

import structlog

from bot.chat.access import Viewer, may_see
from bot.chat.context import ChatContext, OverAllowance, PlanfixUnavailable
from bot.planfix.budget import BudgetPaused
from bot.planfix.errors import PlanfixError, describe
from bot.planfix.models import Action, PersonRef, Status, Task
from bot.watch.diff import Snapshot
from state.actions import DONE, FAILED, INTENT, Actions, Write

log = structlog.get_logger(__name__)

T = TypeVar("T")

STATUS_SETS_KEPT = 3600.0  # seconds a process's status list is reused before it is read again
RECOVER_WITHIN = timedelta(hours=1)  # intents older than this at start-up are not settled any more
LOOK_BACK = 20  # latest actions of a task read to find a write whose answer was lost
# Codes after which a write was certainly not made, but the same write by the API user could be: `owner` refused.
_NOT_ABOUT_OWNER = frozenset({"0007", "0011", "3001", "3008", "3014", "0020"})


class Outcome(StrEnum):
    DONE = "done"  # written (now or before: `again`)
    NOT_FOUND = "not_found"  # no such task, or not the person's to see: the same answer, nothing revealed
    REFUSED = "refused"  # Planfix said no (a transition the process forbids, no rights…): nothing written
    UNAVAILABLE = "unavailable"  # Planfix could not be asked: nothing written
    UNCERTAIN = "uncertain"  # asked, but no answer: maybe written; the intent stays to be settled later


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    write: Write | None = None
    reason: str = ""  # Planfix's words for REFUSED
    again: bool = False  # a redelivered update whose write was already made


@dataclass(frozen=True)
class Author:
    """Who Planfix records as the author: `owner` (the person's own Planfix user), or None = the API user, in which
    case the text starts with the person's name."""

    owner: int | None
    name_in_text: bool


def choose_author(viewer: Viewer, *, post_as_user: bool, owner_refused: bool) -> Author:
    """The person's own Planfix user where allowed; otherwise (not linked: an admin; turned off; refused before)
    the API user with the person's name in the text."""
    if viewer.planfix_id is not None and post_as_user and not owner_refused:
        return Author(viewer.planfix_id, name_in_text=False)
    return Author(None, name_in_text=True)


def comment_html(text: str, *, by: str | None) -> str:
    """The comment as Planfix HTML: the text escaped, line breaks kept, and `by` (a name) in front when the API
    user is the author."""
    body = html.escape(text.strip(), quote=False).replace("\n", "<br>")
    return f"<b>{html.escape(by, quote=False)}</b>: {body}" if by else body


def status_note(status_name: str, *, by: str | None) -> str:
    """The comment that carries a status change made from Telegram."""
    text = f"→ {status_name} (Telegram)"
    return comment_html(text, by=by)


@dataclass(frozen=True)
class Target:
    """What a write needs to know about its task: ids, current status and process, who takes part (by name)."""

    task_id: int
    general: int
    status: int
    status_set: int | None
    participants: frozenset[int]
    names: dict[int, str]

    @classmethod
    def from_task(cls, task: Task) -> Target:
        people: list[PersonRef] = [*([task.owner] if task.owner else []), *task.workers, *task.members,
                                   *task.auditors]
        return cls(task.id, task.general, task.status, task.status_set, task.participant_ids(),
                   {p.id: p.name for p in people if p.name})

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> Target:
        return cls(snap.task_id, snap.general, snap.status, None, frozenset(snap.participants),
                   {int(k): v for k, v in snap.names.items() if k.lstrip("-").isdigit()})

    def person_name(self, planfix_id: int | None) -> str | None:
        """The Planfix name of a person taking part in the task, if known."""
        return self.names.get(planfix_id) if planfix_id is not None else None


def planfix_reason(exc: PlanfixError) -> str:
    """Planfix's own words for a refusal if it gave any, else the meaning of its code."""
    message = exc.message
    described = f"({describe(exc.code)})" if exc.code else ""
    if described and f"{described}: " in message:
        return message.split(f"{described}: ", 1)[1].strip()
    return describe(exc.code) if exc.code else message


def text_of(description: str) -> str:
    """Planfix HTML back to text: line breaks kept, tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<br\s*/?>", "\n", description))).strip()


def _plain(description: str) -> str:
    """Planfix HTML reduced to comparable text (our own writes are found again by it)."""
    return " ".join(text_of(description).split())


def is_our_write(action: Action, write: Write, known: set[int]) -> bool:
    """Whether `action` (from the task's latest actions) is the write recorded as an intent: same text, same new
    status, not older than the intent (minute resolution), not already claimed by another write."""
    if action.id in known or action.task_id != write.task_id:
        return False
    if write.created_at is not None and action.at < write.created_at - timedelta(minutes=2):
        return False
    new_status = action.status_change.new if action.status_change else None
    if write.new_status is not None and new_status != write.new_status:
        return False
    return _plain(action.description) == _plain(write.description)


class ActionDesk:
    """The shell around the decisions above: Planfix calls, the intent/result records, status lists.

    Every write is keyed by the Telegram update that asked for it. The intent is stored before Planfix is called and
    the result after, so a redelivered update never writes twice; an intent left without a result (the process died
    between Planfix's answer and our commit, or Planfix did not answer) is settled by looking for our action among
    the task's latest actions before anything is sent again. The action ids we created let the feed tell our own
    changes: the person who made one is not notified of it (bot/app.py)."""

    def __init__(self, ctx: ChatContext, actions: Actions) -> None:
        self.ctx = ctx
        self.actions = actions
        self.owner_refused = False  # Planfix refused `owner` once: the API user writes from then on
        self._sets: dict[int, tuple[float, list[Status]]] = {}
        self._busy: dict[str, asyncio.Lock] = {}  # an update handled twice at once waits for the first handling

    @property
    def enabled(self) -> bool:
        return self.ctx.settings.actions.enabled

    # ── the one place writes reach Planfix ───────────────────────────────────────────────────────────────────

    async def _write_to_planfix(self, write: Write) -> int:
        """action.add for a person who is waiting, by the same path as /task (ChatContext.ask: the budget's
        interactive priority, the interactive timeout), out of that person's allowance of Planfix requests."""
        return await self._ask(
            lambda: self.ctx.client.action_add(task_id=write.task_id, description=write.description,
                                               new_status=write.new_status, owner=write.owner),
            what="action.add", user=write.user_id,
        )

    async def _ask(self, call: Callable[[], Awaitable[T]], *, what: str, user: int | None = None) -> T:
        """ChatContext.ask, with the failure it wrapped handed back: a write must tell "Planfix refused" (nothing
        written) from "no answer" (maybe written)."""
        try:
            return await self.ctx.ask(call, what=what, user=user)
        except OverAllowance:
            raise  # nothing was sent
        except PlanfixUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, (PlanfixError, TimeoutError, OSError)):
                raise cause from None
            raise TimeoutError(str(exc)) from exc

    # ── reads ────────────────────────────────────────────────────────────────────────────────────────────────

    async def visible_task(self, viewer: Viewer, number: int) -> Target | None:
        """The task if the viewer may see it, else None (also for a task that does not exist). Like /task: from the
        stored snapshot when the feed is fresh and it shows the viewer taking part (no Planfix request), else from
        the live card. Raises PlanfixError / TimeoutError / OSError when Planfix could not be asked."""
        if number <= 0:
            return None
        if self.ctx.fresh():
            data = self.ctx.tasks.by_general(number)
            if data is not None:
                snap = Snapshot.from_data(data)
                if may_see(viewer, snap):
                    return Target.from_snapshot(snap)
        try:
            task = await self._ask(lambda: self.ctx.client.task_get(general=number), what="task.get")
        except PlanfixError as exc:
            if exc.code in ("3001", "3008", "0104"):
                return None
            raise
        return Target.from_task(task) if may_see(viewer, task) else None

    async def statuses_of(self, task: Target) -> list[Status]:
        """The statuses of the task's process (cached for an hour), Planfix's order."""
        set_id = task.status_set
        if set_id is None:
            known = self.ctx.statuses().get(task.status)
            set_id = known.set_id if known else None
        if set_id is None:
            return []
        loop = asyncio.get_running_loop()
        cached = self._sets.get(set_id)
        if cached is not None and loop.time() - cached[0] < STATUS_SETS_KEPT:
            return cached[1]
        statuses = await self._ask(lambda: self.ctx.client.status_set(set_id), what="taskStatus.getListOfSet")
        self._sets[set_id] = (loop.time(), statuses)
        return statuses

    # ── writes ───────────────────────────────────────────────────────────────────────────────────────────────

    async def act(self, *, key: str, viewer: Viewer, telegram_name: str, chat_id: int, number: int,
                  text: str = "", new_status: int | None = None, status_name: str = "") -> Result:
        """Comment on task `number` (and/or change its status) for this viewer, once per update `key`."""
        lock = self._busy.setdefault(key, asyncio.Lock())  # kept while in use; dropped after (see finally)
        try:
            async with lock:
                return await self._act(key=key, viewer=viewer, telegram_name=telegram_name, chat_id=chat_id,
                                       number=number, text=text, new_status=new_status, status_name=status_name)
        finally:
            if not lock.locked() and self._busy.get(key) is lock:
                del self._busy[key]

    async def _act(self, *, key: str, viewer: Viewer, telegram_name: str, chat_id: int, number: int, text: str,
                   new_status: int | None, status_name: str) -> Result:
        known = self.actions.get(key)
        if known is not None:
            return await self._again(known)
        try:
            task = await self.visible_task(viewer, number)
        except (PlanfixError, TimeoutError, OSError, BudgetPaused) as exc:
            log.warning("chat.action_unavailable", task=number, error=str(exc) or type(exc).__name__)
            return Result(Outcome.UNAVAILABLE)
        if task is None:
            return Result(Outcome.NOT_FOUND)
        name = task.person_name(viewer.planfix_id) or telegram_name
        author = choose_author(viewer, post_as_user=self.ctx.settings.actions.post_as_user,
                               owner_refused=self.owner_refused)
        write = Write(
            key=key, chat_id=chat_id, user_id=viewer.telegram_id, planfix_id=viewer.planfix_id, actor_name=name,
            task_id=task.task_id, general=task.general, owner=author.owner, new_status=new_status,
            description=self._description(text, status_name, new_status, name if author.name_in_text else None),
        )
        write = self.actions.begin(write, self.ctx.clock())
        if write.state != INTENT or write.action_id is not None:
            return await self._again(write)
        return await self._post(write)

    @staticmethod
    def _description(text: str, status_name: str, new_status: int | None, by: str | None) -> str:
        if new_status is not None and not text:
            return status_note(status_name, by=by)
        return comment_html(text, by=by)

    async def _again(self, write: Write) -> Result:
        """A redelivered update: answer as before, or settle a write whose answer was lost, never write twice."""
        if write.state == DONE:
            return Result(Outcome.DONE, write, again=True)
        if write.state == FAILED:
            return Result(Outcome.REFUSED, write, reason=write.error or "")
        settled = await self.settle(write)
        if settled is not None:
            return settled
        return await self._post(write)

    async def settle(self, write: Write) -> Result | None:
        """An intent without a result: if the task's latest actions hold our write, record it (DONE); None when
        they do not (so nothing was written); UNCERTAIN when Planfix cannot be asked."""
        try:
            latest = await self._ask(lambda: self.ctx.client.recent_actions(write.task_id, LOOK_BACK),
                                     what="action.getList")
        except (PlanfixError, TimeoutError, OSError, BudgetPaused) as exc:
            if isinstance(exc, PlanfixError) and exc.code in ("3001", "3008"):
                self.actions.fail(write.key, "task gone", self.ctx.clock())
                return Result(Outcome.NOT_FOUND, write)
            return Result(Outcome.UNCERTAIN, write)
        claimed = self.actions.recorded_action_ids(write.task_id)
        ours = next((a for a in reversed(latest) if is_our_write(a, write, claimed)), None)
        if ours is None:
            return None
        self.actions.finish(write.key, ours.id, self.ctx.clock())
        log.info("chat.action_settled", key=write.key, task=write.general, action_id=ours.id)
        return Result(Outcome.DONE, replace(write, state=DONE, action_id=ours.id), again=True)

    async def _post(self, write: Write) -> Result:
        try:
            action_id = await self._write_to_planfix(write)
        except PlanfixError as exc:
            if exc.code is None:  # no answer (timeout, connection, garbled): maybe written
                return self._uncertain(write, exc)
            if write.owner is not None and exc.code not in _NOT_ABOUT_OWNER:
                retried = await self._as_api_user(write, exc)
                if retried is not None:
                    return retried
            reason = planfix_reason(exc)
            self.actions.fail(write.key, reason, self.ctx.clock())
            log.info("chat.action_refused", key=write.key, task=write.general, code=exc.code, reason=reason)
            outcome = Outcome.NOT_FOUND if exc.code in ("3001", "3008") else Outcome.REFUSED
            return Result(outcome, write, reason=reason)
        except (BudgetPaused, OverAllowance):  # nothing was sent: the person may simply try again
            self.actions.forget(write.key)
            return Result(Outcome.UNAVAILABLE, write)
        except (TimeoutError, OSError) as exc:
            return self._uncertain(write, exc)
        self.actions.finish(write.key, action_id, self.ctx.clock())
        log.info("chat.action_done", key=write.key, task=write.general, action_id=action_id,
                 status=write.new_status, by=write.user_id, owner=write.owner)
        return Result(Outcome.DONE, replace(write, state=DONE, action_id=action_id))

    async def _as_api_user(self, write: Write, first: PlanfixError) -> Result | None:
        """`owner` may have been what Planfix refused: the same write by the API user, the name in the text."""
        text = text_of(write.description)
        status_name = ""
        if write.new_status is not None and text.startswith("→ "):
            status_name = text[2:].removesuffix(" (Telegram)")
        description = self._description("" if status_name else text, status_name, write.new_status,
                                        write.actor_name)
        self.actions.revise(write.key, description=description, owner=None)
        second = replace(write, description=description, owner=None)
        try:
            action_id = await self._write_to_planfix(second)
        except PlanfixError as exc:
            if exc.code is None:
                return self._uncertain(second, exc)
            return None  # refused again: not about `owner`; the first reason stands
        except (TimeoutError, OSError) as exc:
            return self._uncertain(second, exc)
        self.owner_refused = True
        log.warning("chat.owner_refused", code=first.code, reason=planfix_reason(first),
                    hint="comments are authored by the API user, with the person's name in the text")
        self.actions.finish(write.key, action_id, self.ctx.clock())
        return Result(Outcome.DONE, replace(second, state=DONE, action_id=action_id))

    def _uncertain(self, write: Write, exc: BaseException) -> Result:
        log.warning("chat.action_uncertain", key=write.key, task=write.general, error=str(exc) or type(exc).__name__)
        return Result(Outcome.UNCERTAIN, write)

    async def recover(self) -> list[Result]:
        """At start-up: settle the intents a previous process left without a result. Found → recorded (the
        person is told); not found → nothing was written, the person is told with their text. Returns what
        was decided, for the caller to tell the people."""
        results: list[Result] = []
        for pending in self.actions.unfinished(self.ctx.clock() - RECOVER_WITHIN):
            lock = self._busy.setdefault(pending.key, asyncio.Lock())
            async with lock:  # Telegram may be redelivering the same update right now: one of the two handles it
                write = self.actions.get(pending.key)
                if write is None or write.state != INTENT:
                    continue
                settled = await self.settle(write)
            if settled is None:
                self.actions.fail(write.key, "not saved: the bot restarted", self.ctx.clock())
                results.append(Result(Outcome.UNAVAILABLE, write))
            elif settled.outcome != Outcome.UNCERTAIN:
                results.append(settled)
        return results

