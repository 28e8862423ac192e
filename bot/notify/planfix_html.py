"""Planfix HTML (task descriptions, comments) → Telegram's HTML subset, cut to a UTF-16 budget with no tag left open."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
from urllib.parse import quote, urljoin, urlsplit

ELLIPSIS = "…"

_INLINE = {"b": "b", "strong": "b", "i": "i", "em": "i", "u": "u", "ins": "u", "s": "s", "strike": "s", "del": "s"}
_BLOCK = frozenset(
    {"p", "div", "ul", "ol", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "section",
     "article", "header", "footer", "hr"}
)
_HIDDEN = frozenset({"script", "style"})  # their text is code, not content
# Planfix system actions carry localisation keys ({event21}, {log26}), often as "label: value"; the label means
# nothing to a reader, so it goes together with its colon.
_PLACEHOLDER = re.compile(r"\{[A-Za-z]+\d+\}(?::[ \t]?)?")
_SPACES = re.compile(r"\s+")
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units, so an emoji outside the BMP counts 2."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def cut_utf16(text: str, units: int) -> str:
    """The longest prefix of `text` within `units` UTF-16 code units; never ends in half a surrogate pair."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > units:
            head = text[:index]
            break
    else:
        return text
    if head and "\ud800" <= head[-1] <= "\udbff":  # only possible if the str carried raw surrogate code points
        head = head[:-1]
    return head


def truncate(text: str, max_units: int) -> str:
    """Plain text cut to `max_units` UTF-16 units including a trailing "…"; unchanged if it already fits."""
    if utf16_len(text) <= max_units:
        return text
    if max_units <= 0:
        return ""
    # A dangling zero-width joiner would glue the ellipsis onto the previous emoji.
    return cut_utf16(text, max_units - 1).rstrip().rstrip("\u200d") + ELLIPSIS


def planfix_html_to_telegram(html: str, *, max_len: int, base_url: str | None = None) -> str:
    """Convert Planfix HTML to Telegram HTML whose visible text is at most `max_len` UTF-16 units.

    Blocks and <br> become newlines, <li> bullets; b/strong/i/em/u/ins/s/strike/del are kept; <a href> is kept for
    http(s) links (relative ones resolved against `base_url`, else reduced to their text); every other tag is
    dropped with its text kept. Entities are decoded (&mdash; → —) and the text re-escaped for Telegram.
    """
    if max_len <= 0 or not html:
        return ""
    collector = _Collector(base_url)
    collector.feed(html)
    collector.close()
    return _serialize(collector.finish(), max_len)


@dataclass(frozen=True)
class _Tag:
    name: str  # Telegram tag: b, i, u, s, a
    opening: bool
    href: str | None = None


_Token = str | _Tag


