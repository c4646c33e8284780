"""Celery: every task measured per task name (runtime, outcome, retries, statements and N+1 suspects) from
Celery's own signals, which fire in the process that runs the task (a prefork child, a thread)."""

import time

from . import _runtime

_running = {}  # task id -> (unit, token, started)


def on_import(signals):
    if _runtime.statsd is None:
        return
    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)
    signals.task_retry.connect(_retry, weak=False)


@_runtime.guarded("task metrics")
def _prerun(sender=None, task_id=None, **_):
    unit = _runtime.Unit()
    _running[task_id] = (unit, _runtime.current_unit.set(unit), time.perf_counter())


@_runtime.guarded("task metrics")
def _postrun(sender=None, task_id=None, state=None, **_):
    entry = _running.pop(task_id, None)
    if entry is None:
        return
    unit, token, started = entry
    try:
        _runtime.current_unit.reset(token)
    except ValueError:  # reset from another context (an eager task inside a request): nothing to restore
        pass
    name = getattr(sender, "name", None) or "unknown"
    tags = "task:%s" % _runtime.tag_value(name)
    lines = ["flaskapp.task.duration:%.3f|ms|#%s,state:%s"
             % ((time.perf_counter() - started) * 1000.0, tags, _runtime.tag_value(state or "UNKNOWN"))]
    lines += unit.lines("flaskapp.task", tags)
    lines += _runtime.n_plus_one_lines(unit, "flaskapp.task", tags, "task " + name)
    _runtime.statsd.send(lines)


@_runtime.guarded("task metrics")
def _retry(sender=None, **_):
    _runtime.count("flaskapp.task.retries", "task:%s" % _runtime.tag_value(getattr(sender, "name", "unknown")))
