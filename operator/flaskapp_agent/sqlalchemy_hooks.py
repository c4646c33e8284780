"""SQLAlchemy: the connection plan enforced on every engine for the budgeted server, and every statement
counted and timed for the request or task that runs it.

create_engine is reached as sqlalchemy.create_engine, sqlalchemy.engine.create_engine and, from
engine_from_config (Flask-SQLAlchemy 3), sqlalchemy.engine.create.create_engine; async engines go through
the same function with AsyncAdaptedQueuePool (a QueuePool). All three names are replaced right after
`import sqlalchemy` executes, before the app can take a reference to the original.

Two bounds: each QueuePool's pool_size/max_overflow is lowered to the plan's, and every synchronous engine to
the budgeted server opens its DBAPI connections through one per-process ConnectionLimit of pool_size +
max_overflow, which bounds what no pool size does (NullPool, several engines, SingletonThreadPool).
"""

import functools
import threading
import time
import weakref

from . import _runtime
from .connection_limit import ConnectionLimit

# SQLAlchemy's own defaults for QueuePool (docs: "Engine Configuration", create_engine parameters).
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10
_ENGINE_MODULES = ("sqlalchemy", "sqlalchemy.engine", "sqlalchemy.engine.create")
_lock = threading.Lock()
_engines_per_server = {}
_limits = {}  # (host, port) -> this process's ConnectionLimit for it


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
        name = None
        try:
            kwargs, name = _apply_plan(url, kwargs, plan, server, sqlalchemy)
        except Exception as error:
            _runtime.fail_open("the connection plan", error)
        engine = original(url, *args, **kwargs)
        if name is None and ("creator" in kwargs or "pool" in kwargs):
            try:
                _report_hostless(url, kwargs, sqlalchemy)
            except Exception as error:
                _runtime.fail_open("the connection plan", error)
        if name is not None:
            try:
                _limit_connections(engine, name, kwargs, plan, server, sqlalchemy)
            except Exception as error:
                _runtime.fail_open("the connection limit", error)
        return engine

    create_engine._flaskapp_agent = True
    return create_engine


def _apply_plan(url, kwargs, plan, server, sqlalchemy):
    """(keyword arguments with the plan applied, engine name) when `url` is on the budgeted server, else
    (kwargs, None)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.host or (parsed.host.lower(), parsed.port or 5432) != server:
        return kwargs, None
    name = "%s@%s:%s/%s" % (parsed.drivername, parsed.host, parsed.port or 5432, parsed.database or "")
    poolclass = kwargs.get("poolclass")
    if "pool" in kwargs or (poolclass is not None and not issubclass(poolclass, sqlalchemy.pool.QueuePool)):
        return kwargs, name  # no pool size to lower: the connection limit bounds it
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
    return out, name


def _report_hostless(url, kwargs, sqlalchemy):
    """An engine whose URL names no host (`postgresql+pg8000://`) but whose creator= or pool= connects: the way
    Cloud SQL's and similar connectors are used. Where it could reach is unknown; for the budgeted database's
    kind of server it is reported, not silently left out."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    budgeted = make_url(_runtime.settings.database_url)
    if parsed.host or parsed.get_backend_name() != budgeted.get_backend_name():
        return
    reason = "prebuilt pool" if "pool" in kwargs else "creator"
    _unbounded("%s (no host in its URL)" % parsed.drivername, reason,
               "a %s= was passed and the URL names no server: its connections are the app's to count" % reason)


def _limit_connections(engine, name, kwargs, plan, server, sqlalchemy):
    """Open the engine's connections through the process's limit for its server, or report why it cannot be."""
    with _lock:
        _engines_per_server[server] = _engines_per_server.get(server, 0) + 1
        engines = _engines_per_server[server]
    if "pool" in kwargs or "creator" in kwargs:
        # Connections come from the app's own pool or function, not the dialect's connect: none pass here.
        reason = "prebuilt pool" if "pool" in kwargs else "creator"
        _unbounded(name, reason, "a %s= was passed: its connections are the app's to count" % reason)
        return
    if getattr(engine.dialect, "is_async", False):
        # A blocking wait would stall the event loop: an async engine has only its (lowered) pool size.
        poolclass = kwargs.get("poolclass")
        if poolclass is not None and not issubclass(poolclass, sqlalchemy.pool.QueuePool):
            _unbounded(name, poolclass.__name__, "an async engine with %s: no pool size bounds it"
                       % poolclass.__name__)
        elif engines > 1:
            _unbounded(name, "more than one engine", "%d engines to one server in this process, async ones "
                       "among them: each gets the plan, together they may open %d times what the budget counts "
                       "for one process" % (engines, engines))
        return
    limit = _limit_for(server, plan, sqlalchemy)
    if limit is None:
        return
    dialect = engine.dialect
    connect = dialect.connect  # called by the pool's creator after any do_connect handler the app added

    @functools.wraps(connect)
    def limited_connect(*cargs, **cparams):
        overdrafts = limit.overdrafts
        connection = limit.open(lambda: connect(*cargs, **cparams), nested=_checked_out.count > 0)
        if limit.overdrafts > overdrafts:
            _unbounded(name, "nested connections", "a request or task took a second connection while holding "
                       "one, with every place of the plan taken: opened over the limit (waiting could only "
                       "time out); the plan counts one connection per thread")
        if limit.untracked:
            _unbounded(name, "untracked driver", "its DBAPI connections refuse weak references: the process "
                       "limit cannot follow them")
        return connection

    dialect.connect = limited_connect
    limit.add_idle_closer(functools.partial(_close_one_idle, weakref.ref(engine)))
    from sqlalchemy import event

    event.listen(engine, "checkout", _on_checkout)
    event.listen(engine, "checkin", _on_checkin)
    if engines > 1:
        _runtime.log_once(("shared limit", server),
                          "more than one engine to %s:%s in this process: together held to the plan's %d "
                          "connections" % (server[0], server[1], limit.limit))


def _close_one_idle(engine_ref):
    """Close the DBAPI connection of one idle record of the engine's QueuePool, leaving the record in the pool
    (SQLAlchemy 1.4 and 2.x reconnect a record whose connection is None at its next checkout)."""
    engine = engine_ref()
    idle = getattr(getattr(engine, "pool", None), "_pool", None)  # QueuePool's queue of checked-in records
    if idle is None:
        return False
    taken = []
    try:
        while True:
            try:
                record = idle.get(False)
            except Exception:  # none left idle
                return False
            taken.append(record)
            if record.dbapi_connection is not None:
                record.close()
                return True
    finally:
        for record in taken:  # back in the pool, in the order taken
            try:
                idle.put(record, False)
            except Exception:  # full: a checkin took its slot meanwhile; QueuePool's own way out
                record.close()
                engine.pool._dec_overflow()


class _CheckedOut(threading.local):
    count = 0  # connections to the budgeted server this thread has checked out of a limited engine's pool


_checked_out = _CheckedOut()


def _on_checkout(dbapi_connection, record, proxy):
    _checked_out.count += 1


def _on_checkin(dbapi_connection, record):
    _checked_out.count = max(0, _checked_out.count - 1)  # a checkin by the garbage collector's thread


def _limit_for(server, plan, sqlalchemy):
    size = plan.get("pool_size")
    if size is None:
        return None
    with _lock:
        if server not in _limits:
            _limits[server] = ConnectionLimit(
                server, size + max(plan.get("max_overflow", 0), 0), float(plan.get("pool_timeout", 30)),
                timeout_error=sqlalchemy.exc.TimeoutError)
        return _limits[server]


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
