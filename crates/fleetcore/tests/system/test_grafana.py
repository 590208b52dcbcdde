"""Grafana and OpenTelemetry: every series the Grafana dashboard in `deploy/grafana/` queries is
one the server's `/metrics` exports (after traffic that touches each component), and the OTLP
exporter (`--otlp-endpoint`) posts the same series as an OTLP/HTTP JSON
ExportMetricsServiceRequest to a receiver running in this test; a bad endpoint is refused at
start."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from brokers import FLEETCORE_BIN, Broker, wait_until
from clients import V5
from test_functions import create, fn_name, invoke
from test_rules_engine import create_rule, rule_name

pytestmark = pytest.mark.fleetcore_only("the dashboard and exporter are fleetcore's")

DASHBOARD = Path(__file__).resolve().parents[4] / "deploy" / "grafana" / "fleetcore.json"
ROLE = "arn:aws:iam::000000000000:role/r"


class Receiver:
    """A tiny OTLP/HTTP receiver: keeps every JSON body posted to /v1/metrics (`requests`) and
    /v1/traces (`traces`)."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self.traces: list[tuple[str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                kept = {"/v1/metrics": receiver.requests, "/v1/traces": receiver.traces}
                if self.path in kept:
                    kept[self.path].append((self.headers.get("content-type", ""),
                                            json.loads(body)))
                    self.send_response(200)
                else:
                    self.send_response(404)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gb(tmp_path_factory, receiver):
    b = Broker(tmp_path_factory.mktemp("grafana-broker"),
               ["--otlp-endpoint", receiver.url, "--otlp-interval", "1"], name="grafana",
               env={"FLEETCORE_FUNCTIONS_PYTHON": sys.executable})
    b.start()
    yield b
    b.stop()


def dashboard_series() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs, "the dashboard queries something"
    for p in dashboard["panels"]:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}" and p["title"]
    return {name for e in exprs for name in re.findall(r"\bfleetcore_[a-z0-9_]+", e)}


def exported(b: Broker) -> set[str]:
    status, text = b.http_get("/metrics")
    assert status == 200
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_every_series_the_grafana_dashboard_queries_is_exported(gb, aws, clients, uid):
    iot, lam = aws("iot", broker=gb), aws("lambda", broker=gb)
    rule = rule_name(uid)
    create_rule(iot, rule, f"SELECT * FROM 'grafana/{uid}'", [
        {"republish": {"roleArn": ROLE, "topic": f"grafana-out/{uid}", "qos": 0}},
        {"kinesis": {"roleArn": ROLE, "streamName": f"missing-{uid}", "partitionKey": "k"}}])
    name = fn_name(uid)
    create(lam, name, {"app.py": "def handler(e, c):\n    if e.get('fail'):\n"
                                 "        raise ValueError('no')\n    return 1\n"})
    invoke(lam, name, {})
    assert invoke(lam, name, {"fail": True})[0]["FunctionError"] == "Unhandled"
    pub = clients(V5, broker=gb, client_id=f"{uid}-pub")
    for i in range(20):
        pub.publish(f"grafana/{uid}", json.dumps({"i": i}).encode(), qos=1)
    wanted = dashboard_series()
    wait_until(lambda: wanted <= exported(gb), timeout=60, interval=0.5,
               what=f"series the dashboard queries: missing {sorted(wanted - exported(gb))}")


def test_otlp_exporter_posts_the_registry_as_otlp_json(gb, receiver, clients, uid):
    pub = clients(V5, broker=gb, client_id=f"{uid}-pub")
    for _ in range(30):
        pub.publish(f"otlp/{uid}", b"x", qos=1)
    start = len(receiver.requests)

    def metric(body, name):
        for rm in body["resourceMetrics"]:
            for sm in rm["scopeMetrics"]:
                for m in sm["metrics"]:
                    if m["name"] == name:
                        return m
        return None

    def counted():
        for content_type, body in receiver.requests[start:]:
            m = metric(body, "fleetcore_mqtt_messages_received_total")
            if m and m["sum"]["dataPoints"][0]["asDouble"] >= 30:
                return content_type, body
        return None

    content_type, body = wait_until(counted, timeout=30, interval=0.2,
                                    what="an OTLP export counting the 30 publishes")
    assert content_type == "application/json"
    resource = {a["key"]: a["value"]["stringValue"]
                for a in body["resourceMetrics"][0]["resource"]["attributes"]}
    assert resource["service.name"] == "fleetcore"
    received = metric(body, "fleetcore_mqtt_messages_received_total")["sum"]
    assert received["isMonotonic"] is True and received["aggregationTemporality"] == 2
    point = received["dataPoints"][0]
    assert int(point["timeUnixNano"]) > int(point["startTimeUnixNano"]) > 0
    connections = metric(body, "fleetcore_mqtt_connections")
    assert "gauge" in connections and connections["gauge"]["dataPoints"][0]["asDouble"] >= 1
    # labels become attributes
    denied = metric(body, "fleetcore_mqtt_authorization_denied_total")
    assert denied and all(p["attributes"] for p in denied["sum"]["dataPoints"])


def test_a_bad_otlp_endpoint_is_refused_at_start(tmp_path):
    out = subprocess.run([str(FLEETCORE_BIN), "serve", "--data-dir", str(tmp_path),
                          "--http", "127.0.0.1:0", "--otlp-endpoint", "ftp://collector"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "OTLP endpoint ftp://collector must be an http:// or https:// URL" in out.stderr
