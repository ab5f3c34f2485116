#!/usr/bin/env python3
"""A short schemathesis run against the token API's OpenAPI document.

Starts the debug build (`target/debug/kefu serve`) on a temporary data directory and a free
port, makes a site, an admin and an API token for the site (through the admin page, as an admin
would), then runs schemathesis with that token against `/api/v1/openapi.json`. It checks that no
request gets a 5xx and that every answer conforms to the document (status code, content type,
headers, body schema). Any failure fails the run (exit status 1).

Usage: python3 tests/schemathesis/run.py [--max-examples N] [--binary PATH]
"""

import argparse
import html
import http.cookiejar
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN_EMAIL = "admin@schemathesis.test"
ADMIN_PASSWORD = "schemathesis-password-1"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
# The configuration of the server under test: a budget high enough that the run is not mostly
# 429 answers, and no QUIC or metrics listener (nothing here uses them).
CONFIG = """
metrics = "off"
quic = "off"

[limits]
api_requests_per_second = 1000
api_request_burst = 1000
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kefu(binary, config, data_dir, *args):
    command = [binary, "--config", config, "--data-dir", data_dir, *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def wait_until_ready(base, server):
    """Polls /readyz while the server starts (a start is not an event the script can wait on)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"kefu exited at start with status {server.returncode}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("kefu did not become ready within 60 s")


def call(base, method, path, body=None, token=None):
    """A JSON request; returns the decoded answer."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")


def make_api_token(base, site_key):
    """Logs in as the admin and makes a read-and-write token for the site on the admin page.
    Returns the API token and the admin's session token."""
    cookies = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    login = urllib.request.Request(
        base + "/api/v1/agent/login",
        data=json.dumps({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    session = json.loads(opener.open(login).read())["token"]
    page = opener.open(base + "/admin/api-tokens").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrf": csrf, "name": "schemathesis", "site": site_key}).encode()
    request = urllib.request.Request(base + "/admin/api-tokens", data=form, headers={"Origin": base})
    page = opener.open(request).read().decode()
    token = re.search(r'value="(k1\.[^"]+)"', page)
    if token is None:
        sys.exit("the admin page did not show a new API token")
    return html.unescape(token.group(1)), session


def seed(base, site_key, api_token, admin_token):
    """Something for the operations on one conversation, visitor or entry to work on (random ids
    would only ever get 404): a visitor, a conversation with a message, and a knowledge-base entry.
    Returns a schemathesis configuration that points those operations at them."""
    visitor_id = call(base, "POST", "/api/v1/visitor/session", {"site": site_key})["visitor_id"]
    conversation = call(base, "POST", f"/api/v1/visitors/{visitor_id}/conversations", token=admin_token)
    conversation_id = conversation["id"]
    call(base, "POST", f"/api/v1/conversations/{conversation_id}/messages",
         {"text": "Your parcel shipped today.", "client_id": "seed-1"}, token=admin_token)
    entry = call(base, "POST", f"/api/v1/kb?site={site_key}",
                 {"questions": ["Where is my parcel?"], "answer": "It ships in two days.", "category": "orders"},
                 token=api_token)
    return f"""
[[operations]]
include-path-regex = '^/api/v1/conversations/[{{]id[}}]'
parameters = {{ "path.id" = {conversation_id} }}

[[operations]]
include-path-regex = '^/api/v1/visitors/[{{]id[}}]'
parameters = {{ "path.id" = {visitor_id} }}

[[operations]]
include-path-regex = '^/api/v1/kb/[{{]id[}}]$'
parameters = {{ "path.id" = {entry["id"]} }}
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=20)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "debug", "kefu"))
    arguments = parser.parse_args()
    if shutil.which("schemathesis") is None:
        sys.exit("schemathesis is not installed (python3 -m pip install schemathesis)")

    work_dir = tempfile.mkdtemp(prefix="kefu-schemathesis-")
    data_dir = os.path.join(work_dir, "data")
    config = os.path.join(work_dir, "kefu.toml")
    with open(config, "w") as file:
        file.write(CONFIG)
    created = kefu(arguments.binary, config, data_dir, "admin", "create-site", "--name", "Schemathesis")
    site_key = re.search(r"key\W+([0-9a-zA-Z]+)", created).group(1)
    kefu(arguments.binary, config, data_dir, "admin", "create-agent", "--email", ADMIN_EMAIL,
         "--password", ADMIN_PASSWORD, "--role", "admin", "--site", site_key)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(work_dir, "kefu.log"), "w")
    server = subprocess.Popen(
        [arguments.binary, "--config", config, "--data-dir", data_dir, "serve", "--http", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_ready(base, server)
        token, admin_token = make_api_token(base, site_key)
        schemathesis_config = os.path.join(work_dir, "schemathesis.toml")
        with open(schemathesis_config, "w") as file:
            file.write(seed(base, site_key, token, admin_token))
        command = [
            "schemathesis", "--config-file", schemathesis_config, "run", base + "/api/v1/openapi.json",
            "--url", base,
            "--header", f"Authorization: Bearer {token}",
            "--checks", CHECKS,
            "--max-examples", str(arguments.max_examples),
            "--phases", "examples,coverage,fuzzing",
            "--seed", "22",
            "--workers", "1",
            "--request-timeout", "30",
            "--suppress-health-check", "all",
            "--no-color",
        ]
        # In the temporary directory, where schemathesis keeps its cache.
        status = subprocess.run(command, cwd=work_dir).returncode
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    if status != 0:
        print(f"schemathesis found failures; the server log is in {work_dir}/kefu.log", file=sys.stderr)
        sys.exit(1)
    shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
