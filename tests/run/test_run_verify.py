"""`verify http` (with `via = HOST`) and `verify dns`, done from the control machine."""

from __future__ import annotations

import http.server
import threading

import pytest

from mdsl.compile.actions import DnsCheck, HttpCheck
from mdsl.run.errors import StepFailed
from mdsl.run.probes import dns_check, http_check


@pytest.fixture
def server():
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Host")))
            body = b"ok: healthy" if self.path == "/health" else b"nope"
            self.send_response(200 if self.path == "/health" else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1], seen
    srv.shutdown()
    srv.server_close()


def test_via_connects_to_the_host_address_but_sends_the_urls_host_header(server):
    port, seen = server
    url = f"http://app.example.invalid:{port}/health"
    assert http_check(HttpCheck(url, 200, "healthy", via="new", address="127.0.0.1", timeout=5)) == "status 200"
    assert seen == [("/health", f"app.example.invalid:{port}")]


def test_a_wrong_status_fails_after_the_timeout_with_what_it_saw(server):
    port, _ = server
    with pytest.raises(StepFailed, match="expected status 200, got status 503"):
        http_check(HttpCheck(f"http://127.0.0.1:{port}/down", 200, timeout=0.2), sleep=lambda s: None)


def test_dns_check_compares_with_the_hosts_address():
    assert "localhost" in dns_check(DnsCheck("localhost", "here", (), local=True))
    with pytest.raises(StepFailed, match="resolves to"):
        dns_check(DnsCheck("localhost", "far", ("192.0.2.7",)))
