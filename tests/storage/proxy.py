"""A loopback HTTP proxy in front of a test server, to make it misbehave the way real servers do.

It forwards every request unchanged to ``upstream`` and the answer back, except where a rule says
otherwise: ``refuse`` answers matching requests with an error of its own (an S3-compatible server
without an API call), ``stall`` accepts requests and never answers (a stuck server). It records what
passed (method, path, query, headers, body size and CRC32), so a test can count the parts a server
received and check what they carried. Listens on
127.0.0.1 only; a stalled request is held at most ``max_stall`` seconds.
"""

from __future__ import annotations

import http.client
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body_bytes: int  # received from the client
    answer_bytes: int = 0  # sent back (a GET's data)
    headers: dict[str, str] = field(default_factory=dict)  # the request's, names in lower case
    body_crc32: int = 0  # of the body as received (a chunked one with its framing)


@dataclass
class Refusal:
    status: int
    body: bytes
    content_type: str = "application/xml"


Rule = Callable[[str, str, dict[str, list[str]]], Refusal | None]


@dataclass
class Proxy:
    upstream: str  # http://127.0.0.1:PORT
    refuse: Rule | None = None
    stall: bool = False
    max_stall: float = 120.0
    seen: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Proxy:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="test-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def count(self, method: str, query_key: str) -> int:
        """Requests of ``method`` whose query has ``query_key`` (``partNumber``: uploaded parts)."""
        return sum(1 for s in self.seen if s.method == method and query_key in s.query)

    def body_bytes(self, method: str, query_key: str) -> int:
        return sum(s.body_bytes for s in self.seen if s.method == method and query_key in s.query)


def s3_error(status: int, code: str, message: str) -> Refusal:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>proxy</RequestId></Error>").encode()
    return Refusal(status, body)


def _read_chunked(rfile: object) -> bytes:
    """The raw bytes of a chunked body (sizes, chunks, trailers), to forward as they came."""
    raw: bytes = b""
    read_line = rfile.readline  # type: ignore[attr-defined]
    read = rfile.read  # type: ignore[attr-defined]
    while True:
        line = read_line()
        raw += line
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while True:  # trailers up to the empty line
                trailer = read_line()
                raw += trailer
                if trailer in (b"\r\n", b"\n", b""):
                    return raw
        raw += read(size + 2)


def _handler(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _relay(self) -> None:
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            if chunked:
                body = _read_chunked(self.rfile)
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, keep_blank_values=True)
            seen = Seen(self.command, parts.path, query, len(body),
                        headers={k.lower(): v for k, v in self.headers.items()}, body_crc32=zlib.crc32(body))
            proxy.seen.append(seen)
            if proxy.stall:
                proxy._stop.wait(proxy.max_stall)  # never answer (until the test ends)
                self.close_connection = True
                return
            refusal = proxy.refuse(self.command, parts.path, query) if proxy.refuse else None
            if refusal is not None:
                self.send_response(refusal.status)
                self.send_header("Content-Type", refusal.content_type)
                self.send_header("Content-Length", str(len(refusal.body)))
                self.end_headers()
                self.wfile.write(refusal.body)
                return
            host = urlsplit(proxy.upstream)
            conn = http.client.HTTPConnection(host.hostname or "127.0.0.1", host.port, timeout=60)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP or (chunked and name.lower() == "transfer-encoding"):
                        conn.putheader(name, value)
                conn.endheaders()
                if body:
                    conn.send(body)
                resp = conn.getresponse()
                data = resp.read()
                seen.answer_bytes = len(data)
                self.send_response(resp.status, resp.reason)
                for name, value in resp.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _relay

    return Handler


def wait_until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)
