"""MQTT over paho-mqtt: a publisher for the device loop and a subscriber for serve."""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from .errors import EdgeaeError, require


PASSWORD_ENV = "EDGEAE_MQTT_PASSWORD"
BROKER_FORM = "[mqtt://|mqtts://][USER@]HOST[:PORT]"


@dataclass(frozen=True)
class Broker:
    """Where and how to reach an MQTT broker. `mqtts` is TLS, the broker's certificate checked
    against the system's CAs (or the file in $SSL_CERT_FILE); a user's password comes from the
    address or, kept off the command line, from $EDGEAE_MQTT_PASSWORD."""

    host: str
    port: int
    tls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """host:port, for messages (never the password)."""
        return f"{self.host}:{self.port}"


def parse_broker(url: str) -> Broker:
    """`[mqtt://|mqtts://][user[:password]@]host[:port]` -> `Broker`; port 1883, or 8883 for mqtts."""
    shown = re.sub(r"^((?:\w+://)?[^/@:]*):[^/@]*@", r"\1:***@", url)  # an error message never repeats a password
    scheme = url.split("://", 1)[0] if "://" in url else "mqtt"
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if scheme not in ("mqtt", "mqtts") or port == 0 or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise EdgeaeError(f"--mqtt must be {BROKER_FORM} (a port in 1..65535), got {shown!r}")
    tls = scheme == "mqtts"
    user = parts.username or None
    password = parts.password if parts.password is not None else os.environ.get(PASSWORD_ENV) if user else None
    return Broker(parts.hostname, port or (8883 if tls else 1883), tls, user, password)


def check_topic(topic: str, wildcards: bool, option: str = "--topic") -> str:
    """`topic` if it is a valid MQTT topic name (to publish: no wildcards) or, with `wildcards`,
    a topic filter (to subscribe: '+' fills a whole level, '#' only the last); else one line
    naming `option`."""
    levels = topic.split("/")
    ok = bool(topic) and "\0" not in topic and all(
        ("+" not in level and "#" not in level) or (wildcards and (level == "+" or (level == "#" and i == len(levels) - 1)))
        for i, level in enumerate(levels))  # fmt: skip
    if not ok:
        need = "a topic filter ('+' fills a whole level, '#' only the last)" if wildcards else "a topic without wildcards (+, #)"
        raise EdgeaeError(f"{option} must be {need}, got {topic!r}")
    return topic


def sensor_topic(template: str, sensor: int, option: str = "--topic") -> str:
    """`template` with {sensor} filled, checked as a topic to publish to (`check_topic`); other
    braces are a one-line error naming `option`."""
    try:
        topic = template.format(sensor=sensor)
    except (KeyError, IndexError, ValueError):
        raise EdgeaeError(f"{option} may use only {{sensor}} in braces, got {template!r}") from None
    return check_topic(topic, wildcards=False, option=option)


def _client(client_id: str, keep_session: bool):
    """A paho client (MQTT 3.1.1); with `keep_session` (which needs a `client_id`) the broker keeps
    its session when it disconnects (clean session off). Without a client id, paho makes one up."""
    paho = require("paho.mqtt.client", "serve")
    return paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not keep_session)


