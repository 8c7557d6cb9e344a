"""A loopback (127.0.0.1) HTTP server that stands in for YouTube in the downloader tests.

Routes (NAME is the requested file name, e.g. "abcdefghijk_000001.mp4"):
    /ok/NAME      serves the fixture video (HTTP Range supported, as ffmpeg seeks with ranges)
    /flaky/NAME   drops the connection on the first `flaky_failures` requests for NAME, then serves
    /dead/NAME    always drops the connection
    /gone/NAME    404 Not Found
    /cut/NAME     requests number `cut_requests[0]`..`cut_requests[1]` for NAME send half the body, then drop
    /auto/NAME    the route named by NAME's prefix before the first "-" ("gone-aaaaaa_000001.mp4"), else ok
Every served file is the same fixture mp4; `delay` seconds are slept before each response so a test
can kill a downloader while it is mid-run.

Usage:
    with LoopbackServer(fixture_mp4) as server:
        template = server.url + "/ok/{id}.mp4"
"""

import collections
import http.server
import re
import socket
import threading
import time


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def _drop(self):
        # An abrupt close (RST) mid-request, like a flaky CDN.
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.connection.close()

    def _serve(self, send_body):
        server = self.server
        route, _, name = self.path.lstrip("/").partition("/")
        name = name.split("?")[0]
        if route == "auto":  # behaviour chosen by the clip's name, e.g. "gone-aaaaaa_000001.mp4"
            route = name.split("-", 1)[0] if "-" in name else "ok"
        with server.lock:
            server.requests[(route, name)] += 1
            count = server.requests[(route, name)]
        if server.delay:
            time.sleep(server.delay)
        if route == "gone" or not name:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route == "dead" or (route == "flaky" and count <= server.flaky_failures):
            self._drop()
            return
        if route not in ("ok", "flaky", "cut"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = server.payload
        start, end = 0, len(data) - 1
        match = re.match(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else end
            else:
                start = max(0, len(data) - int(match.group(2)))
            end = min(end, len(data) - 1)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if send_body:
            body = data[start : end + 1]
            if route == "cut" and server.cut_requests[0] <= count <= server.cut_requests[1]:
                # Headers promise the whole body but the connection dies half-way through it.
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self._drop()
                return
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def do_GET(self):
        self._serve(send_body=True)

    def do_HEAD(self):
        self._serve(send_body=False)


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients (ffmpeg) reset connections when seeking
        pass


class LoopbackServer:
    """Threaded HTTP server on 127.0.0.1 (random free port); use as a context manager."""

    def __init__(self, fixture_path, delay=0.0, flaky_failures=2, cut_requests=(2, 3)):
        with open(fixture_path, "rb") as handle:
            payload = handle.read()
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.payload = payload
        self.httpd.delay = delay
        self.httpd.flaky_failures = flaky_failures
        self.httpd.cut_requests = cut_requests
        self.httpd.lock = threading.Lock()
        self.httpd.requests = collections.Counter()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def requests(self):
        """Counter of requests per (route, name)."""
        return self.httpd.requests

    def set_delay(self, seconds):
        self.httpd.delay = seconds

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


if __name__ == "__main__":  # manual use: python tests/loopback_server.py clip.mp4
    import sys

    with LoopbackServer(sys.argv[1]) as server:
        print(server.url, flush=True)
        while True:
            time.sleep(3600)
