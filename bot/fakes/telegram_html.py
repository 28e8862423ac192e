"""Telegram's HTML parse mode and text limits as a pure function, ported from TDLib's `parse_html`."""

# A port of TDLib `td/telegram/MessageEntity.cpp` (`parse_html`, `decode_html_entity`), which is what the
# Bot API runs on `parse_mode=HTML`: same tag set, same attribute grammar, same error wording and byte offsets.
# One deliberate difference: TDLib keeps an `&` that starts no known entity as a literal `&` (so users see
# "&nbsp;" verbatim); this port rejects it, because a message that shows raw entities is a rendering bug.

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MESSAGE_LIMIT = 4096  # UTF-16 code units of the text after entity parsing

_SUPPORTED_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji", "span", "pre",
     "code", "blockquote"}
)
_SIMPLE_ENTITY = {
    "i": "italic", "em": "italic", "b": "bold", "strong": "bold", "s": "strikethrough", "strike": "strikethrough",
    "del": "strikethrough", "u": "underline", "ins": "underline", "tg-spoiler": "spoiler",
}
_NAMED = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"'}
_SPACE = frozenset(b" \t\r\n\v\f\x00")  # TDLib's is_space() counts NUL, which also marks the end of the text
_LINK_SCHEMES = frozenset({"http", "https", "tg", "ton", "tonsite", "ftp", "mailto"})
_TG_USER = re.compile(r"^tg://user\?id=(\d+)$", re.IGNORECASE)


class TelegramTextError(ValueError):
    """A text Telegram refuses; `description` is the Bot API's `description` field, word for word."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class TelegramHTMLError(TelegramTextError):
    """`parse_mode=HTML` markup Telegram can't parse; `reason` is TDLib's part after "can't parse entities: "."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Bad Request: can't parse entities: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Entity:
    """One MessageEntity as the Bot API returns it; offsets and lengths in UTF-16 code units."""

    type: str
    offset: int
    length: int
    url: str | None = None
    language: str | None = None
    custom_emoji_id: str | None = None
    user_id: int | None = None

    def to_api(self) -> dict[str, object]:
        data: dict[str, object] = {"type": self.type, "offset": self.offset, "length": self.length}
        if self.url is not None:
            data["url"] = self.url
        if self.language is not None:
            data["language"] = self.language
        if self.custom_emoji_id is not None:
            data["custom_emoji_id"] = self.custom_emoji_id
        if self.user_id is not None:
            data["user"] = {"id": self.user_id, "is_bot": False, "first_name": str(self.user_id)}
        return data


@dataclass(frozen=True)
class ParsedText:
    """What Telegram stores: the text with tags removed and entities decoded, plus the formatting entities."""

    text: str
    entities: tuple[Entity, ...] = field(default=())


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def parse_telegram_html(html: str) -> str:
    """The plain text Telegram would show for `html`, or TelegramHTMLError with Telegram's description."""
    return parse_telegram_entities(html).text


def check_message_text(text: str, parse_mode: str | None = None, *, limit: int = MESSAGE_LIMIT) -> ParsedText:
    """Validate a sendMessage/editMessageText `text` like the Bot API: markup first, then 1..limit UTF-16 units."""
    mode = (parse_mode or "").lower()
    if mode == "html":
        parsed = parse_telegram_entities(text)
    elif mode in ("", "none"):
        parsed = ParsedText(text)
    elif mode in ("markdown", "markdownv2"):
        parsed = ParsedText(text)  # not emulated: planfix-bot only speaks HTML
    else:
        raise TelegramTextError("Bad Request: unsupported parse_mode")
    if not parsed.text.strip():
        raise TelegramTextError("Bad Request: message text is empty")
    if utf16_len(parsed.text) > limit:
        raise TelegramTextError("Bad Request: message is too long")
    return parsed


def parse_telegram_entities(html: str) -> ParsedText:
    """Parse Telegram HTML into text + entities, raising TelegramHTMLError exactly where TDLib would."""
    return _Parser(html).run()


@dataclass
class _Open:
    tag: str
    argument: str
    utf16_offset: int
    result_pos: int


