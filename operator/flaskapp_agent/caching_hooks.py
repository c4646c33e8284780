"""Flask-Caching: hits and misses of every backend a Cache creates, counted for the request that asked.

Cache.init_app builds the backend in _set_cache (Flask-Caching 1.x and 2.x) and keeps it in
app.extensions["cache"]; its `get` is what Cache.get, @cached and @memoize call. A value of None is a miss.
"""

import functools

from . import _runtime


def on_import(flask_caching):
    cache_class = flask_caching.Cache
    if _runtime.statsd is None or getattr(cache_class, "_flaskapp_agent", False):
        return
    cache_class._flaskapp_agent = True
    original = cache_class._set_cache

    @functools.wraps(original)
    def _set_cache(self, app, config):
        original(self, app, config)
        _count_lookups(app.extensions["cache"][self])

    cache_class._set_cache = _set_cache


@_runtime.guarded("cache metrics")
def _count_lookups(backend):
    get = backend.get
    if getattr(get, "_flaskapp_agent", False):
        return

    @functools.wraps(get)
    def counted_get(*args, **kwargs):
        value = get(*args, **kwargs)
        unit = _runtime.current_unit.get()
        if unit is not None:
            if value is None:
                unit.cache_misses += 1
            else:
                unit.cache_hits += 1
        return value

    counted_get._flaskapp_agent = True
    backend.get = counted_get
