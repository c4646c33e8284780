# sitecustomize of flaskapp-agent (mounted as sitecustomize.py, first on PYTHONPATH). Python's `site` imports
# the first `sitecustomize` on sys.path, so this one runs the agent and then the image's own, if it has one
# (Debian's python3 ships one), the way OpenTelemetry's auto-instrumentation chains it.
import os
import sys


def _run_agent():
    try:
        import flaskapp_agent

        flaskapp_agent.start()
    except Exception as error:  # fail open: the app runs as without the agent
        sys.stderr.write("flaskapp-agent: not started (%s: %s)\n" % (type(error).__name__, error))


def _chain_image_sitecustomize():
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if os.environ.get("FLASKAPP_AGENT", "on") != "off":
    _run_agent()
try:
    _chain_image_sitecustomize()
except Exception as error:
    sys.stderr.write("flaskapp-agent: the image's sitecustomize failed (%s: %s)\n" % (type(error).__name__, error))
