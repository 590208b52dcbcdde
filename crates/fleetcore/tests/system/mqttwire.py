"""A tiny MQTT 3.1.1 / 5.0 encoder, decoder and raw socket client for packet-level tests.

Real clients (paho, mosquitto_pub) hide the packets; these tests need to see them and to send
packets no well-behaved client would send. Encoding is plain functions returning bytes, so a test
can splice or truncate them; `RawClient` reads whole packets back with a deadline.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

# Packet types (MQTT 5 §2.1.2, same numbers in 3.1.1).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)

TYPE_NAMES = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK",
    PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT", AUTH: "AUTH",
}

V31, V311, V5 = 3, 4, 5

# MQTT 5 properties: id -> (name, kind)
PROPS = {
    0x01: ("PayloadFormatIndicator", "byte"),
    0x02: ("MessageExpiryInterval", "u32"),
    0x03: ("ContentType", "str"),
    0x08: ("ResponseTopic", "str"),
    0x09: ("CorrelationData", "bin"),
    0x0B: ("SubscriptionIdentifier", "varint"),
    0x11: ("SessionExpiryInterval", "u32"),
    0x12: ("AssignedClientIdentifier", "str"),
    0x13: ("ServerKeepAlive", "u16"),
    0x15: ("AuthenticationMethod", "str"),
    0x16: ("AuthenticationData", "bin"),
    0x17: ("RequestProblemInformation", "byte"),
    0x18: ("WillDelayInterval", "u32"),
    0x19: ("RequestResponseInformation", "byte"),
    0x1A: ("ResponseInformation", "str"),
    0x1C: ("ServerReference", "str"),
    0x1F: ("ReasonString", "str"),
    0x21: ("ReceiveMaximum", "u16"),
    0x22: ("TopicAliasMaximum", "u16"),
    0x23: ("TopicAlias", "u16"),
    0x24: ("MaximumQoS", "byte"),
    0x25: ("RetainAvailable", "byte"),
    0x26: ("UserProperty", "pair"),
    0x27: ("MaximumPacketSize", "u32"),
    0x28: ("WildcardSubscriptionAvailable", "byte"),
    0x29: ("SubscriptionIdentifierAvailable", "byte"),
    0x2A: ("SharedSubscriptionAvailable", "byte"),
}
PROP_IDS = {name: (pid, kind) for pid, (name, kind) in PROPS.items()}
# Properties that may appear more than once; decoded as lists.
MULTI = {"UserProperty", "SubscriptionIdentifier"}


class MalformedError(Exception):
    """The bytes read back are not a well-formed MQTT packet."""


class Closed(Exception):
    """The peer closed the connection (EOF or reset)."""


# ---------------------------------------------------------------------------------------------
# primitive encoders

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def u8(n: int) -> bytes:
    return struct.pack("!B", n)


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def u32(n: int) -> bytes:
    return struct.pack("!I", n)


def mqtt_bytes(b: bytes) -> bytes:
    return u16(len(b)) + b


def mqtt_str(s: str | bytes) -> bytes:
    return mqtt_bytes(s.encode() if isinstance(s, str) else s)


def encode_props(props=None) -> bytes:
    """Properties as a length-prefixed block. `props` is a dict or a list of (name, value) pairs;
    UserProperty values are lists of (k, v); SubscriptionIdentifier may be an int or list."""
    if props is None:
        return varint(0)
    items = props.items() if isinstance(props, dict) else props
    body = bytearray()
    for name, value in items:
        pid, kind = PROP_IDS[name]
        values = value if (name in MULTI and isinstance(value, list)) else [value]
        for v in values:
            body += u8(pid)
            if kind == "byte":
                body += u8(v)
            elif kind == "u16":
                body += u16(v)
            elif kind == "u32":
                body += u32(v)
            elif kind == "varint":
                body += varint(v)
            elif kind == "str":
                body += mqtt_str(v)
            elif kind == "bin":
                body += mqtt_bytes(v)
            elif kind == "pair":
                body += mqtt_str(v[0]) + mqtt_str(v[1])
    return varint(len(body)) + bytes(body)


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return u8((ptype << 4) | flags) + varint(len(body)) + body


# ---------------------------------------------------------------------------------------------
# packet encoders

def connect(client_id: str = "", version: int = V311, clean: bool = True, keepalive: int = 60,
            will: dict | None = None, username: str | None = None, password: bytes | None = None,
            props=None, proto_name: str | None = None, proto_level: int | None = None) -> bytes:
    """CONNECT. `will` = dict(topic, payload, qos=0, retain=False, props=None)."""
    name = proto_name if proto_name is not None else ("MQIsdp" if version == V31 else "MQTT")
    level = proto_level if proto_level is not None else version
    flags = 0
    if clean:
        flags |= 0x02
    if will:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = mqtt_str(name) + u8(level) + u8(flags) + u16(keepalive)
    if version == V5:
        body += encode_props(props)
    body += mqtt_str(client_id)
    if will:
        if version == V5:
            body += encode_props(will.get("props"))
        body += mqtt_str(will["topic"]) + mqtt_bytes(_b(will.get("payload", b"")))
    if username is not None:
        body += mqtt_str(username)
    if password is not None:
        body += mqtt_bytes(password)
    return packet(CONNECT, 0, body)


def publish(topic: str | bytes, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
            dup: bool = False, pid: int | None = None, version: int = V311, props=None) -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = mqtt_str(topic)
    if qos > 0:
        body += u16(pid if pid is not None else 1)
    if version == V5:
        body += encode_props(props)
    body += _b(payload)
    return packet(PUBLISH, flags, body)


def _ack(ptype: int, pid: int, version: int, rc: int | None, props, flags: int = 0) -> bytes:
    body = u16(pid)
    if version == V5 and (rc not in (None, 0) or props):
        body += u8(rc or 0)
        if props:
            body += encode_props(props)
    return packet(ptype, flags, body)


def puback(pid, version=V311, rc=None, props=None) -> bytes:
    return _ack(PUBACK, pid, version, rc, props)


def pubrec(pid, version=V311, rc=None, props=None) -> bytes:
    return _ack(PUBREC, pid, version, rc, props)


def pubrel(pid, version=V311, rc=None, props=None) -> bytes:
    return _ack(PUBREL, pid, version, rc, props, flags=0x02)


def pubcomp(pid, version=V311, rc=None, props=None) -> bytes:
    return _ack(PUBCOMP, pid, version, rc, props)


def sub_options(qos=0, no_local=False, retain_as_published=False, retain_handling=0) -> int:
    return qos | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | (retain_handling << 4)


def subscribe(pid: int, filters, version: int = V311, props=None) -> bytes:
    """`filters`: list of (filter, options-byte) or a single filter string (QoS 0)."""
    if isinstance(filters, str):
        filters = [(filters, 0)]
    body = u16(pid)
    if version == V5:
        body += encode_props(props)
    for f, opts in filters:
        body += mqtt_str(f) + u8(opts)
    return packet(SUBSCRIBE, 0x02, body)


def unsubscribe(pid: int, filters, version: int = V311, props=None) -> bytes:
    body = u16(pid)
    if version == V5:
        body += encode_props(props)
    for f in filters:
        body += mqtt_str(f)
    return packet(UNSUBSCRIBE, 0x02, body)


def pingreq() -> bytes:
    return packet(PINGREQ, 0, b"")


def disconnect(version: int = V311, rc: int = 0, props=None) -> bytes:
    if version == V5 and (rc or props):
        return packet(DISCONNECT, 0, u8(rc) + encode_props(props))
    return packet(DISCONNECT, 0, b"")


def auth(rc: int = 0x18, props=None) -> bytes:
    return packet(AUTH, 0, u8(rc) + encode_props(props))


def _b(x) -> bytes:
    return x.encode() if isinstance(x, str) else bytes(x)


# ---------------------------------------------------------------------------------------------
# decoding

@dataclass
class Packet:
    type: int
    flags: int
    body: bytes
    # decoded fields (those that apply to the type)
    rc: int | None = None
    rcs: list = field(default_factory=list)
    session_present: bool = False
    pid: int | None = None
    topic: bytes | None = None
    payload: bytes | None = None
    qos: int = 0
    dup: bool = False
    retain: bool = False
    props: dict = field(default_factory=dict)
    raw_size: int = 0

    @property
    def name(self) -> str:
        return TYPE_NAMES.get(self.type, f"type{self.type}")

    def __repr__(self) -> str:
        parts = [self.name]
        for k in ("rc", "rcs", "pid", "topic", "qos", "dup", "retain", "session_present"):
            v = getattr(self, k)
            if v not in (None, [], False, 0) or (k == "rc" and v == 0):
                parts.append(f"{k}={v!r}")
        if self.payload is not None:
            parts.append(f"payload={self.payload[:40]!r}{'...' if len(self.payload) > 40 else ''}")
        if self.props:
            parts.append(f"props={self.props!r}")
        return "<" + " ".join(parts) + ">"


class _Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.i = 0

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.d):
            raise MalformedError(f"truncated: need {n} bytes at {self.i}, have {len(self.d) - self.i}")
        out = self.d[self.i:self.i + n]
        self.i += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def varint(self) -> int:
        mult, value = 1, 0
        for _ in range(4):
            b = self.u8()
            value += (b & 0x7F) * mult
            if not b & 0x80:
                return value
            mult *= 128
        raise MalformedError("variable byte integer longer than 4 bytes")

    def bin(self) -> bytes:
        return self.take(self.u16())

    def str(self) -> str:
        raw = self.bin()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedError(f"invalid UTF-8 string {raw!r}") from e

    def rest(self) -> bytes:
        out = self.d[self.i:]
        self.i = len(self.d)
        return out

    def left(self) -> int:
        return len(self.d) - self.i


def decode_props(r: _Reader) -> dict:
    end = r.varint()
    end += r.i
    out: dict = {}
    while r.i < end:
        pid = r.u8()
        if pid not in PROPS:
            raise MalformedError(f"unknown property id {pid:#x}")
        name, kind = PROPS[pid]
        if kind == "byte":
            v = r.u8()
        elif kind == "u16":
            v = r.u16()
        elif kind == "u32":
            v = r.u32()
        elif kind == "varint":
            v = r.varint()
        elif kind == "str":
            v = r.str()
        elif kind == "bin":
            v = r.bin()
        else:
            v = (r.str(), r.str())
        if name in MULTI:
            out.setdefault(name, []).append(v)
        elif name in out:
            raise MalformedError(f"duplicate property {name}")
        else:
            out[name] = v
    if r.i != end:
        raise MalformedError("property block overruns")
    return out


def decode(ptype: int, flags: int, body: bytes, version: int) -> Packet:
    p = Packet(ptype, flags, body)
    r = _Reader(body)
    v5 = version == V5
    if ptype == CONNACK:
        p.session_present = bool(r.u8() & 1)
        p.rc = r.u8()
        if v5 and r.left():
            p.props = decode_props(r)
    elif ptype == PUBLISH:
        p.qos = (flags >> 1) & 3
        p.dup = bool(flags & 8)
        p.retain = bool(flags & 1)
        p.topic = r.bin()
        if p.qos:
            p.pid = r.u16()
        if v5:
            p.props = decode_props(r)
        p.payload = r.rest()
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        p.pid = r.u16()
        p.rc = 0
        if v5 and r.left():
            p.rc = r.u8()
            if r.left():
                p.props = decode_props(r)
    elif ptype in (SUBACK, UNSUBACK):
        p.pid = r.u16()
        if v5:
            p.props = decode_props(r)
        p.rcs = list(r.rest())
    elif ptype in (DISCONNECT, AUTH):
        p.rc = 0
        if r.left():
            p.rc = r.u8()
            if r.left():
                p.props = decode_props(r)
    return p


# ---------------------------------------------------------------------------------------------
# the raw client

class RawClient:
    """One TCP connection speaking raw MQTT. Every read has a deadline; nothing sleeps."""

    def __init__(self, host: str, port: int, version: int = V311, timeout: float = 5.0,
                 sock: socket.socket | None = None):
        self.version = version
        self.timeout = timeout
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False
        self.log: list[Packet] = []  # every packet read, for failure messages

    # -- io
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send, tolerating a peer that already closed (returns False then)."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet before the deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout as e:
            raise TimeoutError("no packet before the deadline") from e
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as e:
            self.closed = True
            raise Closed(str(e)) from e
        if not chunk:
            self.closed = True
            raise Closed("EOF")
        self.buf += chunk

    def recv(self, timeout: float | None = None) -> Packet:
        """The next whole packet. Raises TimeoutError, or Closed if the peer closed first."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            pk = self._parse_one()
            if pk is not None:
                self.log.append(pk)
                return pk
            self._fill(deadline)

    def _parse_one(self) -> Packet | None:
        if len(self.buf) < 2:
            return None
        mult, length, i = 1, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            length += (b & 0x7F) * mult
            i += 1
            if not b & 0x80:
                break
            mult *= 128
            if i > 4:
                raise MalformedError("bad remaining length from server")
        if len(self.buf) < i + length:
            return None
        first = self.buf[0]
        body = bytes(self.buf[i:i + length])
        del self.buf[:i + length]
        pk = decode(first >> 4, first & 0x0F, body, self.version)
        pk.raw_size = i + length
        return pk

    def expect(self, ptype: int, timeout: float | None = None) -> Packet:
        """The next packet, which must be of type `ptype` (PINGRESPs are skipped)."""
        while True:
            pk = self.recv(timeout)
            if pk.type == PINGRESP and ptype != PINGRESP:
                continue
            assert pk.type == ptype, f"expected {TYPE_NAMES[ptype]}, got {pk!r}"
            return pk

    def wait_closed(self, timeout: float) -> list[Packet]:
        """Read until the server closes the connection; returns the packets seen before the close.
        Fails the test if the connection is still open at the deadline."""
        deadline = time.monotonic() + timeout
        seen: list[Packet] = []
        while True:
            try:
                seen.append(self.recv(max(0.0, deadline - time.monotonic())))
            except Closed:
                return seen
            except TimeoutError:
                raise AssertionError(
                    f"server did not close the connection within {timeout}s; packets seen: {seen!r}")

    def quiet(self, window: float) -> list[Packet]:
        """Packets that arrive within `window` seconds (a bounded negative check)."""
        deadline = time.monotonic() + window
        seen = []
        while True:
            try:
                seen.append(self.recv(max(0.001, deadline - time.monotonic())))
            except TimeoutError:
                return seen
            if time.monotonic() >= deadline:
                return seen

    # -- conveniences
    def connect(self, client_id: str = "", **kw) -> Packet:
        kw.setdefault("version", self.version)
        self.send(connect(client_id, **kw))
        return self.expect(CONNACK)

    def subscribe(self, filters, pid: int = 1, props=None) -> Packet:
        self.send(subscribe(pid, filters, self.version, props))
        ack = self.expect(SUBACK)
        assert ack.pid == pid
        return ack

    def publish(self, topic, payload=b"", qos=0, retain=False, pid=None, props=None, dup=False):
        self.send(publish(topic, payload, qos, retain, dup, pid, self.version, props))

    def disconnect(self, rc: int = 0, props=None) -> None:
        self.try_send(disconnect(self.version, rc, props))
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (RST rather than FIN where possible)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


