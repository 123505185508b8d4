"""JSON from clients, parsed under a size and a nesting-depth limit.

Every JSON the daemon reads from a request goes through ``loads`` (request
bodies and the ``metadata`` form field): ``[`` × 100,000 would otherwise end in
a RecursionError (a 500) in the parser, or later in ``json.dumps``, pydantic
or the store. A body past the size limit is 413, anything else refused is 400.
"""

from __future__ import annotations

import json
from typing import Any

from sona.errors import InvalidRequest, PayloadTooLarge

MAX_JSON_BYTES = 1024 * 1024  # a JSON body (options, a URL, ≤ 4 KB of metadata) is far less
MAX_JSON_DEPTH = 32  # nesting of arrays and objects


def loads(text: str | bytes, *, param: str | None = None) -> Any:
    """Parse ``text``; InvalidRequest (400) when it is not JSON or nests deeper
    than ``MAX_JSON_DEPTH``, PayloadTooLarge (413) past ``MAX_JSON_BYTES``."""
    if len(text) > MAX_JSON_BYTES:
        raise PayloadTooLarge(f"JSON is larger than {MAX_JSON_BYTES} bytes", param=param)
    try:
        value = json.loads(text)
    except RecursionError:
        value = None  # deeper than the interpreter's own limit: refused below
        too_deep = True
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("not valid JSON", param=param) from None
    else:
        too_deep = depth_exceeds(value, MAX_JSON_DEPTH)
    if too_deep:
        raise InvalidRequest(f"JSON nests deeper than {MAX_JSON_DEPTH} levels", param=param)
    return value


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/dicts deeper than ``limit`` (no recursion:
    the walk itself must not be the thing that overflows)."""
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False
