"""What every hook shares: the settings from the environment, fail-open guards, the statsd sender and the
measured unit of work (one request or one task)."""

import contextvars
import functools
import os
import sys
import threading
import time

_reported = set()
_report_lock = threading.Lock()


def log(message):
    """One line on stderr, where `kubectl logs` finds it whatever logging the app configured."""
    try:
        sys.stderr.write("flaskapp-agent: %s\n" % message)
    except Exception:
        pass


def log_once(key, message):
    with _report_lock:
        if key in _reported:
            return
        _reported.add(key)
    log(message)


def fail_open(where, error):
    log_once(("error", where), "%s disabled after an error (%s: %s); the app runs as without it"
             % (where, type(error).__name__, error))


def guarded(where):
    """Run a hook; any error is logged once and swallowed (the app must never see the agent fail)."""
    def decorate(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as error:
                fail_open(where, error)
                return None
        return run
    return decorate


class Settings(object):
    """The operator's plan, as the env contract carries it (the FlaskApp's env ConfigMap and Secrets)."""

    def __init__(self, environ):
        self.environ = environ
        self.statsd = _address(environ.get("FLASKAPP_AGENT_STATSD", ""))
        self.n_plus_one = _int(environ.get("FLASKAPP_AGENT_N_PLUS_ONE"), 10)
        self.log_interval = _int(environ.get("FLASKAPP_AGENT_LOG_INTERVAL_SECONDS"), 300)
        self.engine_options = _json_object(environ.get("SQLALCHEMY_ENGINE_OPTIONS"))
        self.database_url = environ.get("DATABASE_URL") or None


def _int(text, default):
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _json_object(text):
    if not text:
        return None
    import json  # only in processes that have a plan to read

    value = json.loads(text)
    return value if isinstance(value, dict) else None


def _address(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


settings = None  # set by start()


class Statsd(object):
    """Metrics as DogStatsD-tagged statsd lines over UDP into the pod's statsd_exporter; nothing installed in the
    image. Lines are batched per process into datagrams of up to MAX_DATAGRAM bytes, sent at once when the last
    send is FLUSH_SECONDS old (so a quiet app's lines leave immediately) and by a flusher thread otherwise: one
    sendto for many requests under load. Sockets and threads belong to the process that made them (gunicorn and
    Celery fork after import). A full buffer or no exporter loses samples, never slows a request."""

    MAX_DATAGRAM = 4096
    FLUSH_SECONDS = 1.0

    def __init__(self, address):
        self.address = address
        self._lock = threading.Lock()
        self._pid = None
        self._sock = None
        self._buffer = []
        self._size = 0
        self._flushed = 0.0

    def send(self, lines):
        if not lines:
            return
        payload = "\n".join(lines)
        now = time.monotonic()
        with self._lock:
            if self._pid != os.getpid():
                self._start_in_this_process()
            if self._size + len(payload) >= self.MAX_DATAGRAM:
                self._send_locked(now)
            self._buffer.append(payload)
            self._size += len(payload) + 1
            if now - self._flushed >= self.FLUSH_SECONDS:
                self._send_locked(now)

    def flush(self):
        with self._lock:
            if self._pid == os.getpid():
                self._send_locked(time.monotonic())

    def _start_in_this_process(self):
        import socket  # at the first sample, not at interpreter start

        self._pid = os.getpid()
        self._buffer, self._size = [], 0  # what a parent buffered is the parent's to send
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        flusher = threading.Thread(target=self._flush_periodically, name="flaskapp-agent-statsd", daemon=True)
        flusher.start()

    def _flush_periodically(self):
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(self.FLUSH_SECONDS)
            self.flush()

    def _send_locked(self, now):
        self._flushed = now
        if not self._buffer:
            return
        data = "\n".join(self._buffer).encode("utf-8", "replace")
        self._buffer, self._size = [], 0
        try:
            self._sock.sendto(data, self.address)
        except OSError:
            pass


statsd = None  # a Statsd when FLASKAPP_AGENT_STATSD is set


def tag_value(text):
    """A DogStatsD tag value: its separators (`,` `|` `#` and newlines) replaced."""
    return str(text).replace(",", "_").replace("|", "_").replace("#", "_").replace("\n", " ")


class Unit(object):
    """One request or one task: its statements (for the N+1 check), their time, its cache lookups."""

    __slots__ = ("queries", "sql_seconds", "statements", "started", "cache_hits", "cache_misses")

    def __init__(self):
        self.queries = 0
        self.sql_seconds = 0.0
        self.statements = {}
        self.started = None
        self.cache_hits = 0
        self.cache_misses = 0

    def repeated_statement(self, threshold):
        """The statement run at least `threshold` times (an N+1 suspect), or None."""
        if self.queries < threshold:
            return None
        statement, count = max(self.statements.items(), key=lambda item: item[1])
        return (statement, count) if count >= threshold else None

    def lines(self, prefix, tags):
        """Statements and their time only for a unit that ran any: per request they are averaged over the
        duration histogram's count, so a unit without SQL needs no line of its own."""
        out = []
        if self.queries:
            out.append("%s.queries:%d|h|#%s" % (prefix, self.queries, tags))
            out.append("%s.sql_duration:%.3f|ms|#%s" % (prefix, self.sql_seconds * 1000.0, tags))
        if self.cache_hits:
            out.append("flaskapp.cache.lookups:%d|c|#%s,result:hit" % (self.cache_hits, tags))
        if self.cache_misses:
            out.append("flaskapp.cache.lookups:%d|c|#%s,result:miss" % (self.cache_misses, tags))
        return out


current_unit = contextvars.ContextVar("flaskapp_agent_unit", default=None)
_last_logged = {}


def n_plus_one_lines(unit, prefix, tags, where):
    """The N+1 counter line when `unit` repeated a statement; the statement is logged once per interval
    per place."""
    suspect = unit.repeated_statement(settings.n_plus_one)
    if suspect is None:
        return []
    statement, count = suspect
    now = time.monotonic()
    if now - _last_logged.get(where, -1e9) >= settings.log_interval:
        _last_logged[where] = now
        log("N+1 suspect in %s: one statement ran %d times in one unit of work: %s"
            % (where, count, " ".join(statement.split())[:500]))
    return ["%s.n_plus_one:1|c|#%s" % (prefix, tags)]


def count(metric, tags):
    if statsd is not None:
        statsd.send(["%s:1|c|#%s" % (metric, tags)])


def start():
    global settings, statsd
    if settings is not None:
        return
    settings = Settings(os.environ)
    if settings.statsd:
        import atexit

        statsd = Statsd(settings.statsd)
        atexit.register(statsd.flush)
    from . import imports

    imports.install()
