"""flaskapp-agent: the operator's plan applied inside an unchanged Flask app's process.

The operator mounts this package (a ConfigMap) into every container that runs the app's Python and puts its
directory first on PYTHONPATH; its `sitecustomize` calls `start()` when the interpreter starts. From then on,
when the app imports a library the agent knows, a hook runs right after that import:

- sqlalchemy: every engine for the budgeted database server (DATABASE_URL's host and port) gets at most the
  plan's pool_size and max_overflow (SQLALCHEMY_ENGINE_OPTIONS), and the plan's pool_timeout, pool_recycle and
  pool_pre_ping where the app set none; engines it cannot bound are logged and counted. Statements are counted
  and timed per request or task.
- flask: app.config gets the operator's values (cache, CDN, database URI) for keys the app did not set; every
  request is measured per URL rule (never the raw path) and method.
- flask_caching: cache hits and misses per endpoint.
- celery.signals: every task measured per task name.

Rules it keeps: standard library only, Python 3.9 syntax, no work at import beyond reading a few variables,
and fail open: an error inside the agent is written to stderr once and the app runs as it would without it.
"""

__version__ = "1"


def start():
    """Install the import hooks (called once by sitecustomize)."""
    from . import _runtime

    _runtime.start()
