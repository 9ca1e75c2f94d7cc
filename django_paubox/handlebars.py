"""A small Handlebars renderer: the subset Paubox's dynamic-template docs use, stdlib only.

Paubox renders dynamic templates with Handlebars. This module renders the same templates for
two readers that cannot call Paubox: the sandbox (which must answer ``/templated_messages`` the
way Paubox would) and the admin's preview. It is deliberately not a full Handlebars: what it
does not support is refused with :class:`HandlebarsUnsupported` (never rendered wrongly), so a
preview is either faithful or says why there is none.

Supported, with Handlebars' semantics:

- ``{{name}}``, ``{{a.b.c}}``, ``{{this}}``, ``{{this.name}}``, ``{{../name}}``: values,
  HTML-escaped (``& < > " ' ` =``); a missing value renders as nothing.
- ``{{{name}}}`` and ``{{&name}}``: values without escaping.
- ``{{#if x}}…{{else if y}}…{{else}}…{{/if}}`` and ``{{#unless x}}…{{else}}…{{/unless}}``:
  false, null, missing, ``""``, ``0`` and ``[]`` are falsy (``{}`` and ``"false"`` are truthy).
- ``{{#each list}}…{{else}}…{{/each}}`` over lists (``{{this}}``, ``{{@index}}``,
  ``{{@first}}``, ``{{@last}}``) and objects (``{{@key}}`` too).
- ``{{#with obj}}…{{else}}…{{/with}}``.
- ``{{! comment }}``, ``{{!-- comment --}}`` and ``~`` whitespace control (``{{~x~}}``).

Values print as JavaScript would: ``true``/``false``, ``1`` for ``1.0``, lists joined with
commas, objects as ``[object Object]``. Not applied: Handlebars' "standalone line" rule (a line
holding only a block tag is dropped), which changes whitespace only, invisible in HTML.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .exceptions import HandlebarsError, HandlebarsSyntaxError, HandlebarsUnsupported

__all__ = [
    "HandlebarsError",
    "HandlebarsSyntaxError",
    "HandlebarsUnsupported",
    "check",
    "render",
]

BLOCK_HELPERS = ("if", "unless", "each", "with")
_TAG = re.compile(r"\{\{(\{)?(~)?(.*?)(~)?\}(?(1)\})\}", re.DOTALL)
_COMMENT_LONG = re.compile(r"\{\{(~)?!--.*?--(~)?\}\}", re.DOTALL)
_SEGMENT = re.compile(r"[A-Za-z_$][\w$-]*|\d+")
_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#x27;",
    "`": "&#x60;",
    "=": "&#x3D;",
}
_ESCAPE_RE = re.compile("[&<>\"'`=]")


# --- Parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Path:
    depth: int  # how many ``../``
    data: bool  # an ``@`` variable
    parts: tuple[str, ...]  # empty for ``this``


@dataclass
class _Value:
    path: _Path
    escape: bool


@dataclass
class _Block:
    helper: str
    path: _Path
    body: list[_Node] = field(default_factory=list)
    inverse: list[_Node] = field(default_factory=list)


_Node = str | _Value | _Block


@dataclass
class _Token:
    kind: str  # "text", "value", "raw", "open", "close", "else", "comment"
    text: str  # text, or the expression inside the tag
    strip_before: bool = False
    strip_after: bool = False
    position: int = 0


def _tokens(template: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while True:
        start = template.find("{{", pos)
        if start < 0:
            tokens.append(_Token("text", template[pos:]))
            break
        tokens.append(_Token("text", template[pos:start]))
        if template.startswith("{{{{", start):
            raise HandlebarsUnsupported(f"raw blocks ('{{{{{{{{…}}}}}}}}') at character {start}")
        long_comment = _COMMENT_LONG.match(template, start)
        if long_comment:
            tokens.append(
                _Token(
                    "comment",
                    "",
                    bool(long_comment.group(1)),
                    bool(long_comment.group(2)),
                    start,
                )
            )
            pos = long_comment.end()
            continue
        match = _TAG.match(template, start)
        if not match:
            raise HandlebarsSyntaxError(f"unclosed '{{{{' at character {start}")
        triple, strip_before, inner, strip_after = match.groups()
        tokens.append(_classify(inner.strip(), bool(triple), start, strip_before, strip_after))
        pos = match.end()
    _apply_whitespace_control(tokens)
    return tokens


def _classify(
    inner: str, triple: bool, position: int, strip_before: Any, strip_after: Any
) -> _Token:
    def token(kind: str, text: str) -> _Token:
        return _Token(kind, text, bool(strip_before), bool(strip_after), position)

    if triple:
        return token("raw", inner)
    if not inner:
        raise HandlebarsSyntaxError(f"empty tag at character {position}")
    sigil = inner[0]
    if sigil == "!":
        return token("comment", "")
    if sigil == "&":
        return token("raw", inner[1:].strip())
    if sigil == "#":
        return token("open", inner[1:].strip())
    if sigil == "/":
        return token("close", inner[1:].strip())
    if sigil == "^":
        if inner[1:].strip():
            raise HandlebarsUnsupported(f"inverse sections ('{{{{^…}}}}') at {position}")
        return token("else", "")
    if sigil in ">*":
        raise HandlebarsUnsupported(f"partials and decorators ('{{{{{sigil}…}}}}') at {position}")
    if inner == "else" or inner.startswith("else "):
        return token("else", inner[4:].strip())
    return token("value", inner)


def _apply_whitespace_control(tokens: list[_Token]) -> None:
    for index, token in enumerate(tokens):
        if token.kind == "text":
            continue
        if token.strip_before and index > 0 and tokens[index - 1].kind == "text":
            tokens[index - 1].text = tokens[index - 1].text.rstrip()
        if token.strip_after and index + 1 < len(tokens) and tokens[index + 1].kind == "text":
            tokens[index + 1].text = tokens[index + 1].text.lstrip()


def _path(expression: str, position: int) -> _Path:
    """A path expression; anything with arguments is a helper call, which is unsupported."""
    if not expression or any(c.isspace() for c in expression):
        raise HandlebarsUnsupported(
            f"helper calls and arguments ({expression!r} at character {position}); only "
            "plain values and the if/unless/each/with blocks are supported"
        )
    if expression[0] in "\"'" or expression[0].isdigit() or expression in ("true", "false"):
        raise HandlebarsUnsupported(f"literal values ({expression!r} at character {position})")
    text = expression
    depth = 0
    while text.startswith("../"):
        depth += 1
        text = text[3:]
    data = text.startswith("@")
    if data:
        text = text[1:]
        if text.startswith("../"):
            raise HandlebarsUnsupported(f"parent data ({expression!r} at character {position})")
    if text in ("this", "."):
        return _Path(depth, data, ())
    if text.startswith("this.") or text.startswith("this/"):
        text = text[5:]
    elif text.startswith("./"):
        text = text[2:]
    parts = tuple(re.split(r"[./]", text))
    if not all(_SEGMENT.fullmatch(part) for part in parts):
        raise HandlebarsSyntaxError(f"invalid expression {expression!r} at character {position}")
    return _Path(depth, data, parts)


def _block_head(text: str, position: int) -> tuple[str, _Path]:
    helper, _, argument = text.partition(" ")
    if helper not in BLOCK_HELPERS:
        raise HandlebarsUnsupported(
            f"the '#{helper}' block at character {position}; supported blocks: "
            + ", ".join(f"#{h}" for h in BLOCK_HELPERS)
        )
    argument = argument.strip()
    if not argument:
        raise HandlebarsSyntaxError(f"'#{helper}' without a value at character {position}")
    if " as |" in f" {argument}" or "|" in argument:
        raise HandlebarsUnsupported(f"block parameters ('as |…|') at character {position}")
    return helper, _path(argument, position)


def _parse(tokens: list[_Token]) -> list[_Node]:
    nodes, _index, _closer = _parse_nodes(tokens, 0, None)  # no closer without an open block
    return nodes


def _parse_nodes(
    tokens: list[_Token], index: int, open_block: _Block | None
) -> tuple[list[_Node], int, _Token | None]:
    """Nodes up to the end, or to the ``else``/close tag of ``open_block`` (returned too)."""
    nodes: list[_Node] = []
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token.kind == "text":
            if token.text:
                nodes.append(token.text)
        elif token.kind == "comment":
            continue
        elif token.kind in ("value", "raw"):
            nodes.append(_Value(_path(token.text, token.position), escape=token.kind == "value"))
        elif token.kind == "open":
            block, index = _parse_block(tokens, index, token)
            nodes.append(block)
        elif token.kind in ("close", "else"):
            if open_block is None:
                raise HandlebarsSyntaxError(
                    f"'{{{{{'else' if token.kind == 'else' else '/' + token.text}}}}}' without "
                    f"an open block at character {token.position}"
                )
            return nodes, index, token
    return nodes, index, None


def _parse_block(
    tokens: list[_Token], index: int, opener: _Token, close_name: str | None = None
) -> tuple[_Block, int]:
    """One block; ``close_name`` is the helper an ``{{else if}}`` chain's close tag names."""
    helper, path = _block_head(opener.text, opener.position)
    expected = close_name or helper
    block = _Block(helper, path)
    block.body, index, closer = _parse_nodes(tokens, index, block)
    if closer is not None and closer.kind == "else":
        if closer.text:  # ``{{else if x}}``: the rest is a nested block sharing our close tag
            nested_opener = _Token("open", closer.text, position=closer.position)
            nested, index = _parse_block(tokens, index, nested_opener, expected)
            block.inverse = [nested]
            return block, index
        block.inverse, index, closer = _parse_nodes(tokens, index, block)
        if closer is not None and closer.kind == "else":
            raise HandlebarsSyntaxError(
                f"a second '{{{{else}}}}' in '#{helper}' at character {closer.position}"
            )
    if closer is None:
        raise HandlebarsSyntaxError(
            f"'{{{{#{expected}}}}}' opened at character {opener.position} is never closed"
        )
    if closer.text != expected:
        raise HandlebarsSyntaxError(
            f"'{{{{#{expected}}}}}' at character {opener.position} closed by "
            f"'{{{{/{closer.text}}}}}' at character {closer.position}"
        )
    return block, index


