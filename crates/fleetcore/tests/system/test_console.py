"""The web console (`/console`) in a real headless browser: Debian's Chromium driven by Selenium
through chromedriver. Sign in with the admin access key, every page loads, the charts draw the
data points of MQTT traffic produced during the test (asserted on the SVG's circles, which carry
their values), a rule's per-action outcomes, an alarm and a CloudWatch dashboard are shown, the
streams page shows each stream consumer's lag per shard (a disabled event source mapping behind
by every record put, an enabled one caught up), the detectors page lists the detector models with
their detectors per state, and the browser's console has no errors. Without a session every endpoint refuses. A screenshot of
each page is saved in the test's tmp dir (and copied to $FLEETCORE_TEST_ARTIFACTS when set).

The browser tests report themselves skipped only when Chromium or chromedriver is not installed
or cannot start here (test.sh installs both)."""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from brokers import wait_until
from clients import V5
from conftest import admin_credentials
from test_rules_engine import create_rule, rule_name

pytestmark = pytest.mark.fleetcore_only("the web console is fleetcore's")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def opener(*handlers):
    return urllib.request.build_opener(*handlers)


def status_of(op, request) -> tuple[int, dict, bytes]:
    try:
        with op.open(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def console_broker(tmp_path_factory):
    """A server of this module's own that samples its metrics every second."""
    from brokers import Broker
    b = Broker(tmp_path_factory.mktemp("console-broker"), ["--metrics-resolution", "1"],
               name="console")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium and chromedriver are not installed (test.sh installs them)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing from the venv (test.sh installs it)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as e:  # noqa: BLE001 - any start failure means chromium cannot run here
        pytest.skip(f"chromium cannot start here: {e}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def sign_in(driver, b) -> None:
    from selenium.webdriver.common.by import By
    key, secret = admin_credentials(b)
    driver.get(b.http_base + "/console")
    assert driver.current_url.endswith("/console/login"), "unsigned visitors go to the sign-in page"
    driver.find_element(By.ID, "access_key_id").send_keys(key)
    driver.find_element(By.ID, "secret_access_key").send_keys(secret)
    driver.find_element(By.ID, "sign-in").click()
    wait_until(lambda: driver.current_url.rstrip("/").endswith("/console"), timeout=20,
               what="the console after signing in")


def page_ready(driver, name: str, timeout: float = 30):
    """Opens page `name` and waits until it has drawn (or failed, which fails the test)."""
    driver.execute_script("location.hash = arguments[0]", name)
    driver.execute_script("window.dispatchEvent(new HashChangeEvent('hashchange'))")

    def state():
        s = driver.execute_script(
            "const p = document.getElementById('page'); return [p.dataset.state, p.dataset.page]")
        return s if s[0] in ("ready", "failed") and s[1] == name.split("?")[0] else None

    s = wait_until(state, timeout=timeout, interval=0.1, what=f"console page {name}")
    assert s[0] == "ready", driver.find_element("id", "page").text


def points(driver, chart_id: str, series: str | None = None) -> list[float]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#chart-' + arguments[0] + ' circle.pt')]"
        ".filter(c => !arguments[1] || c.dataset.series === arguments[1])"
        ".map(c => Number(c.dataset.v))", chart_id, series)


def shot(driver, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"console-{name}.png"
    driver.save_screenshot(str(path))
    artifacts = os.environ.get("FLEETCORE_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)


def browser_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_without_a_session_every_endpoint_refuses_and_a_wrong_key_is_told(console_broker):
    b = console_broker
    plain = opener(NoRedirect())
    status, headers, _ = status_of(plain, b.http_base + "/console")
    assert status == 303 and headers["location"] == "/console/login"
    for path in ("/console/api/info", "/console/api/metrics", "/console/api/sections/things"):
        assert status_of(plain, b.http_base + path)[0] == 401, path
    status, _, _ = status_of(plain, urllib.request.Request(
        b.http_base + "/console/api/cloudwatch/DescribeAlarms", data=b"{}", method="POST"))
    assert status == 401
    key, secret = admin_credentials(b)
    wrong = urllib.parse.urlencode({"access_key_id": key, "secret_access_key": secret + "x"})
    status, headers, body = status_of(plain, urllib.request.Request(
        b.http_base + "/console/login", data=wrong.encode(), method="POST"))
    assert status == 401 and "set-cookie" not in {k.lower() for k in headers}
    assert b"is not the admin" in body

    # signed in: reads work, writes through the console are refused
    jar = http.cookiejar.CookieJar()
    signed = opener(NoRedirect(), urllib.request.HTTPCookieProcessor(jar))
    right = urllib.parse.urlencode({"access_key_id": key, "secret_access_key": secret})
    status, headers, _ = status_of(signed, urllib.request.Request(
        b.http_base + "/console/login", data=right.encode(), method="POST"))
    assert status == 303 and "HttpOnly" in headers["set-cookie"]
    assert "SameSite=Strict" in headers["set-cookie"]
    status, _, body = status_of(signed, b.http_base + "/console/api/info")
    assert status == 200
    assert {s["id"] for s in json.loads(body)["sections"]} >= {"things", "functions", "streams",
                                                               "delivery-streams"}
    status, _, body = status_of(signed, urllib.request.Request(
        b.http_base + "/console/api/cloudwatch/PutMetricData",
        data=json.dumps({"Namespace": "x", "MetricData": [{"MetricName": "m", "Value": 1}]}).encode(),
        method="POST"))
    assert status == 403 and b"only reads" in body
    # signing out ends the session
    status_of(signed, urllib.request.Request(b.http_base + "/console/logout", data=b"",
                                             method="POST"))
    assert status_of(signed, b.http_base + "/console/api/info")[0] == 401


def test_console_pages_draw_what_the_fleet_just_did(console_broker, browser, aws, clients, uid,
                                                     tmp_path):
    b, driver = console_broker, browser
    iot, cw = aws("iot", broker=b), aws("cloudwatch", broker=b)
    iot.create_thing(thingName=f"{uid}-thing")
    rule = rule_name(uid)
    create_rule(iot, rule, f"SELECT * FROM 'console/{uid}'",
                [{"republish": {"roleArn": "arn:aws:iam::000000000000:role/r",
                                "topic": f"console-out/{uid}", "qos": 0}}])
    cw.put_metric_alarm(AlarmName=f"{uid}-alarm", Namespace="AWS/IoT",
                        MetricName="PublishIn.Success", Statistic="Sum", Period=10,
                        EvaluationPeriods=1, Threshold=1e9, ComparisonOperator="GreaterThanThreshold")
    dashboard = f"d-{uid}"[:60]
    cw.put_dashboard(DashboardName=dashboard, DashboardBody=json.dumps({"widgets": [
        {"type": "metric", "x": 0, "y": 0, "width": 12, "height": 6, "properties": {
            "title": "PublishIn", "period": 1, "stat": "Sum",
            "metrics": [["AWS/IoT", "PublishIn.Success"]]}},
        {"type": "text", "x": 0, "y": 6, "width": 12, "height": 2,
         "properties": {"markdown": "fleet notes"}}]}))

    sign_in(driver, b)
    pub = clients(V5, broker=b, client_id=f"{uid}-pub")
    for i in range(200):
        pub.publish(f"console/{uid}", json.dumps({"i": i}).encode(), qos=1)

    # the overview's chart draws the messages just published (sampled every second)
    def drawn():
        page_ready(driver, "overview")
        values = points(driver, "messages", "in/s")
        return values if sum(values) > 0 else None

    values = wait_until(drawn, timeout=60, interval=1, what="messages in/s on the overview chart")
    assert max(values) > 0
    assert driver.execute_script(
        "return document.querySelector('#card-things-things .value').textContent") != "0"
    assert int(text_of(driver, "#card-connections .value")) >= 1
    shot(driver, tmp_path, "overview")

    def rule_row():
        page_ready(driver, "rules")
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#rule-actions tbody tr')]"
            ".map(r => [...r.children].map(td => td.textContent))")
        return [r for r in rows if r[0] == rule and r[1] == "0:republish" and int(r[2]) >= 200] or None

    wait_until(rule_row, timeout=60, interval=1, what="the rule's republish successes")
    shot(driver, tmp_path, "rules")

    page_ready(driver, "section-things")
    assert f"{uid}-thing" in text_of(driver, "#section-things")
    for name in ("streams", "functions", "events"):
        page_ready(driver, name)
        shot(driver, tmp_path, name)

    page_ready(driver, "alarms")
    alarm_rows = text_of(driver, "#alarms")
    assert f"{uid}-alarm" in alarm_rows
    shot(driver, tmp_path, "alarms")

    def widget_points():
        page_ready(driver, f"dashboards?name={dashboard}")
        v = points(driver, "widget-1")
        return v if sum(v) >= 200 else None

    wait_until(widget_points, timeout=60, interval=1, what="the dashboard widget's data points")
    wait_until(lambda: "fleet notes" in text_of(driver, ".text-widget"), timeout=10,
               what="the dashboard's text widget")
    shot(driver, tmp_path, "dashboard")

    errors = browser_errors(driver)
    assert errors == [], errors


def text_of(driver, css: str) -> str:
    """The rendered text of the element `css` selects ('' if none), read in one script: the
    pages redraw on their refresh, which makes an element found beforehand stale."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)


def section_rows(driver, section: str) -> list[list[str]]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#section-' + arguments[0] + ' tbody tr')]"
        ".map(r => [...r.children].map(td => td.textContent))", section)


def test_console_shows_stream_consumer_lag_and_detector_models(console_broker, browser, aws, uid,
                                                              tmp_path):
    from test_functions import create, fn_name
    from test_iotevents import ROLE as EVENTS_ROLE, in_state, make_input, put, threshold_model
    b, driver = console_broker, browser
    kinesis, lam = aws("kinesis", broker=b), aws("lambda", broker=b)
    ev, data = aws("iotevents", broker=b), aws("iotevents-data", broker=b)
    stream = f"lag-{uid}"[:60]
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    wait_until(lambda: kinesis.describe_stream_summary(StreamName=stream)
               ["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", timeout=30,
               what="the stream active")
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    name = fn_name(uid)
    create(lam, name, {"app.py": "def handler(e, c):\n    return len(e['Records'])\n"})
    # A disabled mapping never reads: everything put is behind it. An enabled one catches up.
    idle = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name,
                                           StartingPosition="TRIM_HORIZON", Enabled=False)["UUID"]
    busy = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name,
                                           StartingPosition="TRIM_HORIZON", BatchSize=10)["UUID"]
    for i in range(7):
        kinesis.put_record(StreamName=stream, Data=json.dumps({"i": i}).encode(), PartitionKey="k")

    model = rule_name(uid)
    make_input(ev, f"{model}_in", "temperature", "sensorId")
    ev.create_detector_model(detectorModelName=model, key="sensorId", roleArn=EVENTS_ROLE,
                             evaluationMethod="SERIAL",
                             detectorModelDefinition=threshold_model(f"{model}_in"))
    assert put(data, f"{model}_in", {"sensorId": "a", "temperature": 20},
               {"sensorId": "b", "temperature": 35.5}, {"sensorId": "c", "temperature": 20}) == []
    in_state(data, model, "b", "Alarm")
    in_state(data, model, "c", "Normal")

    driver.delete_all_cookies()  # a session of an earlier test would skip the sign-in page
    sign_in(driver, b)

    def lag_rows():
        page_ready(driver, "streams")
        rows = {r[0]: r for r in section_rows(driver, "consumer-lag") if r[1] == stream}
        idle_row = next((r for c, r in rows.items() if idle in c), None)
        busy_row = next((r for c, r in rows.items() if busy in c), None)
        if idle_row and busy_row and idle_row[5] == "7" and busy_row[5] == "0":
            return idle_row, busy_row
        return None

    idle_row, busy_row = wait_until(lag_rows, timeout=90, interval=1,
                                    what="the consumer lag of both mappings")
    assert "(disabled)" in idle_row[0] and idle_row[2] == "shardId-000000000000"
    assert idle_row[3] == "none" and float(idle_row[6]) >= 0
    assert busy_row[3] != "none", "the enabled mapping has checkpointed"
    shot(driver, tmp_path, "consumer-lag")

    page_ready(driver, "events")
    rows = [r for r in section_rows(driver, "detectors") if r[0] == model]
    assert rows == [[model, "1", "ACTIVE", "3", "Alarm: 1, Normal: 2"]], rows
    shot(driver, tmp_path, "detector-models")
    assert browser_errors(driver) == []