class _Connection:
    """A paho client connected to `url`, reconnecting by itself when the broker goes away, and
    telling `notify` of the loss and of the return (a restarted broker included), so that neither
    passes unsaid. Hooks for subclasses: `_prepare` runs before the first connect, `_connected`
    on every connect. With `keep_session`, the broker keeps the session of `client_id` (`_client`).
    With `status_topic`, the client's availability is kept there, retained: 'online' on every
    connect, 'offline' on `close`, and 'offline' from the broker (MQTT's last will) when the
    connection is lost without a `close` (a crash, a kill, the network)."""

    def __init__(self, url: str, client_id: str = "", notify=lambda message: None, timeout: float = 10.0,
                 keep_session: bool = False, status_topic: str | None = None):  # fmt: skip
        self.broker = broker = parse_broker(url)
        self.client = _client(client_id, keep_session)
        self.client.reconnect_delay_set(1, 10)
        self._status_topic = status_topic
        if status_topic is not None:
            self.client.will_set(status_topic, b"offline", qos=1, retain=True)
        if broker.user:
            self.client.username_pw_set(broker.user, broker.password)
        if broker.tls:
            self.client.tls_set()
        self._connects, self._closing, self._refused = 0, False, None
        where = broker.address

        def connected(client, userdata, flags, reason, properties):
            if reason.is_failure:
                self._refused = reason
                return
            self._connects += 1
            if status_topic is not None:
                client.publish(status_topic, b"online", qos=1, retain=True)
            self._connected()
            if self._connects > 1:
                notify(f"reconnected to the MQTT broker at {where}")
            elif flags.session_present:
                notify(f"resumed session {client_id!r} on the MQTT broker at {where}: what it kept meanwhile comes first")

        def disconnected(client, userdata, flags, reason, properties):
            if not self._closing and self._connects:
                notify(f"lost the MQTT broker at {where} ({reason}); reconnecting")

        self.client.on_connect, self.client.on_disconnect = connected, disconnected
        self._prepare()
        try:
            self.client.connect(broker.host, broker.port, keepalive=30)
        except OSError as e:  # ssl.SSLError (a certificate not trusted) included
            raise EdgeaeError(f"cannot connect to the MQTT broker at {where} ({e.strerror or e})") from None
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while not self.client.is_connected():
            if self._refused is not None or time.monotonic() > deadline:
                self.client.loop_stop()
                kept = f"; it was asked to keep the session of client id {client_id!r}, which some brokers refuse" if keep_session else ""
                why = (f" ({self._refused}){kept}" if self._refused is not None else
                       f" within {timeout:g} s" + ("" if broker.tls else " (a TLS port needs mqtts://)"))  # fmt: skip
                raise EdgeaeError(f"the MQTT broker at {where} did not accept the connection{why}")
            time.sleep(0.01)

    def _prepare(self) -> None:
        pass

    def _connected(self) -> None:
        pass

    def close(self) -> None:
        self._closing = True
        if self._status_topic is not None and self.client.is_connected():
            self.client.publish(self._status_topic, b"offline", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()


class Publisher(_Connection):
    """Publishes packets with QoS 1; a packet counts as sent once the broker acknowledges it.

    While the broker is away, paho holds the packets and resends them on reconnect; up to
    `backlog` may wait so (at 1 packet/s, close to 3 hours), and once that many do, `publish` waits
    for the broker. Connected, at most `PACE` are in flight, so that a fast source (a file) is
    paced by the broker. Acknowledgements are counted here by message id: paho's own handle on a
    packet published while the broker was away says 'not connected' for good, resent or not.
    `timeout` s without an acknowledgement, while waiting for one, is an error, and so is a wait
    ended by `give_up`; `reason` says which. `close` returns the packets never acknowledged, for
    the caller to keep."""

    PACE = 100

    def __init__(self, url: str, client_id: str = "", notify=lambda message: None, backlog: int = 10_000,
                 timeout: float = 30.0):  # fmt: skip
        self.backlog, self.timeout = backlog, timeout
        self.reason: str | None = None  # why waiting for acknowledgements ended before they came
        self._unacked: dict[int, bytes] = {}  # message id -> packet, in the order published
        self._acked: set[int] = set()  # ids acknowledged, until matched with `_unacked`
        self._progress = threading.Condition()
        super().__init__(url, client_id, notify)

    def _prepare(self) -> None:
        def acknowledged(client, userdata, mid, reason, properties):
            with self._progress:
                self._acked.add(mid)
                self._progress.notify_all()

        self.client.on_publish = acknowledged

    def publish(self, topic: str, payload: bytes) -> None:
        mid = self.client.publish(topic, payload, qos=1).mid
        with self._progress:
            self._unacked[mid] = payload
            self._wait(lambda: len(self._unacked) < (self.PACE if self.client.is_connected() else self.backlog))

    def flush(self) -> None:
        """Wait until the broker has acknowledged every packet."""
        with self._progress:
            self._wait(lambda: not self._unacked)

    def _wait(self, done) -> None:
        """Until `done()` (called under the lock); an EdgeaeError after `timeout` s with no
        acknowledgement, or once `give_up` is called."""
        deadline = time.monotonic() + self.timeout
        while True:
            matched = self._acked & self._unacked.keys()  # an id may be acknowledged before it is recorded
            for mid in matched:
                del self._unacked[mid]
            self._acked -= matched
            if done():
                return
            if matched:
                deadline = time.monotonic() + self.timeout
            elif time.monotonic() > deadline:
                self.reason = f"the MQTT broker at {self.broker.address} acknowledged no packet in {self.timeout:g} s"
            if self.reason:
                raise EdgeaeError(self.reason)
            self._progress.wait(0.1)

    def give_up(self, why: str) -> None:
        """End the wait for acknowledgements within 0.1 s, as an error saying `why`. Only sets a
        flag: safe in a signal handler."""
        self.reason = self.reason or why

    @property
    def waiting(self) -> int:
        """Packets published and not yet acknowledged."""
        with self._progress:
            return len(self._unacked)

    def close(self) -> list[bytes]:
        """Wait for the broker's acknowledgements (unless it already went `timeout` s without
        one), disconnect, and return the packets it never acknowledged, in order."""
        with contextlib.suppress(EdgeaeError):
            if not self.reason:
                self.flush()
        super().close()
        with self._progress:
            return list(self._unacked.values())


class Message(NamedTuple):
    """A message as received: `dup` when the broker sends it again (after a reconnect, one not
    acknowledged before); MQTT never passes a publisher's DUP flag on, so only the broker sets it."""

    topic: str | None
    payload: bytes
    received_at: float
    dup: bool = False


class Subscriber(_Connection):
    """Subscribes to a topic pattern; messages land in `self.messages` as `Message`s.
    A restarted broker has forgotten the subscription, so it is made on every connect. (What the
    broker receives while no subscription exists is delivered to no one.) With `keep_session` the
    subscription outlives the connection: the broker keeps the QoS 1 messages that arrive while
    the subscriber is away (as many as it is configured to hold) and delivers them when it is back.

    With `manual_ack`, a message is acknowledged to the broker only when its taker says it is safe
    (`take`, then `ack`): until then the broker holds it, and with `keep_session` sends it again
    after a crash. The broker sends only so many unacknowledged messages at once (Mosquitto's
    `max_inflight_messages`, 20 by default), which also keeps `messages` short."""

    ACK_BARRIER = "edgeae/ack-barrier"

    def __init__(self, url: str, pattern: str, client_id: str = "", qos: int = 1, notify=lambda message: None,
                 keep_session: bool = False, manual_ack: bool = False, status_topic: str | None = None):  # fmt: skip
        self.messages: queue.Queue = queue.Queue()
        self._receipts: collections.deque = collections.deque()  # (connection, id, QoS) per message put, in order
        self._pattern, self._qos, self._manual_ack, self._subscribed = pattern, qos, manual_ack, threading.Event()
        super().__init__(url, client_id, notify, keep_session=keep_session, status_topic=status_topic)
        if not self._subscribed.wait(10):
            raise EdgeaeError(f"the MQTT broker did not confirm the subscription to {pattern!r}")

    def _prepare(self) -> None:
        def received(client, userdata, msg):
            if self._manual_ack:
                self._receipts.append((self._connects, msg.mid, msg.qos))
            self.messages.put(Message(msg.topic, bytes(msg.payload), time.time(), bool(msg.dup)))

        self.client.manual_ack_set(self._manual_ack)
        self.client.on_message = received
        self.client.on_subscribe = lambda *a: self._subscribed.set()

    def _connected(self) -> None:
        self.client.subscribe(self._pattern, qos=self._qos)

    def take(self, most: int, wait: float) -> list[Message]:
        """Up to `most` messages, in order: waits up to `wait` s for the first, then takes only
        those already here."""
        taken: list = []
        try:
            taken.append(self.messages.get(timeout=wait) if wait > 0 else self.messages.get_nowait())
            while len(taken) < most:
                taken.append(self.messages.get_nowait())
        except queue.Empty:
            pass
        return taken

    def ack(self, n: int) -> None:
        """Acknowledge the next `n` messages taken, once they are stored or kept. One that came
        before a reconnect is not: its id may name another message by now (a kept session
        sends it again, marked `dup`, and its taker finds it is already stored)."""
        for _ in range(n):
            connection, mid, qos = self._receipts.popleft()
            if connection == self._connects:
                self.client.ack(mid, qos)

    def close(self) -> None:
        """Disconnect. With `manual_ack`, once the broker has answered an UNSUBSCRIBE of a filter
        no one holds (`ACK_BARRIER`), which it does after the acknowledgements sent before it: a
        socket closed while messages it was sent lie unread is reset, and a reset can lose what
        was written just before it. What is left in `messages` was never acknowledged."""
        if self._manual_ack and self.client.is_connected():
            answered = threading.Event()
            self.client.on_unsubscribe = lambda *a: answered.set()
            self.client.unsubscribe(self.ACK_BARRIER)
            answered.wait(5)
        super().close()


@contextlib.contextmanager
def local_broker(workdir: Path, timeout: float = 10.0, port: int | None = None, users: dict[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None, persistent: bool = False):  # fmt: skip
    """A Mosquitto broker (Debian's package) on a free loopback port (or `port`, to restart one),
    for tests and benchmarks; with `users` ({name: password}) it admits only them, with `tls`
    (certificate and key files) it speaks TLS, and `persistent`, it keeps its clients' sessions
    across a restart on the same port (in `workdir`). Yields its 'host:port'; stops it on exit, and when
    it does not answer within `timeout` s."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if exe is None:
        raise EdgeaeError("mosquitto is not installed (bash tools/dev test installs it: apt-get install mosquitto)")
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    conf = Path(workdir) / f"mosquitto-{port}.conf"
    lines = [f"listener {port} 127.0.0.1", "max_queued_messages 0", f"persistence {str(persistent).lower()}"]
    if persistent:
        lines += [f"persistence_location {Path(workdir).resolve()}/", f"persistence_file mosquitto-{port}.db"]
    if os.geteuid() == 0:  # started as root, mosquitto becomes user 'mosquitto', who cannot read `workdir`
        lines.append("user root")
    if tls:
        lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
    if users:
        passwords = Path(workdir) / f"mosquitto-{port}.passwd"
        passwords.write_text("")
        for name, password in users.items():
            subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-b", str(passwords), name, password], check=True)
        lines += ["allow_anonymous false", f"password_file {passwords}"]
    else:
        lines.append("allow_anonymous true")
    conf.write_text("\n".join(lines) + "\n")
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
