"""Every text the bot says, in Russian and English, with CLDR plural rules as gettext plural expressions."""

from __future__ import annotations

import gettext
from collections.abc import Callable, Mapping
from types import MappingProxyType

LANGUAGES = ("ru", "en")
FALLBACK = "en"

# gettext's Plural-Forms expressions (the ones GNU gettext ships for these languages; they are CLDR's one/few/many
# for Russian and one/other for English), compiled by the stdlib exactly as GNUTranslations compiles a .mo header.
PLURAL_FORMS = {
    "ru": (3, "n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2"),
    "en": (2, "n != 1"),
}
_PLURAL: dict[str, Callable[[int], int]] = {lang: gettext.c2py(expr) for lang, (_, expr) in PLURAL_FORMS.items()}

# Values are Telegram HTML: anything interpolated into them must be escaped by the caller (bot.notify.markup.escape).
# A tuple is a plural entry: its forms in the order of the language's plural expression.
CATALOGUE: dict[str, dict[str, str | tuple[str, ...]]] = {
    "ru": {
        # ── chat commands ──
        "refused": "Извините, этот бот доступен только участникам команды. Ваш Telegram id: {user_id}.",
        "start": "Привет! Я сообщаю об изменениях задач в ПланФиксе.\nID этого чата: <code>{chat_id}</code>\n\n{help}",
        "help": (
            "Команды:\n"
            "/my — мои активные задачи\n"
            "/today — мои задачи со сроком сегодня\n"
            "/overdue — просроченные задачи\n"
            "/find &lt;слова&gt; — поиск задач по названию\n"
            "/task &lt;номер&gt; — карточка задачи\n"
            "/comment &lt;номер&gt; &lt;текст&gt; — комментарий в ПланФикс (или ответьте на сообщение о задаче)\n"
            "/follow &lt;номер&gt;, /unfollow &lt;номер&gt; — следить за задачей в этом чате\n"
            "/subscribe [проект] [status deadline overdue reminder comment] — события проекта (или всех) в этот чат\n"
            "/unsubscribe [проект] — отписать чат\n"
            "/subscriptions — подписки этого чата\n"
            "/mute &lt;30m|2h|1d&gt;, /unmute — отложить сообщения в этот чат\n"
            "/lang ru|en — язык чата\n"
            "/status — состояние бота (для администраторов)\n"
            "/help — эта справка"
        ),
        "task_usage": "Укажите номер задачи: /task 1234",
        "not_found": "Задача #{number} не найдена или недоступна вам.",
        "unavailable": "ПланФикс сейчас не отвечает. Попробуйте ещё раз через минуту.",
        "allowance_used": "Слишком много запросов к ПланФиксу подряд. Попробуйте ещё раз через минуту.",
        "from_copy": "Показана копия бота на {time}: запросы к ПланФиксу от вас слишком частые, через минуту можно снова.",
        "open": "Открыть в ПланФиксе",
        "refresh": "🔄 Обновить",
        "follow": "🔔 Следить",
        "unfollow": "🔕 Не следить",
        "snooze": "💤 Отложить на 1 ч",
        "status": "Статус",
        "importance": "Важность",
        "importance_HIGH": "срочная",
        "importance_AVERAGE": "обычная",
        "project": "Проект",
        "deadline": "Срок",
        "not_set": "не задан",
        "deadline_removed": "снят",
        "owner": "Постановщик",
        "assignees": "Исполнители",
        "auditors": "Аудиторы",
        "group": "группа",
        "closed": "завершена",
        "recent": "Последние действия:",
        "no_actions": "Действий пока нет.",
        "history_unavailable": "История сейчас недоступна — нажмите «Обновить» позже.",
        "act_created": "создал(а) задачу",
        "act_overdue": "задача просрочена",
        "act_changed": "изменил(а) задачу",
        "act_status": "статус: {old} → {new}",
        "act_deadline": "срок: {old} → {new}",
        "refreshed": "Обновлено",
        "list_my": "📋 <b>Мои активные задачи</b>",
        "list_today": "📅 <b>Мои задачи со сроком сегодня</b>",
        "list_overdue": "⏰ <b>Мои просроченные задачи</b>",
        "list_overdue_all": "⏰ <b>Просроченные задачи (все)</b>",
        "list_find": "🔎 <b>Найдено по «{query}»</b>",
        "list_count": "{n} шт., стр. {page} из {pages}",
        "empty_my": "У вас нет активных задач.",
        "empty_today": "Сегодня сроков нет.",
        "empty_overdue": "Просроченных задач нет.",
        "empty_find": "Ничего не найдено по «{query}».",
        "find_usage": "Напишите слова из названия: /find отчёт",
        "not_linked": "Ваш Telegram не связан с пользователем ПланФикса ([[users]] в настройках), поэтому списка «моих» задач нет.",
        "list_foreign": "Этот список запросил другой человек — отправьте команду сами.",
        "expired": "Кнопка устарела — отправьте команду ещё раз.",
        "stale": "⚠️ Данные ПланФикса на {time}; новые задачи могут не попасть в список.",
        "follow_usage": "Укажите номер задачи: /follow 1234",
        "unfollow_usage": "Укажите номер задачи: /unfollow 1234",
        "following": "🔔 Этот чат следит за задачей #{number}.",
        "already_following": "Этот чат уже следит за задачей #{number}.",
        "unfollowed": "🔕 Этот чат больше не следит за задачей #{number}.",
        "not_following": "Этот чат не следит за задачей #{number}.",
        "subscribe_usage": "Пример: /subscribe — все проекты; /subscribe 12 — проект 12; /subscribe Сайт status overdue",
        "subscribed": "✅ Этот чат подписан на {what}: {kinds}.",
        "all_projects": "все проекты",
        "project_named": "проект «{name}»",
        "project_id": "проект {id}",
        "unknown_project": "Проект «{name}» не найден. Укажите его номер: /subscribe 12",
        "unsubscribed": "Подписки удалены: {n}.",
        "not_subscribed": "У этого чата нет такой подписки.",
        "subs_header": "<b>Подписки этого чата</b>",
        "subs_none": "Подписок нет.",
        "subs_follows": "<b>Задачи, за которыми следит чат</b>",
        "subs_inactive": " (не действует: её автор больше не пользователь бота)",
        "subs_muted": "🔕 Сообщения отложены до {until}.",
        "subs_lang": "Язык чата: {lang}.",
        "not_chat_admin": "Менять это в группе могут только её администраторы.",
        "maker_suspended": (
            "⏸ Подписки и слежение, которые в этой группе оформил {who}, приостановлены: {why}. "
            "Администратор группы может подписать её заново (/subscribe, /follow)."
        ),
        "maker_left": "он(а) больше не в группе",
        "maker_not_admin": "он(а) больше не администратор группы",
        "maker_unlinked": "он(а) больше не пользователь бота",
        "subs_suspended": " (приостановлена: её автор больше не администратор этой группы)",
        "mute_usage": "Укажите срок: /mute 30m, /mute 2h, /mute 1d (не больше 30 дней).",
        "muted": "🔕 Сообщения в этот чат отложены до {until}. Ничего не потеряется; /unmute — вернуть сразу.",
        "unmuted": "🔔 Сообщения снова приходят сразу; отложенные уже в пути.",
        "not_muted": "Этот чат не отключён.",
        "lang_usage": "Язык чата: /lang ru или /lang en.",
        "lang_set": "Готово: язык этого чата — русский.",
        "snoozed": "💤 Напоминания и просрочка по #{number} отложены до {until}.",
        "admins_only": "Эта команда только для администраторов бота.",
        "status_title": "🩺 <b>planfix-bot {version}</b>, работает {uptime}",
        "status_poll": "Последний успешный опрос: {when} ({ago} назад)",
        "status_no_poll": "Успешных опросов ещё не было.",
        "handler_failed": "Что-то пошло не так. Ошибка записана в журнал; попробуйте ещё раз чуть позже.",
        "status_stale": "⚠️ Данные устарели: успешного опроса не было дольше {allowed}",
        "status_first_start": "⏳ Первый запуск: запомнено {done} из {total} задач; уведомления начнутся после него",
        "status_catch_up": "⏳ Догоняем ленту после перерыва: прочитано {done} действий, лента прочитана до {reached} "
        "(отставание {behind})",
        "status_budget": "Запросы к ПланФиксу сегодня: {used} из {daily} (резерв {reserve}), сброс {reset}",
        "status_paused": "⏸ Фоновые запросы приостановлены до {until}",
        "status_outbox": "Очередь: {pending} сообщ.; самое старое ждёт {oldest}",
        "status_outbox_empty": "Очередь пуста.",
        "status_sent": "Отправлено {sent}, не удалось {failed}",
        "status_set_aside": "Задач отложено (ПланФикс их не показывает: нет доступа, битая карточка): {count}, напр. {ids}",
        "status_problem": "⚠️ {problem}",
        "status_inactive": "<b>Неактивные чаты</b>:",
        "status_no_inactive": "Неактивных чатов нет.",
        "commands_my": "мои активные задачи",
        "commands_today": "мои сроки сегодня",
        "commands_overdue": "просроченные задачи",
        "commands_find": "поиск задач по названию",
        "commands_task": "карточка задачи по номеру",
        "commands_follow": "следить за задачей",
        "commands_unfollow": "перестать следить",
        "commands_subscribe": "подписать чат на проект",
        "commands_unsubscribe": "отписать чат",
        "commands_subscriptions": "подписки чата",
        "commands_mute": "отложить сообщения",
        "commands_unmute": "вернуть сообщения",
        "commands_lang": "язык чата",
        "commands_status": "состояние бота",
        "commands_help": "справка",
        # ── writing to Planfix from Telegram ──
        "status_button": "Статус ▸",
        "status_close": "✖ Закрыть",
        "comment_usage": "Напишите: /comment &lt;номер&gt; &lt;текст&gt; — или ответьте текстом на сообщение о задаче.",
        "comment_added": "💬 Комментарий добавлен к задаче #{number}.",
        "status_changed": "✅ Статус задачи #{number}: {status}",
        "status_line": "✅ Статус → <b>{status}</b> ({name})",
        "choose_status": "Выберите новый статус",
        "no_other_status": "Других статусов в процессе этой задачи нет.",
        "only_text": "Комментарием может стать только текст.",
        "which_task": "Это сообщение о нескольких задачах. Начните ответ с номера (#1234 текст) или напишите: "
        "/comment &lt;номер&gt; &lt;текст&gt;.",
        "disabled": "Изменения в ПланФиксе из Telegram выключены (actions.enabled в настройках бота).",
        "not_saved": "Комментарий не добавлен: {reason}",
        "status_refused": "ПланФикс отказал: {reason}",
        "uncertain": "ПланФикс не ответил — возможно, комментарий не сохранён. Проверьте задачу, прежде чем отправлять снова.",
        "your_text": "Ваш текст:",
        "reason_not_found": "задача #{number} не найдена или недоступна вам",
        "reason_unavailable": "ПланФикс сейчас не отвечает, попробуйте через минуту",
        "via": "{name} (из Telegram)",
        # ── notifications ──
        "changed_by": "Изменил(а)",
        "overdue": "Просрочена (срок был {deadline})",
        "overdue_no_deadline": "Просрочена",
        "overdue_flag": "просрочена",
        "more": "и ещё {n}",
        "untitled": "(без названия)",
        "too_long": "Сообщение не поместилось в Telegram — подробности в задаче:",
        "reminder": "Срок через {lead}: {deadline}",
        "assigned": "Новый исполнитель",
        "reminder_soon": "Скоро срок: {deadline}",
        "earlier": "…и ещё {n} {changes} раньше",
        "digest": "Пока бот не работал: {n} {changes}",
        "burst": "Сразу {n} {changes}",
        "due_in": "через {n} {unit}",
        "due_late": "просрочена на {n} {unit}",
        "daily": "Задачи на {day}: просрочено {overdue}, срок сегодня {today}",
        "daily_overdue": "Просрочены",
        "daily_today": "Срок сегодня",
        "comment": "Комментарий",
        "comment_by": "{name} пишет:",
        "files": "Файлы",
        # ── plural forms: a tuple, one form per plural category of the language (PLURAL_FORMS) ──
        "changes": ("изменение", "изменения", "изменений"),
        "unit_m": ("минуту", "минуты", "минут"),
        "unit_h": ("час", "часа", "часов"),
        "unit_d": ("день", "дня", "дней"),
        "unit_w": ("неделю", "недели", "недель"),
        # ── abbreviated units (/status), the same for any number ──
        "abbr_s": "с",
        "abbr_m": "мин",
        "abbr_h": "ч",
        "abbr_d": "д",
    },
    "en": {
        # ── chat commands ──
        "refused": "Sorry, this bot is for team members only. Your Telegram id: {user_id}.",
        "start": "Hello! I report task changes from Planfix.\nThis chat's id: <code>{chat_id}</code>\n\n{help}",
        "help": (
            "Commands:\n"
            "/my — my active tasks\n"
            "/today — my tasks due today\n"
            "/overdue — overdue tasks\n"
            "/find &lt;words&gt; — tasks whose title matches\n"
            "/task &lt;number&gt; — a task card\n"
            "/comment &lt;number&gt; &lt;text&gt; — a comment in Planfix (or reply to a message about the task)\n"
            "/follow &lt;number&gt;, /unfollow &lt;number&gt; — follow a task in this chat\n"
            "/subscribe [project] [status deadline overdue reminder comment] — a project's (or every) event in this chat\n"
            "/unsubscribe [project] — remove this chat's subscriptions\n"
            "/subscriptions — this chat's subscriptions\n"
            "/mute &lt;30m|2h|1d&gt;, /unmute — hold this chat's messages\n"
            "/lang ru|en — this chat's language\n"
            "/status — the bot's health (admins)\n"
            "/help — this help"
        ),
        "task_usage": "Give a task number: /task 1234",
        "not_found": "Task #{number} was not found or is not visible to you.",
        "unavailable": "Planfix is not answering right now. Please try again in a minute.",
        "allowance_used": "Too many Planfix requests in a row. Please try again in a minute.",
        "from_copy": "The bot's copy as of {time}: you asked Planfix very often; it can be asked again in a minute.",
        "open": "Open in Planfix",
        "refresh": "🔄 Refresh",
        "follow": "🔔 Follow this task",
        "unfollow": "🔕 Unfollow",
        "snooze": "💤 Snooze 1 h",
        "status": "Status",
        "importance": "Importance",
        "importance_HIGH": "high",
        "importance_AVERAGE": "normal",
        "project": "Project",
        "deadline": "Deadline",
        "not_set": "not set",
        "deadline_removed": "removed",
        "owner": "Owner",
        "assignees": "Assignees",
        "auditors": "Auditors",
        "group": "group",
        "closed": "closed",
        "recent": "Latest actions:",
        "no_actions": "No actions yet.",
        "history_unavailable": "The history is not available right now — press Refresh later.",
        "act_created": "created the task",
        "act_overdue": "the task became overdue",
        "act_changed": "changed the task",
        "act_status": "status: {old} → {new}",
        "act_deadline": "deadline: {old} → {new}",
        "refreshed": "Refreshed",
        "list_my": "📋 <b>My active tasks</b>",
        "list_today": "📅 <b>My tasks due today</b>",
        "list_overdue": "⏰ <b>My overdue tasks</b>",
        "list_overdue_all": "⏰ <b>Overdue tasks (everyone's)</b>",
        "list_find": "🔎 <b>Found for “{query}”</b>",
        "list_count": "{n} in all, page {page} of {pages}",
        "empty_my": "You have no active tasks.",
        "empty_today": "Nothing is due today.",
        "empty_overdue": "No overdue tasks.",
        "empty_find": "Nothing found for “{query}”.",
        "find_usage": "Give some words of the title: /find report",
        "not_linked": "Your Telegram account is not linked to a Planfix user ([[users]] in the config), so there is no “my” list.",
        "list_foreign": "Someone else asked for this list — send the command yourself.",
        "expired": "This button is out of date — send the command again.",
        "stale": "⚠️ Planfix data as of {time}; newer tasks may be missing.",
        "follow_usage": "Give a task number: /follow 1234",
        "unfollow_usage": "Give a task number: /unfollow 1234",
        "following": "🔔 This chat now follows task #{number}.",
        "already_following": "This chat already follows task #{number}.",
        "unfollowed": "🔕 This chat no longer follows task #{number}.",
        "not_following": "This chat does not follow task #{number}.",
        "subscribe_usage": "E.g. /subscribe — every project; /subscribe 12 — project 12; /subscribe Website status overdue",
        "subscribed": "✅ This chat is subscribed to {what}: {kinds}.",
        "all_projects": "every project",
        "project_named": "project “{name}”",
        "project_id": "project {id}",
        "unknown_project": "No project “{name}” found. Give its number: /subscribe 12",
        "unsubscribed": "Subscriptions removed: {n}.",
        "not_subscribed": "This chat has no such subscription.",
        "subs_header": "<b>This chat's subscriptions</b>",
        "subs_none": "No subscriptions.",
        "subs_follows": "<b>Tasks this chat follows</b>",
        "subs_inactive": " (not in effect: its creator no longer uses the bot)",
        "subs_muted": "🔕 Messages are held until {until}.",
        "subs_lang": "This chat's language: {lang}.",
        "not_chat_admin": "Only the group's administrators may change this.",
        "maker_suspended": (
            "⏸ The subscriptions and follows {who} made in this group are paused: {why}. "
            "A group administrator can set them up again (/subscribe, /follow)."
        ),
        "maker_left": "they are no longer in the group",
        "maker_not_admin": "they are no longer an administrator of the group",
        "maker_unlinked": "they no longer use the bot",
        "subs_suspended": " (paused: its creator is no longer an administrator of this group)",
        "mute_usage": "Give a duration: /mute 30m, /mute 2h, /mute 1d (at most 30 days).",
        "muted": "🔕 Messages to this chat are held until {until}. Nothing is lost; /unmute ends it now.",
        "unmuted": "🔔 Messages arrive at once again; the held ones are on their way.",
        "not_muted": "This chat is not muted.",
        "lang_usage": "This chat's language: /lang ru or /lang en.",
        "lang_set": "Done: this chat's language is English.",
        "snoozed": "💤 Reminders and overdue notices of #{number} wait until {until}.",
        "admins_only": "This command is for the bot's admins only.",
        "status_title": "🩺 <b>planfix-bot {version}</b>, up {uptime}",
        "status_poll": "Last successful poll: {when} ({ago} ago)",
        "status_no_poll": "No successful poll yet.",
        "handler_failed": "Something went wrong. It has been logged; please try again a little later.",
        "status_stale": "⚠️ Stale: no successful poll for longer than {allowed}",
        "status_first_start": "⏳ First start: {done} of {total} tasks remembered; notifications begin when it is done",
        "status_catch_up": "⏳ Catching up after downtime: {done} actions read, feed read up to {reached} "
        "({behind} behind)",
        "status_budget": "Planfix requests today: {used} of {daily} (reserve {reserve}), resets {reset}",
        "status_paused": "⏸ Background requests paused until {until}",
        "status_outbox": "Outbox: {pending} waiting; the oldest for {oldest}",
        "status_outbox_empty": "Outbox: empty.",
        "status_sent": "Sent {sent}, given up {failed}",
        "status_set_aside": "Tasks set aside (Planfix does not show them: no access, a malformed card): {count}, e.g. {ids}",
        "status_problem": "⚠️ {problem}",
        "status_inactive": "<b>Inactive chats</b>:",
        "status_no_inactive": "No inactive chats.",
        "commands_my": "my active tasks",
        "commands_today": "my tasks due today",
        "commands_overdue": "overdue tasks",
        "commands_find": "find tasks by title",
        "commands_task": "a task card by number",
        "commands_follow": "follow a task",
        "commands_unfollow": "stop following a task",
        "commands_subscribe": "subscribe this chat to a project",
        "commands_unsubscribe": "unsubscribe this chat",
        "commands_subscriptions": "this chat's subscriptions",
        "commands_mute": "hold messages for a while",
        "commands_unmute": "stop holding messages",
        "commands_lang": "this chat's language",
        "commands_status": "the bot's health",
        "commands_help": "help",
        # ── writing to Planfix from Telegram ──
        "status_button": "Status ▸",
        "status_close": "✖ Close",
        "comment_usage": "Send /comment &lt;number&gt; &lt;text&gt; — or reply with text to a message about the task.",
        "comment_added": "💬 Comment added to task #{number}.",
        "status_changed": "✅ Task #{number} is now: {status}",
        "status_line": "✅ Status → <b>{status}</b> ({name})",
        "choose_status": "Choose the new status",
        "no_other_status": "This task's process has no other status.",
        "only_text": "Only text can become a comment.",
        "which_task": "This message is not about one task. Start the reply with its number (#1234 text) or send "
        "/comment &lt;number&gt; &lt;text&gt;.",
        "disabled": "Changing Planfix from Telegram is turned off (actions.enabled in the bot's config).",
        "not_saved": "The comment was not added: {reason}",
        "status_refused": "Planfix refused: {reason}",
        "uncertain": "Planfix did not answer — the comment may not be saved. Check the task before sending it again.",
        "your_text": "Your text:",
        "reason_not_found": "task #{number} was not found or is not visible to you",
        "reason_unavailable": "Planfix is not answering right now, try again in a minute",
        "via": "{name} (from Telegram)",
        # ── notifications ──
        "changed_by": "Changed by",
        "overdue": "Overdue (was due {deadline})",
        "overdue_no_deadline": "Overdue",
        "overdue_flag": "overdue",
        "more": "and {n} more",
        "untitled": "(untitled)",
        "too_long": "The message didn't fit into Telegram — see the task:",
        "reminder": "Deadline in {lead}: {deadline}",
        "assigned": "New assignee",
        "reminder_soon": "Deadline soon: {deadline}",
        "earlier": "…and {n} earlier {changes}",
        "digest": "While the bot was away: {n} {changes}",
        "burst": "{n} {changes} at once",
        "due_in": "in {n} {unit}",
        "due_late": "{n} {unit} overdue",
        "daily": "Tasks for {day}: {overdue} overdue, {today} due today",
        "daily_overdue": "Overdue",
        "daily_today": "Due today",
        "comment": "Comment",
        "comment_by": "{name} writes:",
        "files": "Files",
        # ── plural forms: a tuple, one form per plural category of the language (PLURAL_FORMS) ──
        "changes": ("change", "changes"),
        "unit_m": ("minute", "minutes"),
        "unit_h": ("hour", "hours"),
        "unit_d": ("day", "days"),
        "unit_w": ("week", "weeks"),
        # ── abbreviated units (/status), the same for any number ──
        "abbr_s": "s",
        "abbr_m": "min",
        "abbr_h": "h",
        "abbr_d": "d",
    },
}

_TEXTS = {lang: MappingProxyType({k: v for k, v in entries.items() if isinstance(v, str)})
          for lang, entries in CATALOGUE.items()}


def language(code: str | None) -> str:
    """A language of the catalogue; an unknown one falls back to English rather than failing a message."""
    code = (code or "").lower()
    return code if code in CATALOGUE else FALLBACK


def texts(lang: str | None) -> Mapping[str, str]:
    """The plain (non-plural) texts of a language."""
    return _TEXTS[language(lang)]


def plural(lang: str | None, key: str, n: int) -> str:
    """The form of plural entry `key` for the number n: plural("ru", "unit_h", 22) == "часа"."""
    lang = language(lang)
    forms = CATALOGUE[lang][key]
    if not isinstance(forms, tuple):
        raise KeyError(f"{key} is not a plural entry")
    return forms[min(_PLURAL[lang](abs(n)), len(forms) - 1)]
