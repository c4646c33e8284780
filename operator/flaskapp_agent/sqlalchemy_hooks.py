"""SQLAlchemy: the connection plan enforced on every engine for the budgeted server, and every statement
counted and timed for the request or task that runs it.

create_engine is reached as sqlalchemy.create_engine, sqlalchemy.engine.create_engine and, from
engine_from_config (Flask-SQLAlchemy 3), sqlalchemy.engine.create.create_engine; async engines go through
the same function with AsyncAdaptedQueuePool (a QueuePool). All three names are replaced right after
`import sqlalchemy` executes, before the app can take a reference to the original.
"""

import functools
import threading
import time

from . import _runtime

# SQLAlchemy's own defaults for QueuePool (docs: "Engine Configuration", create_engine parameters).
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10
_ENGINE_MODULES = ("sqlalchemy", "sqlalchemy.engine", "sqlalchemy.engine.create")
_lock = threading.Lock()
_engines_per_server = {}


def on_import(sqlalchemy):
    import sys

    plan = _runtime.settings.engine_options
    server = _server(_runtime.settings.database_url)
    if plan is not None and server is not None:
        for name in _ENGINE_MODULES:
            module = sys.modules.get(name)
            original = getattr(module, "create_engine", None)
            if original is not None and not getattr(original, "_flaskapp_agent", False):
                module.create_engine = _bounded(original, plan, server, sqlalchemy)
    if _runtime.statsd is not None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", _before_execute)
        event.listen(Engine, "after_cursor_execute", _after_execute)


def _server(url):
    """(host, port) of a database URL, or None; the budget is per server, whichever database on it."""
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname.lower(), port or 5432


def _bounded(original, plan, server, sqlalchemy):
    @functools.wraps(original)
    def create_engine(url, *args, **kwargs):
        try:
            kwargs = _apply_plan(url, kwargs, plan, server, sqlalchemy)
        except Exception as error:
            _runtime.fail_open("the connection plan", error)
        return original(url, *args, **kwargs)

    create_engine._flaskapp_agent = True
    return create_engine


def _apply_plan(url, kwargs, plan, server, sqlalchemy):
    """The engine's keyword arguments with the plan applied when `url` is on the budgeted server."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.host or (parsed.host.lower(), parsed.port or 5432) != server:
        return kwargs
    name = "%s@%s:%s/%s" % (parsed.drivername, parsed.host, parsed.port or 5432, parsed.database or "")
    with _lock:
        _engines_per_server[server] = _engines_per_server.get(server, 0) + 1
        engines = _engines_per_server[server]
    if engines > 1:
        _unbounded(name, "more than one engine",
                   "%d engines to one server in this process: each gets the plan, together they may open %d times "
                   "what the budget counts for one process" % (engines, engines))
    poolclass = kwargs.get("poolclass")
    if "pool" in kwargs:
        _unbounded(name, "prebuilt pool", "a prebuilt pool= was passed: its size is the app's")
        return kwargs
    if poolclass is not None and not issubclass(poolclass, sqlalchemy.pool.QueuePool):
        _unbounded(name, poolclass.__name__, "%s opens connections outside any pool size: the budget cannot "
                   "bound it" % poolclass.__name__)
        return kwargs
    out = dict(kwargs)
    lowered = []
    for key, default in (("pool_size", DEFAULT_POOL_SIZE), ("max_overflow", DEFAULT_MAX_OVERFLOW)):
        limit = plan.get(key)
        if limit is None:
            continue
        asked = out.get(key, default)
        if isinstance(asked, str):  # engine_from_config passes the config's strings (coerced by create_engine)
            asked = int(asked)
        if asked is None or asked < 0 or asked > limit:  # max_overflow -1: no limit at all
            out[key] = limit
            lowered.append("%s %s -> %s" % (key, "unlimited" if asked is not None and asked < 0 else asked,
                                            limit))
    for key in ("pool_timeout", "pool_recycle", "pool_pre_ping"):
        if key in plan and key not in out:
            out[key] = plan[key]
    extra = plan.get("connect_args")
    if extra:
        connect_args = dict(out.get("connect_args") or {})
        for key, value in extra.items():
            connect_args.setdefault(key, value)
        out["connect_args"] = connect_args
    if lowered:
        _runtime.log("engine %s lowered to the connection plan: %s" % (name, ", ".join(lowered)))
        _runtime.count("flaskapp.agent.engines_lowered", "engine:%s" % _runtime.tag_value(parsed.drivername))
    return out


def _unbounded(name, reason, detail):
    _runtime.log_once(("unbounded", name, reason),
                      "engine %s is NOT bounded by the connection plan: %s" % (name, detail))
    _runtime.count("flaskapp.agent.unbounded_engines", "reason:%s" % _runtime.tag_value(reason))


def _before_execute(conn, cursor, statement, parameters, context, executemany):
    unit = _runtime.current_unit.get()
    if unit is not None:
        unit.started = time.perf_counter()


def _after_execute(conn, cursor, statement, parameters, context, executemany):
    unit = _runtime.current_unit.get()
    if unit is None or unit.started is None:
        return
    unit.sql_seconds += time.perf_counter() - unit.started
    unit.started = None
    unit.queries += 1
    unit.statements[statement] = unit.statements.get(statement, 0) + 1