class _Parser:
    def __init__(self, html: str) -> None:
        self.data = html.encode("utf-8", "surrogatepass")
        self.out = bytearray()
        self.utf16 = 0
        self.stack: list[_Open] = []
        self.entities: list[Entity] = []

    def at(self, i: int) -> int:
        return self.data[i] if i < len(self.data) else 0

    def run(self) -> ParsedText:
        i = 0
        while i < len(self.data):
            c = self.data[i]
            if c == 0x26:  # '&'
                i = self._entity_in_text(i)
            elif c == 0x3C:  # '<'
                i = self._end_tag(i) if self.at(i + 1) == 0x2F else self._start_tag(i)
            else:
                if c & 0xC0 != 0x80:  # first byte of a character
                    self.utf16 += 2 if c >= 0xF0 else 1
                self.out.append(c)
                i += 1
        if self.stack:
            raise TelegramHTMLError(f'Can\'t find end tag corresponding to start tag "{self.stack[-1].tag}"')
        try:
            text = self.out.decode("utf-8")
        except UnicodeDecodeError:
            raise TelegramHTMLError(
                "Text contains invalid Unicode characters after decoding HTML entities, check for unmatched "
                "surrogate code units"
            ) from None
        # A language only survives on `pre`; TDLib clears it from a `code` that wasn't merged into one.
        entities = [Entity(e.type, e.offset, e.length) if e.type == "code" else e for e in self.entities]
        return ParsedText(text, tuple(sorted(entities, key=lambda e: (e.offset, -e.length))))

    def _entity_in_text(self, i: int) -> int:
        code, end = _decode_entity(self.data, i)
        self.utf16 += 2 if code > 0xFFFF else 1
        self.out += chr(code).encode("utf-8", "surrogatepass")
        return end

    def _start_tag(self, begin: int) -> int:
        i = begin + 1
        while self.at(i) not in _SPACE and self.at(i) != 0x3E:
            i += 1
        if self.at(i) == 0:
            raise TelegramHTMLError(f"Unclosed start tag at byte offset {begin}")
        tag = _lower(self.data[begin + 1 : i])
        if tag not in _SUPPORTED_TAGS:
            raise TelegramHTMLError(f'Unsupported start tag "{tag}" at byte offset {begin}')
        argument = ""
        while self.at(i) != 0x3E:
            i, name, value = self._attribute(i, tag, begin)
            if name is None:
                break
            argument = _argument(tag, name, value, argument)
        if tag == "span" and argument != "spoiler":
            raise TelegramHTMLError(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
        self.stack.append(_Open(tag, argument, self.utf16, len(self.out)))
        return i + 1

    def _attribute(self, i: int, tag: str, begin: int) -> tuple[int, str | None, str | None]:
        """One `name[=value]` of a start tag; name None when the tag ends here. Value None for a bare name."""
        while self.at(i) != 0 and self.at(i) in _SPACE:
            i += 1
        if self.at(i) == 0x3E:
            return i, None, None
        name_begin = i
        while self.at(i) not in _SPACE and self.at(i) not in b"=>/\"'":
            i += 1
        name = self.data[name_begin:i].decode("utf-8", "replace")
        if not name:
            raise TelegramHTMLError(f'Empty attribute name in the tag "{tag}" at byte offset {begin}')
        while self.at(i) != 0 and self.at(i) in _SPACE:
            i += 1
        if self.at(i) != 0x3D:  # '='
            if self.at(i) == 0:
                raise TelegramHTMLError(f'Unclosed start tag "{tag}" at byte offset {begin}')
            return i, name, None
        i += 1
        while self.at(i) != 0 and self.at(i) in _SPACE:
            i += 1
        if self.at(i) == 0:
            raise TelegramHTMLError(f'Unclosed start tag "{tag}" at byte offset {begin}')
        if self.at(i) not in b"'\"":
            token_begin = i
            while chr(self.at(i)).isascii() and (chr(self.at(i)).isalnum() or self.at(i) in b".-"):
                i += 1
            value = _lower(self.data[token_begin:i])
            if self.at(i) not in _SPACE and self.at(i) != 0x3E:
                raise TelegramHTMLError(f"Unexpected end of name token at byte offset {token_begin}")
        else:
            quote = self.at(i)
            i += 1
            raw = bytearray()
            while self.at(i) != quote and self.at(i) != 0:
                if self.at(i) == 0x26:
                    code, i = _decode_entity(self.data, i)
                    raw += chr(code).encode("utf-8", "surrogatepass")
                    continue
                raw.append(self.at(i))
                i += 1
            if self.at(i) == quote:
                i += 1
            value = raw.decode("utf-8", "replace")
        if self.at(i) == 0:
            raise TelegramHTMLError(f"Unclosed start tag at byte offset {begin}")
        return i, name, value

    def _end_tag(self, begin: int) -> int:
        if not self.stack:
            raise TelegramHTMLError(f"Unexpected end tag at byte offset {begin}")
        i = begin + 2
        while self.at(i) not in _SPACE and self.at(i) != 0x3E:
            i += 1
        end_name = _lower(self.data[begin + 2 : i])
        while self.at(i) in _SPACE and self.at(i) != 0:
            i += 1
        if self.at(i) != 0x3E:
            raise TelegramHTMLError(f"Unclosed end tag at byte offset {begin}")
        opened = self.stack[-1]
        if end_name and end_name != opened.tag:
            raise TelegramHTMLError(
                f'Unmatched end tag at byte offset {begin}, expected "</{opened.tag}>", found "</{end_name}>"'
            )
        if self.utf16 > opened.utf16_offset:
            self._add_entity(opened)
        self.stack.pop()
        return i + 1

    def _add_entity(self, opened: _Open) -> None:
        offset, length, tag, arg = opened.utf16_offset, self.utf16 - opened.utf16_offset, opened.tag, opened.argument
        last = self.entities[-1] if self.entities else None
        same_span = last is not None and last.offset == offset and last.length == length
        if tag in _SIMPLE_ENTITY or (tag == "span" and arg == "spoiler"):
            self.entities.append(Entity(_SIMPLE_ENTITY.get(tag, "spoiler"), offset, length))
        elif tag == "tg-emoji":
            if not arg.isdigit() or int(arg) == 0 or int(arg) >= 2**63:
                raise TelegramHTMLError("Invalid custom emoji identifier specified")
            self.entities.append(Entity("custom_emoji", offset, length, custom_emoji_id=arg))
        elif tag == "a":
            url = arg or self.out[opened.result_pos :].decode("utf-8", "replace")
            if user := _TG_USER.match(url):
                self.entities.append(Entity("text_mention", offset, length, user_id=int(user[1])))
            elif checked := _checked_link(url):
                self.entities.append(Entity("text_link", offset, length, url=checked))
            # Telegram silently drops a link it can't use (e.g. a relative href) and keeps the text.
        elif tag == "pre":
            if same_span and last.type == "code" and last.language:
                self.entities[-1] = Entity("pre", offset, length, language=last.language)
            else:
                self.entities.append(Entity("pre", offset, length))
        elif tag == "code":
            if same_span and last.type == "pre" and arg:
                self.entities[-1] = Entity("pre", offset, length, language=arg)
            else:
                self.entities.append(Entity("code", offset, length, language=arg or None))
        elif tag == "blockquote":
            self.entities.append(Entity("expandable_blockquote" if arg else "blockquote", offset, length))


def _lower(raw: bytes) -> str:
    return raw.lower().decode("utf-8", "replace")  # bytes.lower() is ASCII-only, like TDLib's to_lower


def _argument(tag: str, name: str, value: str | None, current: str) -> str:
    if tag == "a" and name == "href" and value is not None:
        return value
    if tag == "code" and name == "class" and value and value.startswith("language-"):
        return value[len("language-") :]
    if tag == "span" and name == "class" and value and value.startswith("tg-"):
        return value[len("tg-") :]
    if tag == "tg-emoji" and name == "emoji-id" and value is not None:
        return value
    if tag == "blockquote" and name == "expandable":
        return "1"
    return current


def _decode_entity(data: bytes, pos: int) -> tuple[int, int]:
    """(code point, position after the entity) for the `&…` at `pos`; strict where TDLib would keep a bare `&`."""
    end = pos + 1
    code = 0
    if data[end : end + 1] == b"#":
        end += 1
        if data[end : end + 1] == b"x":
            end += 1
            while end < len(data) and chr(data[end]) in "0123456789abcdefABCDEF":
                code = code * 16 + int(chr(data[end]), 16)
                end += 1
        else:
            while end < len(data) and chr(data[end]).isdigit() and data[end] < 0x80:
                code = code * 10 + data[end] - 0x30
                end += 1
        valid = 0 < code < 0x10FFFF and end - pos < 10
    else:
        while end < len(data) and chr(data[end]).isascii() and chr(data[end]).isalpha():
            end += 1
        name = data[pos + 1 : end]
        valid = name in _NAMED
        code = ord(_NAMED[name]) if valid else 0
    if not valid:
        shown = data[pos : end + 1 if data[end : end + 1] == b";" else end].decode("utf-8", "replace")
        raise TelegramHTMLError(f'Unsupported HTML entity "{shown}" at byte offset {pos}')
    return code, end + 1 if data[end : end + 1] == b";" else end


def _checked_link(url: str) -> str | None:
    """A simplified TDLib get_checked_link: absolute links with a known scheme, bare hosts get http://."""
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        return None
    parts = urlsplit(url)
    if parts.scheme:
        if parts.scheme.lower() not in _LINK_SCHEMES:
            return None
        if parts.scheme.lower() in ("http", "https", "ftp") and not parts.hostname:
            return None
        return url
    if url.startswith(("/", "?", "#", ".")):
        return None
    host = urlsplit("http://" + url).hostname or ""
    return "http://" + url if "." in host else None
