"""JSON text as the client wrote it: strict decoding, and values kept as their own text.

A message's content is kept as the JSON text the client sent, not as a value decoded and encoded
again: ``0.1000000000000000000001``, ``1e-400`` or a 30-digit integer come back exactly as they
went in, which no round trip through a double can promise. The body is first decoded in full
(strictly: no NaN or Infinity, no control characters in strings), so everything here may assume
valid JSON and only has to find where a value starts and ends. The one change made to the text
is that whitespace between tokens is dropped, so a content is always one line.

The scanning is regular expressions run by ``re``'s C engine; Python code runs once per
structural character of an object or array content, and not at all for the usual string.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from . import protocol

_SPACE = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_SCALAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_STRUCTURE = re.compile(r'["\[\]{}]')
_STRING_OR_SPACE = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")|[ \t\n\r]+')
_PLAIN_ITEM = re.compile(  # {"content": "<a string>"} and what follows it up to the next item
    r'\{[ \t\n\r]*"content"[ \t\n\r]*:[ \t\n\r]*("[^"\\]*(?:\\.[^"\\]*)*")'
    r"[ \t\n\r]*\}[ \t\n\r]*(?:,[ \t\n\r]*)?"
)
_FLAT_MEMBER = re.compile(  # "key": a string, number or literal, then the comma or the object's end
    r'[ \t\n\r]*("[^"\\]*(?:\\.[^"\\]*)*")[ \t\n\r]*:[ \t\n\r]*'
    r'("[^"\\]*(?:\\.[^"\\]*)*"|-?[0-9][0-9.eE+\-]*|true|false|null)[ \t\n\r]*([,}])'
)
_LONGEST_INTEGER = 4000  # digits: Python refuses to convert longer ones (sys.int_info)


class NestedTooDeeply(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _integer(text: str) -> int | float:
    """An integer too long for Python to convert only matters in content, which is kept as text;
    anywhere else it is out of every range, as infinity is."""
    return int(text) if len(text) <= _LONGEST_INTEGER else math.inf


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_integer)


def decode(text: str) -> Any:
    """Parse a JSON document strictly; ValueError with a readable reason."""
    try:
        return _decoder.decode(text)
    except RecursionError:
        raise NestedTooDeeply(f"it is nested more than {protocol.MAX_NESTING} levels deep") from None


# -- finding values in text already known to be valid JSON ---------------------------------------


def _skip_space(text: str, index: int) -> int:
    return _SPACE.match(text, index).end()


def value_end(text: str, start: int) -> int:
    """Where the value starting at ``start`` ends; NestedTooDeeply beyond MAX_NESTING levels."""
    first = text[start]
    if first == '"':
        return _STRING.match(text, start).end()
    if first not in "[{":
        return _SCALAR.match(text, start).end()
    depth = 0
    position = start
    while True:
        found = _STRUCTURE.search(text, position)
        character = found.group()
        if character == '"':
            position = _STRING.match(text, found.start()).end()
            continue
        position = found.end()
        if character in "[{":
            depth += 1
            if depth > protocol.MAX_NESTING:
                raise NestedTooDeeply(f"it is nested more than {protocol.MAX_NESTING} levels deep")
        else:
            depth -= 1
            if depth == 0:
                return position


def members(
    text: str, start: int, readers: Mapping[str, Callable[[str, int], tuple[Any, int]]] | None = None
) -> tuple[dict[str, Any], int]:
    """The (start, end) of each member's value in the object at ``start``, and where the object
    ends; a repeated key keeps its last value, as the decoder does. A member with a reader in
    ``readers`` is read by it instead, as it is met (``reader(text, value_start)`` returns what
    it read and where the value ends), so a long value is gone through once."""
    found: dict[str, Any] = {}
    index = _skip_space(text, start + 1)
    if text[index] == "}":
        return found, index + 1
    while True:
        key_end = _STRING.match(text, index).end()
        key = text[index + 1 : key_end - 1]
        if "\\" in key:
            key = json.loads(text[index:key_end])
        index = _skip_space(text, _skip_space(text, key_end) + 1)  # past the colon
        reader = readers.get(key) if readers else None
        if reader is None:
            end = value_end(text, index)
            found[key] = (index, end)
        else:
            found[key], end = reader(text, index)
        index = _skip_space(text, end)
        if text[index] == "}":
            return found, index + 1
        index = _skip_space(text, index + 1)  # past the comma


def compact(text: str) -> str:
    """The value's text without whitespace between tokens (strings are left as they are)."""
    if text[0] not in "[{":
        return text
    return _STRING_OR_SPACE.sub(_keep_string, text)


def _keep_string(match: re.Match) -> str:
    return match.group(1) or ""


def member_text(text: str, key: str) -> str:
    """The compact text of ``key``'s value in the document's top-level object. An object whose
    members are all scalars (a publish frame, a single send with a string) is read with one
    regular expression per member; any other, member by member."""
    flat = _flat_members(text)
    if flat is not None:
        return flat[key]
    start, end = members(text, _skip_space(text, 0))[0][key]
    return compact(text[start:end])


def _flat_members(text: str) -> dict[str, str] | None:
    """Each member's value text, if every value is a scalar; None if one is an array or object."""
    found: dict[str, str] = {}
    index = _skip_space(text, 0) + 1
    if _skip_space(text, index) == len(text) - 1:  # {}
        return found
    while True:
        member = _FLAT_MEMBER.match(text, index)
        if member is None:
            return None
        key = member.group(1)
        found[json.loads(key) if "\\" in key else key[1:-1]] = member.group(2)
        index = member.end()
        if member.group(3) == "}":
            return found


def batch_contents(text: str) -> list[str | None]:
    """The compact text of each ``messages[i].content`` of a batch body (None where an item is
    not an object with a content). One pass over the text: the array is read item by item as it
    is found, never measured first. Items that are ``{"content": "<a string>"}`` alone, the usual
    batch, are found by one regular expression each."""
    return members(text, _skip_space(text, 0), {"messages": _items})[0]["messages"]


def _items(text: str, start: int) -> tuple[list[str | None], int]:
    """The contents of the batch array at ``start``, and where the array ends."""
    index = _skip_space(text, start + 1)
    contents: list[str | None] = []
    while text[index] != "]":
        plain = _PLAIN_ITEM.match(text, index)
        if plain is not None:  # the item, its comma and the space around: on to the next
            contents.append(plain.group(1))
            index = plain.end()
            continue
        if text[index] == "{":
            item, end = members(text, index)
            span = item.get("content")
            contents.append(None if span is None else compact(text[span[0] : span[1]]))
        else:
            contents.append(None)
            end = value_end(text, index)
        index = _skip_space(text, end)
        if text[index] == ",":
            index = _skip_space(text, index + 1)
    return contents, index + 1
