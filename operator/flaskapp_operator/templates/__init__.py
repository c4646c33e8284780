"""Config-file templates (Jinja2), one Environment for the package; templates hold no logic."""

from __future__ import annotations

from functools import lru_cache

import jinja2


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("flaskapp_operator", "templates"),
        undefined=jinja2.StrictUndefined,  # a missing value fails loudly instead of rendering empty
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )


def render_template(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
