"""Flask: the operator's values in app.config for every key the app leaves unset, and every request measured
per URL rule and method.

Both go through the Flask class itself (its __init__ and full_dispatch_request, present in Flask 2 and 3), so
they need neither blinker (Flask's signals before 2.3) nor anything the app must call.
"""

import functools
import time

from . import _runtime

# The env contract's values that Flask extensions read from app.config (Flask-Caching reads app.config only: with
# CACHE_TYPE only in the environment, Cache(app) is a NullCache). Typed as the extensions expect them.
_CONFIG_FROM_ENV = (
    ("CACHE_TYPE", str), ("CACHE_REDIS_URL", str), ("CACHE_MEMCACHED_SERVERS", lambda v: v.split(",")),
    ("CACHE_KEY_PREFIX", str), ("CACHE_DEFAULT_TIMEOUT", int), ("CDN_URL", str),
)
# HTTP methods as label values; anything else a client sends is OTHER (a label set bounded by the app's code).
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
UNMATCHED = "(unmatched)"  # a request no URL rule matched (404, 405): one label value, never the raw path


def config_defaults(environ):
    """What app.config gets for keys the app does not set itself."""
    out = {}
    for key, convert in _CONFIG_FROM_ENV:
        if environ.get(key):
            out[key] = convert(environ[key])
    if environ.get("DATABASE_URL"):
        out["SQLALCHEMY_DATABASE_URI"] = environ["DATABASE_URL"]
    return out


def on_import(flask):
    app_class = flask.Flask
    if getattr(app_class, "_flaskapp_agent", False):
        return
    app_class._flaskapp_agent = True
    defaults = config_defaults(_runtime.settings.environ)
    original_init = app_class.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        _set_defaults(self, defaults)

    app_class.__init__ = __init__
    if _runtime.statsd is not None:
        _measure_requests(app_class, flask)


@_runtime.guarded("the Flask config defaults")
def _set_defaults(app, defaults):
    for key, value in defaults.items():
        app.config.setdefault(key, value)


def _measure_requests(app_class, flask):
    original = app_class.full_dispatch_request
    request = flask.request

    @functools.wraps(original)
    def full_dispatch_request(self):
        unit = _runtime.Unit()
        token = _runtime.current_unit.set(unit)
        started = time.perf_counter()
        status = 500  # an exception that escapes Flask's own handlers becomes a 500
        try:
            response = original(self)
            status = getattr(response, "status_code", 200)
            return response
        finally:
            _runtime.current_unit.reset(token)
            _record(request._get_current_object(), unit, time.perf_counter() - started, status)

    app_class.full_dispatch_request = full_dispatch_request


_tags = {}  # (URL rule, method) -> its tag string: built once per endpoint, not once per request


def _tags_of(endpoint, method):
    key = (endpoint, method)
    tags = _tags.get(key)
    if tags is None:
        tags = _tags[key] = "route:%s,method:%s" % (_runtime.tag_value(endpoint), method)
    return tags


@_runtime.guarded("request metrics")
def _record(request, unit, seconds, status):
    rule = request.url_rule
    endpoint = rule.rule if rule is not None else UNMATCHED
    method = request.method
    if method not in METHODS:
        method = "OTHER"
    tags = _tags_of(endpoint, method)
    lines = ["flaskapp.request.duration:%.3f|ms|#%s,status:%dxx" % (seconds * 1000.0, tags, status // 100)]
    lines += unit.lines("flaskapp.request", tags)
    if unit.queries >= _runtime.settings.n_plus_one:
        lines += _runtime.n_plus_one_lines(unit, "flaskapp.request", tags, "%s %s" % (method, endpoint))
    _runtime.statsd.send(lines)
