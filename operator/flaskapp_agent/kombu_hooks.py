"""kombu's Redis transport (Celery's broker client): a stalled broker connection ends in seconds, not never.

kombu leaves its Redis sockets without a timeout by default: a command whose reply never comes (a connection gone
half-open: packets dropped by a network policy not yet programmed for a new pod, a NAT or conntrack entry lost,
a broker pod gone without a FIN) blocks its caller forever. A worker stalled that way at start never reaches its
event loop and is only restarted by its liveness probe, a minute later; a web request publishing a task waits
forever. The agent gives the transport's channels defaults under which the connection is dropped and made again
(kombu and Celery retry it): blocking commands and connects time out, TCP keepalive probes notice a dead peer,
and kombu's own check of an overdue BRPOP reply (kombu >= 5.7) runs every 10 s instead of 25. These are the
class defaults of kombu's Redis Channel: anything the app sets in broker_transport_options still wins.
"""

import socket

from . import _runtime

# A command waits at most this long for its reply. Above the BRPOP server-side timeout kombu uses (1 s), and far
# above any healthy Redis command.
SOCKET_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
HEALTH_CHECK_SECONDS = 10
# Keepalive: first probe after 10 s idle, then every 5 s; 3 unanswered probes end the connection (25 s).
KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))


def on_import(redis_transport):
    channel = redis_transport.Channel
    defaults = {"socket_timeout": SOCKET_TIMEOUT_SECONDS, "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "socket_keepalive": True,
                "socket_keepalive_options": dict((getattr(socket, name), value) for name, value in KEEPALIVE
                                                 if hasattr(socket, name)) or None}
    changed = []
    for name, value in sorted(defaults.items()):
        if hasattr(channel, name) and getattr(channel, name) is None:  # the library's "not set"
            setattr(channel, name, value)
            changed.append(name)
    library_default = getattr(redis_transport, "DEFAULT_HEALTH_CHECK_INTERVAL", None)
    if library_default is not None and getattr(channel, "health_check_interval", None) == library_default \
            and library_default > HEALTH_CHECK_SECONDS:
        channel.health_check_interval = HEALTH_CHECK_SECONDS
        changed.append("health_check_interval")
    if changed:
        _runtime.log_once("kombu", "broker connections: %s set (a stalled connection is dropped and made again)"
                          % ", ".join(changed))