# --- Rendering --------------------------------------------------------------------------------


@dataclass
class _Frame:
    context: Any
    data: dict[str, Any]
    parent: _Frame | None


_MISSING = object()


def _lookup(frame: _Frame, path: _Path) -> Any:
    for _ in range(path.depth):
        frame = frame.parent or frame
    if path.data:
        if not path.parts:
            return None
        value: Any = frame.data.get(path.parts[0], _MISSING)
        rest = path.parts[1:]
    else:
        value = frame.context
        rest = path.parts
    for part in rest:
        value = _member(value, part)
        if value is _MISSING:
            return None
    return None if value is _MISSING else value


def _member(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(name, _MISSING)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if name == "length":
            return len(value)
        if name.isdigit() and int(name) < len(value):
            return value[int(name)]
    if isinstance(value, str) and name == "length":
        return len(value)
    return _MISSING


def _falsy(value: Any) -> bool:
    """Handlebars' ``if``: false, null/undefined, "", 0 and [] are falsy."""
    if value is None or value is False:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return True
    if isinstance(value, str) and not value:
        return True
    return isinstance(value, (list, tuple)) and not value


def _to_string(value: Any) -> str:
    """JavaScript's ``String(value)`` for JSON values."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join("" if v is None else _to_string(v) for v in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return str(value)


def escape(text: str) -> str:
    """Handlebars' ``escapeExpression``."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text)


def _render_nodes(nodes: list[_Node], frame: _Frame, out: list[str], html: bool) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Value):
            text = _to_string(_lookup(frame, node.path))
            out.append(escape(text) if node.escape and html else text)
        else:
            _render_block(node, frame, out, html)


