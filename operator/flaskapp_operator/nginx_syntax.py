"""What nginx accepts where a spec value is written into nginx.conf: checked with nginx's own grammar, so that a
spec either renders a configuration `nginx -t` accepts or is refused naming the field."""

from __future__ import annotations

import re
from typing import Optional

# A URL path prefix for a `location` and an `alias`: RFC 3986 path characters without the ones nginx's
# configuration parser gives a meaning (";" ends a directive, "{" "}" open and close blocks, quotes, "#" starts a
# comment, "$" a variable, "\" an escape, whitespace separates arguments), no "." or ".." segment, at least one
# segment ("/" alone would be a second `location /`), ending in "/". RE2 syntax (no lookahead): the same pattern is
# the CRD's.
_PATH_CHAR = r"A-Za-z0-9_~%@:+,=!*()-"
_SEGMENT = rf"([{_PATH_CHAR}][.{_PATH_CHAR}]*|\.[{_PATH_CHAR}][.{_PATH_CHAR}]*|\.\.[.{_PATH_CHAR}]+)"
URL_PATH_PREFIX = rf"^/({_SEGMENT}/)+$"
URL_PATH_PREFIX_MESSAGE = ("must be a URL path prefix like /static/: segments of letters, digits and _~%@:+,=!*()-. "
                           "(no . or .. segment, no space, quote, ; { } # $ or \\), starting and ending with /")


def pcre_problem(pattern: str) -> Optional[str]:
    """Why PCRE2 (what nginx links) refuses `pattern`, or None. Without the pcre2 binding, Python's re stands in
    (it refuses what PCRE refuses in all but exotic syntax)."""
    try:
        import pcre2
    except ImportError:  # pragma: no cover - the operator's image and the test venv have it
        try:
            re.compile(pattern)
        except re.error as error:
            return f"is not a valid regular expression: {error}"
        return None
    try:
        pcre2.compile(pattern)
    except Exception as error:  # pcre2's PatternError (its class moved between releases)
        return f"is not a valid PCRE regular expression (nginx would refuse it): {error}"
    return None
