"""MQTT over paho-mqtt: a publisher for the device loop and a subscriber for serve."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from .errors import EdgeaeError, require


def parse_broker(url: str) -> tuple[str, int]:
    """'host:port' (or 'host', port 1883) -> (host, port)."""
    host, _, port = url.rpartition(":") if ":" in url else (url, "", "1883")
    try:
        if 0 < int(port) < 2**16:
            return host or "localhost", int(port)
    except ValueError:
        pass
    raise EdgeaeError(f"--mqtt must be HOST:PORT with a port in 1..65535, got {url!r}")


def check_topic(topic: str, wildcards: bool) -> str:
    """`topic` if it is a valid MQTT topic name (to publish: no wildcards) or, with `wildcards`,
    a topic filter (to subscribe: '+' fills a whole level, '#' only the last); else one line."""
    levels = topic.split("/")
    ok = bool(topic) and "\0" not in topic and all(
        ("+" not in level and "#" not in level) or (wildcards and (level == "+" or (level == "#" and i == len(levels) - 1)))
        for i, level in enumerate(levels))  # fmt: skip
    if not ok:
        need = "a topic filter ('+' fills a whole level, '#' only the last)" if wildcards else "a topic without wildcards (+, #)"
        raise EdgeaeError(f"--topic must be {need}, got {topic!r}")
    return topic


def _client(client_id: str):
    paho = require("paho.mqtt.client", "serve")
    return paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id), paho


def _connect(client, url: str, timeout: float = 10.0) -> None:
    host, port = parse_broker(url)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as e:
        raise EdgeaeError(f"cannot connect to the MQTT broker at {host}:{port} ({e.strerror or e})") from None
    client.loop_start()
    deadline = time.monotonic() + timeout
    while not client.is_connected():
        if time.monotonic() > deadline:
            client.loop_stop()
            raise EdgeaeError(f"the MQTT broker at {host}:{port} did not accept the connection")
        time.sleep(0.01)


class _Connection:
    """A paho client connected to `url`, reconnecting by itself when the broker goes away, and
    telling `notify` of the loss and of the return (a restarted broker included), so that neither
    passes unsaid. Hooks for subclasses: `_prepare` runs before the first connect, `_connected`
    on every connect."""

    def __init__(self, url: str, client_id: str = "", notify=lambda message: None):
        self.client, _ = _client(client_id)
        self.client.reconnect_delay_set(1, 10)
        self._connects, self._closing = 0, False

        def connected(client, userdata, flags, reason, properties):
            self._connects += 1
            self._connected()
            if self._connects > 1:
                notify(f"reconnected to the MQTT broker at {url}")

        def disconnected(client, userdata, flags, reason, properties):
            if not self._closing:
                notify(f"lost the MQTT broker at {url} ({reason}); reconnecting")

        self.client.on_connect, self.client.on_disconnect = connected, disconnected
        self._prepare()
        _connect(self.client, url)

    def _prepare(self) -> None:
        pass

    def _connected(self) -> None:
        pass

    def close(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()


class Publisher(_Connection):
    """Publishes packets with QoS 1 and waits until the broker has them (paho holds and resends
    them while the broker is away)."""

    def __init__(self, url: str, client_id: str = "", notify=lambda message: None):
        super().__init__(url, client_id, notify)
        self._pending = []

    def publish(self, topic: str, payload: bytes) -> None:
        self._pending.append(self.client.publish(topic, payload, qos=1))
        if len(self._pending) >= 100:
            self.flush()

    def flush(self) -> None:
        for info in self._pending:
            info.wait_for_publish(timeout=30)
            if not info.is_published():
                raise EdgeaeError("the MQTT broker did not acknowledge a packet in 30 s")
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        super().close()


class Subscriber(_Connection):
    """Subscribes to a topic pattern; messages land in `self.messages` as (topic, payload, t).
    A restarted broker has forgotten the subscription, so it is made on every connect. (What the
    broker receives while no subscription exists is delivered to no one.)"""

    def __init__(self, url: str, pattern: str, client_id: str = "", qos: int = 1, notify=lambda message: None):
        self.messages: queue.Queue = queue.Queue()
        self._pattern, self._qos, self._subscribed = pattern, qos, threading.Event()
        super().__init__(url, client_id, notify)
        if not self._subscribed.wait(10):
            raise EdgeaeError(f"the MQTT broker did not confirm the subscription to {pattern!r}")

    def _prepare(self) -> None:
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, bytes(msg.payload), time.time()))
        self.client.on_subscribe = lambda *a: self._subscribed.set()

    def _connected(self) -> None:
        self.client.subscribe(self._pattern, qos=self._qos)


@contextlib.contextmanager
def local_broker(workdir: Path, timeout: float = 10.0, port: int | None = None):
    """A Mosquitto broker (Debian's package) on a free loopback port (or `port`, to restart one),
    for tests and benchmarks. Yields its 'host:port'; stops it on exit, and when it does not
    answer within `timeout` s."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if exe is None:
        raise EdgeaeError("mosquitto is not installed (bash tools/dev test installs it: apt-get install mosquitto)")
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    conf = Path(workdir) / f"mosquitto-{port}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                    if c.getsockname() != c.getpeername():  # not a TCP self-connect before mosquitto listens
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.terminate()  # before reading its stderr: a running broker never closes it
                err = proc.communicate(timeout=10)[1].decode().strip()
                raise EdgeaeError(f"mosquitto did not start on port {port} within {timeout:g} s: {err[-300:] or 'no message'}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
