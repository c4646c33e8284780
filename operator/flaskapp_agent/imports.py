"""Post-import hooks: run a function right after a named module has executed, before the app sees it (the
pattern of wrapt's post-import hooks and of OpenTelemetry's instrumentors), with no import of the library
by the agent itself."""

import sys

from . import _runtime

# Library module -> the agent's module whose on_import(library) adapts it. The agent's modules are compiled and
# imported only when the app imports the library (a web process never loads the Celery hooks).
HOOKS = (("sqlalchemy", "sqlalchemy_hooks"), ("flask", "flask_hooks"), ("flask_caching", "caching_hooks"),
         ("celery.signals", "celery_hooks"), ("kombu.transport.redis", "kombu_hooks"))
_hooks = {}  # module name -> [hook(module)]


def _run(name, module):
    for hook in _hooks.get(name, ()):
        _runtime.guarded("%s hook" % name)(hook)(module)


def _lazy(agent_module):
    def hook(library):
        from importlib import import_module

        import_module("%s.%s" % (__package__, agent_module)).on_import(library)
    return hook


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
    """First on sys.meta_path: for a hooked name, asks the finders after it for the module's spec (with the
    arguments the import system gave) and wraps its loader."""

    def find_spec(self, name, path=None, target=None):
        if name not in _hooks:
            return None
        finders = sys.meta_path
        after = finders[finders.index(self) + 1:] if self in finders else finders
        for finder in after:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(name, spec.loader)
        return spec


def when_imported(name, hook):
    _hooks.setdefault(name, []).append(hook)
    if name in sys.modules:  # imported before the agent started
        _runtime.guarded("%s hook" % name)(hook)(sys.modules[name])


def install():
    sys.meta_path.insert(0, _Finder())
    for library, agent_module in HOOKS:
        when_imported(library, _lazy(agent_module))
