"""paho-mqtt v2 clients for the tests: connect/subscribe/publish that wait for their acks, and a
received-message list with wait-for-N helpers. Nothing here sleeps to synchronize: every wait is
on a condition with a deadline."""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

V311, V5 = 4, 5
PROTO = {V311: mqtt.MQTTv311, V5: mqtt.MQTTv5}
DEFAULT_TIMEOUT = 10.0
_ids = itertools.count(1)


def props(packet_type: int, **kw) -> Properties:
    """Properties(PacketTypes.X) with the given fields set, e.g. props(PUBLISH, UserProperty=[..])."""
    p = Properties(packet_type)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


PUBLISH_PROPS = PacketTypes.PUBLISH
CONNECT_PROPS = PacketTypes.CONNECT
SUBSCRIBE_PROPS = PacketTypes.SUBSCRIBE
DISCONNECT_PROPS = PacketTypes.DISCONNECT
WILL_PROPS = PacketTypes.WILLMESSAGE


class ConnectFailed(AssertionError):
    pass


class Client:
    """A paho client on its own network thread. `received` is every message, in arrival order."""

    def __init__(self, broker, version: int = V5, client_id: str | None = None,
                 transport: str = "tcp", tls: tuple | None = None, clean: bool = True,
                 session_expiry: int | None = None, keepalive: int = 30, will: dict | None = None,
                 connect_props: dict | None = None, username: str | None = None,
                 password: str | None = None, port: int | None = None, tls_ca: str | None = None):
        self.broker = broker
        self.version = version
        self.client_id = client_id if client_id is not None else f"tc-{next(_ids)}-{int(time.time()*1000)%100000}"
        self.transport = transport
        self.clean = clean
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.connect_props = connect_props or {}
        kwargs = dict(callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.client_id,
                      protocol=PROTO[version], transport=transport, reconnect_on_failure=False)
        if version == V311:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(**kwargs)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        self.use_tls = tls is not None
        if tls is not None:
            cert, key = tls
            self.c.tls_set(ca_certs=str(tls_ca or broker.ca_pem), certfile=str(cert) if cert else None,
                           keyfile=str(key) if key else None, cert_reqs=ssl.CERT_REQUIRED)
        if username is not None:
            self.c.username_pw_set(username, password)
        if will:
            wp = None
            if will.get("props"):
                wp = props(WILL_PROPS, **will["props"])
            self.c.will_set(will["topic"], will.get("payload", b""), will.get("qos", 0),
                            will.get("retain", False), properties=wp)
        self.port = port if port is not None else broker.port(transport, tls is not None)
        self.cv = threading.Condition()
        self.received: list[mqtt.MQTTMessage] = []
        self.connack = None  # (reason_code:int, session_present:bool, properties)
        self.disconnects: list = []  # (reason_code:int, properties)
        self.subacks: dict[int, list] = {}
        self.unsubacks: dict[int, list] = {}
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.connected = False
        self.looping = False

    # -- callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cv:
            self.connack = (reason_code.value, bool(flags.session_present), properties)
            self.connected = reason_code.value == 0
            self.cv.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.cv:
            self.disconnects.append((reason_code.value if hasattr(reason_code, "value") else reason_code, properties))
            self.connected = False
            self.cv.notify_all()

    def _on_message(self, client, userdata, msg):
        msg.timestamp = time.monotonic()  # when it arrived (paho stamps only outgoing messages)
        with self.cv:
            self.received.append(msg)
            self.cv.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cv:
            self.subacks[mid] = [rc.value for rc in reason_codes]
            self.cv.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cv:
            codes = reason_codes if isinstance(reason_codes, list) else [reason_codes]
            self.unsubacks[mid] = [getattr(rc, "value", rc) for rc in codes]
            self.cv.notify_all()

    def _wait(self, pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"[{self.client_id}] timed out after {timeout}s waiting for {what}")
                self.cv.wait(min(left, 0.2))

    # -- operations
    def connect(self, timeout: float = DEFAULT_TIMEOUT, expect_ok: bool = True):
        """Connect and wait for CONNACK. Returns (reason_code, session_present, properties)."""
        cp = None
        if self.version == V5:
            fields = dict(self.connect_props)
            if self.session_expiry is not None:
                fields["SessionExpiryInterval"] = self.session_expiry
            if fields:
                cp = props(CONNECT_PROPS, **fields)
        self.connack = None
        kw = {"properties": cp}
        if self.version == V5:
            kw["clean_start"] = self.clean
        self.c.connect(self.broker.host, self.port, keepalive=self.keepalive, **kw)
        if not self.looping:
            self.c.loop_start()
            self.looping = True
        self._wait(lambda: self.connack is not None or self.disconnects, timeout, "CONNACK")
        if self.connack is None:
            raise ConnectFailed(f"[{self.client_id}] connection closed before CONNACK: {self.disconnects}")
        if expect_ok and self.connack[0] != 0:
            raise ConnectFailed(f"[{self.client_id}] CONNACK refused: {self.connack}")
        return self.connack

    @property
    def session_present(self) -> bool:
        return self.connack[1]

    @property
    def connack_props(self):
        return self.connack[2]

    def subscribe(self, topic, qos: int = 1, options: SubscribeOptions | None = None,
                  sub_id: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """Subscribe (topic may be a list of (filter, qos|SubscribeOptions)); wait for SUBACK;
        return the reason codes."""
        sp = props(SUBSCRIBE_PROPS, SubscriptionIdentifier=sub_id) if sub_id is not None else None
        if isinstance(topic, list):
            rc, mid = self.c.subscribe(topic, properties=sp)
        elif options is not None:
            rc, mid = self.c.subscribe(topic, options=options, properties=sp)
        else:
            rc, mid = self.c.subscribe(topic, qos=qos, properties=sp)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        return self._wait(lambda: self.subacks.get(mid), timeout, f"SUBACK for {topic}")

    def unsubscribe(self, topic, timeout: float = DEFAULT_TIMEOUT):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        self._wait(lambda: mid in self.unsubacks, timeout, "UNSUBACK")
        return self.unsubacks[mid]

    def publish(self, topic: str, payload=b"", qos: int = 0, retain: bool = False,
                properties: dict | None = None, wait: bool = True, timeout: float = DEFAULT_TIMEOUT):
        """Publish; for QoS 1/2 wait until the flow completes (PUBACK / PUBCOMP)."""
        p = props(PUBLISH_PROPS, **properties) if properties else None
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=p)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        if wait:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"[{self.client_id}] publish to {topic} not acknowledged within {timeout}s"
        return info

    def publish_refused_by_disconnect(self, topic: str, payload=b"", qos: int = 0,
                                      timeout: float = DEFAULT_TIMEOUT) -> None:
        """Publish what the server must answer by closing the connection (MQTT 3.1.1 has no
        other way to refuse a PUBLISH), and wait for the close. paho may already see the close
        while it is still writing the packet and then reports "no connection" for it: both are
        the expected outcome, anything else is not."""
        info = self.c.publish(topic, payload, qos=qos)
        assert info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN), \
            f"publish failed locally: {info.rc}"
        self.wait_disconnected(timeout)

    def sync(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Round trip (a QoS 1 publish to a topic nobody uses, waiting for its PUBACK): everything
        this client sent before, QoS 0 included, has been processed by the broker."""
        self.publish(f"sync/{self.client_id}", b"", qos=1, timeout=timeout)

    def disconnect(self, reason_code: int | None = None, properties: dict | None = None,
                   timeout: float = DEFAULT_TIMEOUT) -> None:
        """Clean DISCONNECT and wait for the connection to close."""
        if not self.connected:
            self.stop()
            return
        dp = props(DISCONNECT_PROPS, **properties) if properties else None
        if reason_code is not None and self.version == V5:
            from paho.mqtt.reasoncodes import ReasonCode
            rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reason_code)
            self.c.disconnect(reasoncode=rc, properties=dp)
        else:
            self.c.disconnect(properties=dp)
        self._wait(lambda: not self.connected, timeout, "disconnect")
        self.stop()

    def drop(self) -> None:
        """Close the network connection without DISCONNECT (an abnormal disconnect for the broker)."""
        sock = self.c.socket()
        self.c.loop_stop()
        self.looping = False
        if sock is not None:
            try:
                raw = sock if isinstance(sock, socket.socket) else getattr(sock, "_socket", sock)
                raw.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass
            try:
                sock.close()
            except OSError:
                pass
        self.connected = False

    def stop(self) -> None:
        if self.looping:
            self.c.loop_stop()
            self.looping = False

    def close(self) -> None:
        """Teardown: disconnect if connected, stop the thread. Never raises."""
        try:
            if self.connected:
                self.c.disconnect()
        except Exception:  # noqa: BLE001 - teardown
            pass
        try:
            self.stop()
        except Exception:  # noqa: BLE001
            pass

    # -- received messages
    def matching(self, pred=None, topic: str | None = None) -> list:
        with self.cv:
            msgs = list(self.received)
        if topic is not None:
            msgs = [m for m in msgs if m.topic == topic]
        if pred is not None:
            msgs = [m for m in msgs if pred(m)]
        return msgs

    def wait_messages(self, n: int, timeout: float = DEFAULT_TIMEOUT, topic: str | None = None,
                      pred=None) -> list:
        """Wait until at least `n` messages (matching topic/pred) have arrived; return them all."""
        def enough():
            m = self.matching(pred, topic)
            return m if len(m) >= n else None
        try:
            return self._wait(enough, timeout, f"{n} message(s) on {topic or 'any topic'}")
        except AssertionError as e:
            got = [(m.topic, m.payload[:40]) for m in self.matching(pred, topic)]
            raise AssertionError(f"{e}; got {len(got)}: {got}") from None

    def wait_message(self, timeout: float = DEFAULT_TIMEOUT, topic: str | None = None, pred=None):
        return self.wait_messages(1, timeout, topic, pred)[0]

    def wait_payload(self, payload: bytes, timeout: float = DEFAULT_TIMEOUT):
        return self.wait_message(timeout, pred=lambda m: m.payload == payload)

    def wait_disconnected(self, timeout: float = DEFAULT_TIMEOUT):
        self._wait(lambda: not self.connected and self.disconnects, timeout, "server-side disconnect")
        return self.disconnects[-1]

    def payloads(self, topic: str | None = None, pred=None) -> list[bytes]:
        return [m.payload for m in self.matching(pred, topic)]


_fence_ids = itertools.count(1)


def fence(sub: Client, pub: Client, topic: str, qos: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Publish a marker from `pub` on `topic` (which `sub` is subscribed to) and wait for `sub` to
    get it: whatever `pub` published before it, in order, has been routed by then. Used to make
    "X was not delivered" checks deterministic instead of waiting an arbitrary time. Use the QoS
    of the messages being fenced: paho hands over a QoS 2 message only at PUBREL, so a lower-QoS
    marker may overtake QoS 2 messages still in their handshake."""
    marker = f"fence-{next(_fence_ids)}-{time.monotonic_ns()}".encode()
    pub.publish(topic, marker, qos=qos)
    sub.wait_payload(marker, timeout)


def sub_opts(qos=1, no_local=False, retain_as_published=False, retain_handling=0) -> SubscribeOptions:
    return SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=retain_as_published,
                            retainHandling=retain_handling)
