"""Loads for the fault suite's misbehaving-clients case (test_faults_abuse.py) and its bench
(benches/faults_abuse.sh), each run as its own process so one load's Python does not slow the
other's measurements:

  python faultload.py devices --port P --seconds S [--devices 4 --rate 100]
      well-behaved devices: each publishes QoS 1 at `rate` msg/s; one subscriber to all of them
      measures publish-to-delivery latency. Prints a JSON report.
  python faultload.py abuse --port P --seconds S [--slow-readers 20 --half-open 200
                                                 --flood-rate 100 --malformed-rate 100]
      misbehaving clients until S seconds pass: malformed packets, slow readers that subscribe
      to the devices' topics (and to a feed of 16 KiB messages that fills their buffers) and
      never read, a connect flood (connect + close) and half-open connections that never send
      CONNECT. Prints a JSON tally.
Works against any MQTT broker on loopback."""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"


# ---------------------------------------------------------------------------------------------
# well-behaved devices

def devices(port: int, seconds: float, count: int, rate: float, prefix: str) -> dict:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    latencies: list[float] = []
    received = set()
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(client, userdata, msg):
        now = time.monotonic_ns()
        d, i, sent_ns = msg.payload.split(b" ", 2)
        with lock:
            received.add((int(d), int(i)))
            latencies.append((now - int(sent_ns)) / 1e6)

    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"{prefix}-sub",
                      protocol=mqtt.MQTTv311)
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(HOST, port)
    sub.subscribe(f"{prefix}/+/t", qos=1)
    sub.loop_start()
    if not subscribed.wait(30):
        raise SystemExit("the subscriber's SUBACK did not come")

    acked = [0] * count
    sent = [0] * count

    def device(d: int):
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"{prefix}-d{d}",
                        protocol=mqtt.MQTTv311)

        def on_publish(client, userdata, mid, rc, props):
            acked[d] += 1
        c.on_publish = on_publish
        c.connect(HOST, port)
        c.loop_start()
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            c.publish(f"{prefix}/{d}/t", f"{d} {i} {time.monotonic_ns()}", qos=1)
            sent[d] += 1
            i += 1
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the load
        deadline = time.monotonic() + 30
        while acked[d] < sent[d] and time.monotonic() < deadline:
            time.sleep(0.01)
        c.disconnect()
        c.loop_stop()

    threads = [threading.Thread(target=device, args=(d,)) for d in range(count)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    total = sum(sent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(received) >= total:
                break
        time.sleep(0.01)
    sub.disconnect()
    sub.loop_stop()
    with lock:
        lat = sorted(latencies)
        got = len(received)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {"sent": total, "acked": sum(acked), "received": got, "seconds": round(elapsed, 3),
            "msgs_per_s": round(got / elapsed, 1), "p50_ms": round(pct(0.50), 3),
            "p99_ms": round(pct(0.99), 3), "max_ms": round(lat[-1], 3) if lat else None}


# ---------------------------------------------------------------------------------------------
# misbehaving clients

def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str, keep_alive: int = 60) -> bytes:
    body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keep_alive) + _utf8(client_id)
    return bytes([0x10]) + _remaining(len(body)) + body


def subscribe_packet(topic: str, packet_id: int = 1, qos: int = 0) -> bytes:
    body = struct.pack("!H", packet_id) + _utf8(topic) + bytes([qos])
    return bytes([0x82]) + _remaining(len(body)) + body


MALFORMED = [
    b"\x10\xff\xff\xff\xff\x01",  # CONNECT with a 5-byte remaining length
    b"\x00\x02\x00\x00",  # packet type 0 (reserved)
    b"\x10\x0c\x00\x04XQTT\x04\x02\x00\x3c\x00\x00",  # bad protocol name
    connect_packet("ok") + b"\x30\x04\x00\x10ab",  # PUBLISH whose topic runs past the packet
    connect_packet("ok") + b"\xf0\x00",  # packet type 15 (AUTH) in 3.1.1
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not MQTT at all
]