def _render_block(block: _Block, frame: _Frame, out: list[str], html: bool) -> None:
    value = _lookup(frame, block.path)
    if block.helper in ("if", "unless"):
        chosen = block.body if _falsy(value) == (block.helper == "unless") else block.inverse
        _render_nodes(chosen, frame, out, html)
    elif block.helper == "with":
        if _falsy(value):
            _render_nodes(block.inverse, frame, out, html)
        else:
            _render_nodes(block.body, _Frame(value, dict(frame.data), frame), out, html)
    else:
        items: list[tuple[Any, Any]]
        if isinstance(value, Mapping):
            items = list(value.items())
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        else:
            items = []
        if not items:
            _render_nodes(block.inverse, frame, out, html)
            return
        last = len(items) - 1
        for index, (key, item) in enumerate(items):
            data = {
                **frame.data,
                "index": index,
                "key": key,
                "first": index == 0,
                "last": index == last,
            }
            _render_nodes(block.body, _Frame(item, data, frame), out, html)


def check(template: str) -> None:
    """Raise :class:`HandlebarsError` when ``template`` cannot be rendered here."""
    _parse(_tokens(template))


def render(template: str, values: Any, *, html: bool = True) -> str:
    """``template`` rendered with ``values`` (usually a dict decoded from JSON).

    ``html=False`` renders plain text (Handlebars' ``noEscape``): for a subject line, where
    ``&lt;`` would show as such.
    """
    nodes = _parse(_tokens(template))
    out: list[str] = []
    _render_nodes(nodes, _Frame(values, {"root": values}, None), out, html)
    return "".join(out)
