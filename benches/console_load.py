#!/usr/bin/env python3
"""Web console page load with THINGS things (default 10,000): starts fleetcore, registers the
things through boto3 (THREADS at once), signs in with Debian's Chromium (headless, Selenium,
/usr/bin/chromedriver), then loads `/console` ROUNDS times and reports the median of the
browser's Navigation Timing (`loadEventEnd`: HTML, JS and CSS in) and of the time until the
overview has drawn (its data fetched: the registry, the things section, two GetMetricData
charts), plus the things endpoint alone. No Mosquitto equivalent exists: the figure is
absolute; the machine's load average is printed beside it.

    FLEETCORE_BIN=target/release/fleetcore PYTHONPATH=<selenium> .venv/bin/python benches/console_load.py
    THINGS=10000 ROUNDS=5 THREADS=8 FLEETCORE_BIN=... .venv/bin/python benches/console_load.py
"""
from __future__ import annotations

import configparser
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

REPO = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("FLEETCORE_BIN", REPO / "target" / "release" / "fleetcore"))
THINGS = int(os.environ.get("THINGS", "10000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
THREADS = int(os.environ.get("THREADS", "8"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="fc-console-"))
    http = free_port()
    base = f"http://127.0.0.1:{http}"
    server = subprocess.Popen([str(BIN), "serve", "--data-dir", str(data), "--http",
                               f"127.0.0.1:{http}", "--mqtts", "off", "--log", "warn"])
    try:
        wait_until(lambda: healthy(base), 60, "the server")
        cp = configparser.ConfigParser()
        cp.read(data / "credentials")
        key, secret = cp["fleetcore"]["aws_access_key_id"], cp["fleetcore"]["aws_secret_access_key"]
        iot = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                    region_name="us-east-1").client(
            "iot", endpoint_url=base, config=Config(retries={"max_attempts": 1},
                                                    max_pool_connections=THREADS))
        t0 = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda i: iot.create_thing(thingName=f"thing-{i:06d}",
                                                     attributePayload={"attributes": {"n": str(i)}}),
                          range(THINGS)))
        print(f"registered {THINGS} things in {time.monotonic() - t0:.1f} s")

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                                  options=options)
        try:
            driver.get(base + "/console")
            driver.find_element(By.ID, "access_key_id").send_keys(key)
            driver.find_element(By.ID, "secret_access_key").send_keys(secret)
            driver.find_element(By.ID, "sign-in").click()
            wait_until(lambda: driver.current_url.rstrip("/").endswith("/console"), 30, "sign-in")
            loads, drawn, section = [], [], []
            for round_ in range(ROUNDS):
                # a new query string each round: a full navigation, not a fragment change
                driver.get(f"{base}/console?round={round_}#overview")
                wait_until(lambda: driver.execute_script(
                    "return document.getElementById('page').dataset.state === 'ready'"), 120,
                    "the overview")
                timing = driver.execute_script(
                    "const n = performance.getEntriesByType('navigation')[0];"
                    "const r = performance.getEntriesByName('console-ready');"
                    "return [n.loadEventEnd, r[r.length - 1].startTime]")
                loads.append(timing[0])
                drawn.append(timing[1])
                section.append(driver.execute_script(
                    "const t = performance.now();"
                    "return fetch('/console/api/sections/things').then(r => r.json())"
                    ".then(j => [performance.now() - t, j.summary[0][1]])"))
            count = section[-1][1]
            assert count == THINGS, f"the console counts {count} things, not {THINGS}"
        finally:
            driver.quit()
        load = open("/proc/loadavg").read().split()[:3]
        print(f"things={THINGS} rounds={ROUNDS} load_average={' '.join(load)}")
        print(f"navigation loadEventEnd ms: median {statistics.median(loads):.0f} "
              f"(runs {[round(x) for x in loads]})")
        print(f"overview drawn (data fetched) ms since navigation: median "
              f"{statistics.median(drawn):.0f} (runs {[round(x) for x in drawn]})")
        print(f"/console/api/sections/things ms: median "
              f"{statistics.median(s[0] for s in section):.0f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