# ---------------------------------------------------------------------------------------------
# the same over a WebSocket (RFC 6455), for handshake and framing tests

class WsRawClient(RawClient):
    """RawClient over a WebSocket: `send` wraps bytes in one masked binary frame (or several, with
    `send_frames`); received frames are unwrapped into the same byte stream the parser reads."""

    def __init__(self, host: str, port: int, version: int = V311, timeout: float = 5.0,
                 path: str = "/mqtt", subprotocol: str | None = "mqtt", sock=None):
        import base64
        import os as _os
        super().__init__(host, port, version, timeout, sock=sock)
        key = base64.b64encode(_os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if subprotocol:
            req += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        raw = bytearray()
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in raw:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Closed(f"closed during the WebSocket handshake: {bytes(raw)!r}")
            raw += chunk
        head, _, rest = bytes(raw).partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        self.status_line = lines[0]
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        self.status = int(self.status_line.split()[1])
        self.frame_buf = bytearray(rest)
        if self.status == 101:
            import hashlib
            want = base64.b64encode(hashlib.sha1(
                (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            assert self.headers.get("sec-websocket-accept") == want, self.headers

    @staticmethod
    def frame(payload: bytes, opcode: int = 0x2, fin: bool = True) -> bytes:
        import os as _os
        head = bytearray([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head.append(0x80 | n)
        elif n < 65536:
            head.append(0x80 | 126)
            head += struct.pack("!H", n)
        else:
            head.append(0x80 | 127)
            head += struct.pack("!Q", n)
        mask = _os.urandom(4)
        head += mask
        return bytes(head) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.frame(data))

    def try_send(self, data: bytes) -> bool:
        try:
            self.send(data)
            return True
        except OSError:
            return False

    def send_frames(self, chunks: list[bytes]) -> None:
        """One MQTT byte stream split over several WebSocket frames, as a client may do."""
        for c in chunks:
            self.sock.sendall(self.frame(c))

    def _fill(self, deadline: float) -> None:
        while True:
            got = self._take_frame()
            if got is not None:
                opcode, payload = got
                if opcode in (0x0, 0x1, 0x2):
                    self.buf += payload
                    return
                if opcode == 0x8:
                    self.closed = True
                    raise Closed(f"WebSocket close frame {payload[:2].hex()}")
                if opcode == 0x9:  # ping -> pong
                    self.sock.sendall(self.frame(payload, opcode=0xA))
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet before the deadline")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout as e:
                raise TimeoutError("no packet before the deadline") from e
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as e:
                self.closed = True
                raise Closed(str(e)) from e
            if not chunk:
                self.closed = True
                raise Closed("EOF")
            self.frame_buf += chunk

    def _take_frame(self):
        b = self.frame_buf
        if len(b) < 2:
            return None
        opcode = b[0] & 0x0F
        masked = b[1] & 0x80
        n = b[1] & 0x7F
        i = 2
        if n == 126:
            if len(b) < 4:
                return None
            n = struct.unpack("!H", b[2:4])[0]
            i = 4
        elif n == 127:
            if len(b) < 10:
                return None
            n = struct.unpack("!Q", b[2:10])[0]
            i = 10
        if masked:
            raise MalformedError("server frames must not be masked (RFC 6455 5.1)")
        if len(b) < i + n:
            return None
        payload = bytes(b[i:i + n])
        del b[:i + n]
        return opcode, payload
