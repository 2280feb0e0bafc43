"""The demo reads response headers by lower-case name, whatever case the server or Varnish sent."""

import http.server
import threading

from cliffhanger.demo import steps


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200 if self.path == "/ok" else 404)
        self.send_header("cache-control", "public, max-age=5")  # as the API sends it (ASGI: lower case)
        self.send_header("X-Cache", "HIT")  # as the VCL sets it
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_headers_are_found_by_lower_case_name_on_success_and_error():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        status, headers, body = steps._get(f"{base}/ok")
        assert (status, body) == (200, b"{}")
        assert headers["cache-control"] == "public, max-age=5"
        assert headers["x-cache"] == "HIT"
        status, headers, _ = steps._get(f"{base}/missing")
        assert status == 404
        assert headers["cache-control"] == "public, max-age=5"
    finally:
        server.shutdown()
        server.server_close()
