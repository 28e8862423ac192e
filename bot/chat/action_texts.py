"""What the bot says about writing to Planfix from Telegram (issue 13), in Russian and English (Telegram HTML)."""

from __future__ import annotations

ACTION_TEXTS: dict[str, dict[str, str]] = {
    "ru": {
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
    },
    "en": {
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
    },
}


def action_texts(lang: str) -> dict[str, str]:
    return ACTION_TEXTS.get(lang, ACTION_TEXTS["en"])
