"""Reading the web console's JSON endpoints as a signed-in user (no browser)."""
from __future__ import annotations

import http.cookiejar
import json
import urllib.parse
import urllib.request

from conftest import admin_credentials


def signed_in(b) -> urllib.request.OpenerDirector:
    """An opener holding a console session of `b`, signed in with its admin credentials."""
    key, secret = admin_credentials(b)
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = urllib.parse.urlencode({"access_key_id": key, "secret_access_key": secret}).encode()
    with opener.open(urllib.request.Request(b.http_base + "/console/login", data=form,
                                            method="POST"), timeout=10):
        pass
    return opener


def section(b, opener, section_id: str) -> dict:
    """The table of console section `section_id`: summary, columns and rows."""
    with opener.open(b.http_base + f"/console/api/sections/{section_id}", timeout=10) as r:
        return json.loads(r.read())