def publish_packet(topic: str, payload: bytes) -> bytes:
    body = _utf8(topic) + payload
    return bytes([0x30]) + _remaining(len(body)) + body


def abuse(port: int, seconds: float, topic_filter: str, slow_readers: int, half_open: int,
          flood_rate: float, malformed_rate: float, feed_rate: float) -> dict:
    until = time.monotonic() + seconds
    tally = {"malformed_sent": 0, "malformed_closed_by_server": 0, "flood_connects": 0,
             "flood_refused": 0, "slow_readers": 0, "half_open": 0, "feed_bytes": 0, "errors": 0}
    feed_topic = topic_filter.split("/")[0] + "/feed"
    lock = threading.Lock()
    held: list[socket.socket] = []

    def count(key, n=1):
        with lock:
            tally[key] += n

    def malformed():
        k = 0
        start = time.monotonic()
        while time.monotonic() < until:
            pause = start + k / malformed_rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                s = socket.create_connection((HOST, port), timeout=5)
                s.sendall(MALFORMED[k % len(MALFORMED)])
                k += 1
                count("malformed_sent")
                s.settimeout(5)
                try:
                    while s.recv(4096):
                        pass  # a CONNACK may come first; then the server must close
                    count("malformed_closed_by_server")
                except ConnectionResetError:
                    count("malformed_closed_by_server")
                except socket.timeout:
                    pass
                s.close()
            except OSError:
                count("errors")

    def slow_reader(n: int):
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((HOST, port))
            s.sendall(connect_packet(f"slow-{n}-{time.monotonic_ns()}", keep_alive=0))
            s.sendall(subscribe_packet(topic_filter, 1))
            s.sendall(subscribe_packet(feed_topic, 2))
            held.append(s)  # and never read from it
            count("slow_readers")
        except OSError:
            count("errors")

    def flood():
        k = 0
        start = time.monotonic()
        while time.monotonic() < until:
            try:
                s = socket.create_connection((HOST, port), timeout=5)
                s.sendall(connect_packet(f"flood-{k}"))
                s.close()
                count("flood_connects")
            except OSError:
                count("flood_refused")
            k += 1
            pause = start + k / flood_rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def feed():
        # 16 KiB QoS 0 messages to a topic only the slow readers take: their buffers fill at once
        # (the devices' own traffic alone would take minutes to fill a socket buffer).
        try:
            s = socket.create_connection((HOST, port), timeout=5)
            s.sendall(connect_packet(f"feed-{time.monotonic_ns()}"))
            s.recv(4)  # CONNACK
            packet = publish_packet(feed_topic, b"f" * 16384)
            k = 0
            start = time.monotonic()
            while time.monotonic() < until:
                s.sendall(packet)
                count("feed_bytes", len(packet))
                k += 1
                pause = start + k / feed_rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            s.close()
        except OSError:
            count("errors")

    for n in range(slow_readers):
        slow_reader(n)
    for _ in range(half_open):
        try:
            held.append(socket.create_connection((HOST, port), timeout=5))  # never sends CONNECT
            count("half_open")
        except OSError:
            count("errors")
    threads = [threading.Thread(target=f) for f in (malformed, flood, feed)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in held:
        s.close()
    return tally


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["devices", "abuse"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--rate", type=float, default=100, help="msg/s per device")
    p.add_argument("--prefix", default="dev")
    p.add_argument("--slow-readers", type=int, default=20)
    p.add_argument("--half-open", type=int, default=200)
    p.add_argument("--flood-rate", type=float, default=100, help="connect + close per second")
    p.add_argument("--malformed-rate", type=float, default=100, help="malformed connections per second")
    p.add_argument("--feed-rate", type=float, default=100,
                   help="16 KiB messages per second to the slow readers' own topic")
    a = p.parse_args(argv)
    if a.mode == "devices":
        out = devices(a.port, a.seconds, a.devices, a.rate, a.prefix)
    else:
        out = abuse(a.port, a.seconds, f"{a.prefix}/+/t", a.slow_readers, a.half_open, a.flood_rate,
                    a.malformed_rate, a.feed_rate)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
