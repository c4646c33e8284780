"""One limit per process on the connections open to the budgeted database server, whatever opens them.

Lowering pool_size/max_overflow bounds one QueuePool. A process can also open connections that no pool size
counts: a NullPool engine (one connection per checkout), several engines to the same server (Flask-SQLAlchemy
binds, an engine per blueprint or per request), a SingletonThreadPool. The budget counts a process as
pool_size + max_overflow connections, so that is the number of DBAPI connections this process may hold to the
server at once, across every engine: a new connection beyond it waits, like a QueuePool checkout does, up to
pool_timeout, then fails with SQLAlchemy's own TimeoutError.

A connection stops counting LINGER_SECONDS after its DBAPI connection object is freed (weakref.finalize: at once in CPython when
the pool drops a closed connection), or, checked while a new connection waits, when it reports itself closed
(`closed`, psycopg 2 and 3, at two sweeps in a row): a closed connection kept alive by a reference cycle cannot
hold a place. Never
earlier: SQLAlchemy's pool "close" event runs before the close, and counting from it would let the process
briefly hold one more connection than its limit.
"""

import collections
import os
import threading
import time
import weakref

# While waiting for a place, look for connections closed outside the pool this often.
_SWEEP_SECONDS = 0.25
# A place stays taken this long after its connection is gone: the server process of a closed connection is
# still counted by PostgreSQL (pg_stat_activity, max_connections) until it has exited, a few milliseconds
# after the client's close; reopening at once would briefly put the process one over its limit at the server.
LINGER_SECONDS = 0.025


class ConnectionLimit(object):
    def __init__(self, server, limit, timeout, timeout_error=TimeoutError):
        self.server = server
        self.limit = limit
        self.timeout = timeout
        self.timeout_error = timeout_error
        self.untracked = 0  # connections whose driver refuses weak references
        self.overdrafts = 0  # connections opened over the limit by a thread that already held one
        self._open = {}  # id(connection) -> weak reference to it
        self._opening = 0  # places taken by connections being opened
        self._lingering = collections.deque()  # when each place let go recently becomes free
        self._seen_closed = set()  # keys of open connections that said `closed` at the last sweep
        self._idle_closers = []  # per pool: close one idle pooled connection, True if it did
        self._reset_lock()
        if hasattr(os, "register_at_fork"):  # a forked worker must not inherit a lock held by another thread
            os.register_at_fork(after_in_child=self._reset_lock)

    def _reset_lock(self):
        # Reentrant: a finalizer can run during garbage collection inside our own critical section.
        self._changed = threading.Condition(threading.RLock())

    def add_idle_closer(self, close_one_idle):
        """A pool's idle connections hold places: at the limit, a waiter closes one (the pool reopens it when
        next needed) instead of waiting for pool_timeout while another engine's pool sits on connections."""
        with self._changed:
            self._idle_closers.append(close_one_idle)

    def held(self):
        """Places taken: connections open or being opened, and places let go less than LINGER_SECONDS ago."""
        with self._changed:
            now = time.monotonic()
            while self._lingering and self._lingering[0] <= now:
                self._lingering.popleft()
            return len(self._open) + self._opening + len(self._lingering)

    def open(self, connect, nested=False):
        """Run connect() when a place is free (waiting up to the timeout), and count what it returns.

        `nested`: the calling thread already has a connection to the server checked out. Waiting could only
        end in a timeout (the places it waits for may all be held by threads waiting like it, itself
        included), so such a connection is opened at once, over the limit if need be, and counted in
        `overdrafts` for the caller to report: the app needs more than one connection per thread, which no
        per-thread plan gives it."""
        if not self._take_place(wait=not nested):
            self.overdrafts += 1
        try:
            connection = connect()
        except BaseException:
            with self._changed:
                self._opening -= 1
                self._changed.notify()
            raise
        key = id(connection)
        try:
            reference = weakref.ref(connection)
            weakref.finalize(connection, self._forget, key, reference)
        except TypeError:  # a driver whose connections cannot be tracked: not counted (the caller reports it)
            reference = None
            self.untracked += 1
        with self._changed:
            self._opening -= 1
            if reference is not None:
                self._open[key] = reference
            self._changed.notify()
        return connection

    def _forget(self, key, reference):
        with self._changed:
            if self._open.get(key) is reference:
                self._let_go(key)

    def _let_go(self, key):
        del self._open[key]
        self._seen_closed.discard(key)
        self._lingering.append(time.monotonic() + LINGER_SECONDS)
        self._changed.notify()

    def _take_place(self, wait=True):
        """Take a place for a connection being opened; False when it is over the limit (wait=False only)."""
        deadline = time.monotonic() + self.timeout
        with self._changed:
            while self.held() >= self.limit:
                self._sweep()
                if self.held() >= self.limit and self._close_one_idle():
                    self._sweep()
                if self.held() < self.limit:
                    break
                if not wait:
                    self._opening += 1
                    return False
                now = time.monotonic()
                if now >= deadline:
                    raise self.timeout_error(
                        "flaskapp-agent: this process already holds %d connections to %s:%s, the limit of the "
                        "connection plan (pool_size + max_overflow); waited %ss for one to close"
                        % (self.held(), self.server[0], self.server[1], self.timeout))
                soonest = self._lingering[0] - now if self._lingering else _SWEEP_SECONDS
                self._changed.wait(max(0.001, min(deadline - now, _SWEEP_SECONDS, soonest)))
            self._opening += 1
            return True

    def _close_one_idle(self):
        for close_one_idle in list(self._idle_closers):
            try:
                if close_one_idle():
                    return True
            except Exception:
                self._idle_closers.remove(close_one_idle)
        return False

    def _sweep(self):
        """Let go of connections freed, or seen closed at two sweeps in a row (psycopg2 says `closed` before its
        close has finished: one sighting could free a place while the socket is still open)."""
        for key, reference in list(self._open.items()):
            connection = reference()
            if connection is None:
                self._let_go(key)
            elif _reports_closed(connection):
                if key in self._seen_closed:
                    self._let_go(key)
                else:
                    self._seen_closed.add(key)


def _reports_closed(connection):
    try:
        return bool(getattr(connection, "closed", False))
    except Exception:
        return False
