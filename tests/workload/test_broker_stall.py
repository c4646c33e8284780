"""A worker whose first broker connection stalls (accepted, then silent: what a new pod meets when its packets are
dropped until a network policy is programmed for it, or a NAT entry is lost) still takes the waiting tasks within
seconds — with the agent, which gives kombu's Redis transport timeouts. Without it the worker waits forever, and
only a liveness probe would restart it.

The stall is a relay in front of the real broker that answers nothing on its first connection and relays every
later one; the worker runs as its pod runs it (the rendered command, environment and agent volume)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from testsupport.stack import free_ports, scratch_stack

pytestmark = pytest.mark.workload

WORKER = "-worker-default"
TASKS = 5
# The agent's socket timeout (10 s) plus a reconnect and the worker's start; the liveness probe of a stalled
# worker fires only after 30-50 s more.
TAKEN_WITHIN_SECONDS = 30


class StallingRelay:
    """Accepts on `port`; the first `stalled` connections are held open and never answered, later ones are relayed
    to the broker both ways."""

    def __init__(self, port: int, upstream: int, stalled: int = 1):
        self.port, self.upstream, self.stalled = port, upstream, stalled
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            if self.accepted <= self.stalled:
                self.held.append(client)  # open, read by no one: the client's commands are ACKed, never answered
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for s in self.held:
            s.close()


@pytest.mark.parametrize("agent", [True, False], ids=["with-agent", "without-agent"])
def test_a_worker_whose_first_broker_connection_stalls_takes_the_tasks_within_seconds(agent):
    from celery import Celery

    with scratch_stack("flaskapp-stall-", {"monitoring": {"enabled": False}, "agent": {"enabled": agent}},
                       with_postgres=False, with_celery=False) as s:
        env = s.env_of(WORKER)
        broker = env["CELERY_BROKER_URL"]
        broker_port = s.ports["redis-broker"]
        relay = StallingRelay(free_ports(1)[0], broker_port)
        try:
            relayed = broker.replace(f":{broker_port}/", f":{relay.port}/")
            assert relayed != broker
            client = Celery(broker=broker, backend=env["CELERY_RESULT_BACKEND"])
            results = [client.send_task("shop.add", args=(i, 1)) for i in range(TASKS)]

            env_of = s.env_of  # the worker's pod sees the broker through the relay

            def through_relay(component, kind="Deployment"):
                seen = env_of(component, kind)
                return {**seen, "CELERY_BROKER_URL": relayed} if component == WORKER else seen
            s.env_of = through_relay
            started = time.monotonic()
            s.start_celery("worker", WORKER)
            deadline = started + TAKEN_WITHIN_SECONDS
            done = 0
            for result in results:
                try:
                    result.get(timeout=max(0.1, deadline - time.monotonic()))
                    done += 1
                except Exception:  # noqa: BLE001 - celery's TimeoutError: counted below
                    break
            took = time.monotonic() - started
            print(f"agent={agent}: {done}/{TASKS} tasks within {TAKEN_WITHIN_SECONDS} s ({took:.1f} s), "
                  f"{relay.accepted} connections to the relay, worker alive: {s.procs['worker'].poll() is None}")
            assert relay.accepted >= 1  # the worker did meet the stalled connection
            if agent:
                assert done == TASKS and s.procs["worker"].poll() is None  # recovered, not restarted
            else:
                assert done < TASKS  # the failure this guards against: stuck on the stalled connection
        finally:
            relay.close()
