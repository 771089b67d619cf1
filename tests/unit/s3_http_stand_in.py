"""Servers on 127.0.0.1 for the timeout tests (test_timeouts): real sockets, so that a client really waits.

- `Unanswering`: accepts every connection and never answers, as a paused MinIO does (the kernel still accepts).
- `TinyS3`: the few S3 calls that `dvc push` and `dvc pull` make (HEAD, GET, list, PUT), over HTTP; while
  `away`, it answers nothing, until the first client that waited on it hangs up: then it is back.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape


class Unanswering:
    """A TCP server that accepts and never answers. `connections`: how many clients it accepted."""

    def __init__(self):
        self._server = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def connections(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                self._held.append(self._server.accept()[0])
            except OSError:  # closed
                return

    def close(self) -> None:
        self._server.close()
        for connection in self._held:
            connection.close()


class _S3Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TinyS3

    def log_message(self, *args) -> None:  # quiet
        pass

    def handle(self) -> None:
        if self.server.away.is_set():
            # read what the client sends and answer nothing, until it gives up and hangs up
            while self.connection.recv(65536):
                pass
            self.server.away.clear()
            return
        super().handle()

    def _object(self) -> tuple[str, str, dict]:
        url = urlsplit(self.path)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        return bucket, key, parse_qs(url.query)

    def _answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _found(self, body: bytes) -> dict:
        return {"ETag": f'"{hashlib.md5(body).hexdigest()}"', "Last-Modified": formatdate(usegmt=True)}

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
        bucket, key, _ = self._object()
        body = self.server.objects.get((bucket, key))
        if not key:
            self._answer(200)
        elif body is None:
            self._answer(404)
        else:
            self._answer(200, body, self._found(body))

    def do_GET(self) -> None:  # noqa: N802
        bucket, key, query = self._object()
        if not key:  # ListObjectsV2
            prefix = query.get("prefix", [""])[0]
            keys = sorted(k for b, k in self.server.objects if b == bucket and k.startswith(prefix))
            contents = "".join(
                f"<Contents><Key>{escape(k)}</Key><Size>{len(self.server.objects[bucket, k])}</Size>"
                f"<LastModified>2030-01-01T00:00:00.000Z</LastModified></Contents>"
                for k in keys
            )
            listing = (
                f"<ListBucketResult><Name>{bucket}</Name><Prefix>{escape(prefix)}</Prefix>"
                f"<KeyCount>{len(keys)}</KeyCount><IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
            )
            self._answer(200, listing.encode(), {"Content-Type": "application/xml"})
            return
        body = self.server.objects.get((bucket, key))
        if body is None:
            error = b"<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>"
            self._answer(404, error, {"Content-Type": "application/xml"})
        else:
            self._answer(200, body, self._found(body))

    def do_PUT(self) -> None:  # noqa: N802
        bucket, key, _ = self._object()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.objects[bucket, key] = body
        self._answer(200, headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})


class TinyS3(ThreadingHTTPServer):
    """An S3 of one dict, `objects[(bucket, key)]`, on a free port of 127.0.0.1 (`url`)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _S3Handler)
        self.objects: dict[tuple[str, str], bytes] = {}
        self.away = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