class _Collector(HTMLParser):
    """Turns Planfix HTML into a flat list of text pieces and Telegram tags, whitespace normalised like a browser."""

    def __init__(self, base_url: str | None) -> None:
        super().__init__(convert_charrefs=True)  # hands us decoded text: &amp;mdash; arrives as &mdash; → —
        self.base_url = base_url
        self.tokens: list[_Token] = []
        self.hidden_depth = 0
        self.links: list[bool] = []  # per open <a>: did it become a Telegram link?

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden_depth += 1
        elif tag == "br":
            self._newline(hard=True)
        elif tag == "li":
            self._newline(hard=False)
            self._text("• ")
        elif tag in _BLOCK:
            self._newline(hard=False)
        elif tag in _INLINE:
            self.tokens.append(_Tag(_INLINE[tag], True))
        elif tag == "a":
            href = None if any(self.links) else _absolute_link(dict(attrs).get("href"), self.base_url)
            self.links.append(href is not None)
            if href is not None:
                self.tokens.append(_Tag("a", True, href))

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif tag in _BLOCK or tag == "li":
            self._newline(hard=False)
        elif tag in _INLINE:
            self.tokens.append(_Tag(_INLINE[tag], False))
        elif tag == "a" and self.links and self.links.pop():
            self.tokens.append(_Tag("a", False))

    def handle_data(self, data: str) -> None:
        if not self.hidden_depth:
            self._text(_SPACES.sub(" ", _PLACEHOLDER.sub("", data)))

    def finish(self) -> list[_Token]:
        self._rstrip(" \n")
        return self.tokens

    def _text(self, text: str) -> None:
        if self._tail() in ("", "\n", " "):  # collapse spaces across tags and at line starts
            text = text.lstrip(" ")
        if text:
            self.tokens.append(text)

    def _newline(self, *, hard: bool) -> None:
        self._rstrip(" ")
        tail = self._trailing_newlines()
        if self._tail() == "" or (not hard and tail >= 1) or tail >= 2:
            return
        self.tokens.append("\n")

    def _tail(self) -> str:
        return next((t[-1] for t in reversed(self.tokens) if isinstance(t, str) and t), "")

    def _trailing_newlines(self) -> int:
        count = 0
        for token in reversed(self.tokens):
            if isinstance(token, str):
                stripped = token.rstrip("\n")
                count += len(token) - len(stripped)
                if stripped:
                    break
        return count

    def _rstrip(self, chars: str) -> None:
        for index in range(len(self.tokens) - 1, -1, -1):
            token = self.tokens[index]
            if isinstance(token, str):
                stripped = token.rstrip(chars)
                if stripped:
                    self.tokens[index] = stripped
                    break
                del self.tokens[index]


def _absolute_link(href: str | None, base_url: str | None) -> str | None:
    """An http(s) URL Telegram will accept, or None (javascript:, mailto:, relative without a base, garbage)."""
    href = (href or "").strip()
    if not href:
        return None
    if not urlsplit(href).scheme and base_url:
        href = urljoin(base_url.rstrip("/") + "/", href)
    parts = urlsplit(href)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return quote(href, safe=_URL_SAFE)  # spaces and controls would make Telegram drop the link


def _serialize(tokens: list[_Token], max_len: int) -> str:
    """Emit Telegram HTML within max_len visible units: tags opened lazily (no empty ones), all closed at the end."""
    total = sum(utf16_len(t) for t in tokens if isinstance(t, str))
    budget = max_len if total <= max_len else max_len - utf16_len(ELLIPSIS)
    out: list[str] = []
    stack: list[list[object]] = []  # [tag, emitted?]
    used = 0
    for token in tokens:
        if isinstance(token, _Tag):
            _apply_tag(token, stack, out)
            continue
        piece = token if used + utf16_len(token) <= budget else cut_utf16(token, budget - used).rstrip()
        if piece:
            _open_pending(stack, out)
            out.append(escape(piece, quote=False))
            used += utf16_len(piece)
        if piece != token:
            out.append(ELLIPSIS)
            break
    for tag, emitted in reversed(stack):
        if emitted:
            out.append(f"</{tag.name}>")  # type: ignore[attr-defined]
    return "".join(out).strip()


def _apply_tag(tag: _Tag, stack: list[list[object]], out: list[str]) -> None:
    if tag.opening:
        stack.append([tag, False])
        return
    names = [entry[0].name for entry in stack]  # type: ignore[attr-defined]
    if tag.name not in names:
        return  # a stray end tag in the source
    # Close everything above the matching start tag too: Telegram needs proper nesting, Planfix HTML may lack it.
    while stack:
        opened, emitted = stack.pop()
        if emitted:
            out.append(f"</{opened.name}>")  # type: ignore[attr-defined]
        if opened.name == tag.name:  # type: ignore[attr-defined]
            break


def _open_pending(stack: list[list[object]], out: list[str]) -> None:
    for entry in stack:
        if not entry[1]:
            tag: _Tag = entry[0]  # type: ignore[assignment]
            href = f' href="{escape(tag.href, quote=True)}"' if tag.href else ""
            out.append(f"<{tag.name}{href}>")
            entry[1] = True
