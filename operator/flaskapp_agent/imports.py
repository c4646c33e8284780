"""Post-import hooks: run a function right after a named module has executed, before the app sees it (the
pattern of wrapt's post-import hooks and of OpenTelemetry's instrumentors), with no import of the library
by the agent itself."""

import importlib.util
import sys
import threading

from . import _runtime

_hooks = {}  # module name -> [hook(module)]
_searching = threading.local()


def _run(name, module):
    for hook in _hooks.get(name, ()):
        _runtime.guarded("%s hook" % name)(hook)(module)


class _HookedLoader(object):
    """Executes the module with its own loader, then the hooks; afterwards the module names its own loader
    again, so nothing downstream sees this one."""

    def __init__(self, name, loader):
        self._name = name
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        _run(self._name, module)

    def __getattr__(self, attribute):
        return getattr(self._loader, attribute)


class _Finder(object):
    def find_spec(self, name, path=None, target=None):
        if name not in _hooks or getattr(_searching, "name", None) == name:
            return None
        _searching.name = name
        try:
            spec = importlib.util.find_spec(name)
        finally:
            _searching.name = None
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _HookedLoader(name, spec.loader)
        return spec


def when_imported(name, hook):
    _hooks.setdefault(name, []).append(hook)
    if name in sys.modules:  # imported before the agent started
        _runtime.guarded("%s hook" % name)(hook)(sys.modules[name])


def install():
    from . import caching_hooks, celery_hooks, flask_hooks, sqlalchemy_hooks

    sys.meta_path.insert(0, _Finder())
    when_imported("sqlalchemy", sqlalchemy_hooks.on_import)
    when_imported("flask", flask_hooks.on_import)
    when_imported("flask_caching", caching_hooks.on_import)
    when_imported("celery.signals", celery_hooks.on_import)
