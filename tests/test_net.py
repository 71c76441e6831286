"""The deadline on a whole HTTP request (``recipe_lib.net``) against real servers on 127.0.0.1 that drip: the status
line and headers, the body, a TLS handshake, over plain and kept-alive connections and over TLS. Each dripping server
sends a byte well inside any read timeout, so only a deadline on the whole request ends it."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from recipe_lib import net

BODY = b"0123456789" * 10
EVERY = 0.2  # seconds between the bytes of a drip


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept alive, so a second request reuses the connection

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
        with contextlib.suppress(OSError):
            if self.path == "/ok":
                self.wfile.write(head + BODY)
            elif self.path == "/drip-headers":
                self._drip(head + BODY)
            elif self.path == "/drip-body":
                self.wfile.write(head)
                self._drip(BODY)

    def _drip(self, data: bytes) -> None:
        self.close_connection = True
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
            time.sleep(EVERY)


@contextlib.contextmanager
def serve(wrap: ssl.SSLContext | None = None) -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    if wrap is not None:
        httpd.socket = wrap.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _timed(url: str, seconds: float, session: requests.Session, **kwargs: object) -> tuple[float, BaseException | None]:
    """Seconds one streamed GET took under ``Deadline(seconds)`` (read timeout 30 s) and what it raised."""
    start = time.monotonic()
    try:
        with (
            net.Deadline(seconds) as deadline,
            session.get(url, stream=True, timeout=deadline.timeouts(30), **kwargs) as r,
        ):
            while r.raw.read1(1 << 16):
                pass
    except Exception as exc:  # noqa: BLE001 - the test names what it expects below
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


@pytest.mark.parametrize("path", ["/drip-headers", "/drip-body"])
def test_a_dripping_server_is_cut_at_the_deadline_on_a_new_and_a_kept_alive_connection(path):
    with serve() as port, net.session() as s:
        took, exc = _timed(f"http://127.0.0.1:{port}{path}", 1.0, s)
        assert isinstance(exc, net.DeadlineExceeded) and 0.9 < took < 2.0, (took, exc)
        # The same session: a kept-alive connection (no new connect) is watched as well.
        assert _timed(f"http://127.0.0.1:{port}/ok", 5.0, s)[1] is None
        took, exc = _timed(f"http://127.0.0.1:{port}{path}", 1.0, s)
        assert isinstance(exc, net.DeadlineExceeded) and 0.9 < took < 2.0, (took, exc)
        assert _timed(f"http://127.0.0.1:{port}/ok", 5.0, s)[1] is None, "a cut-off connection is not reused"


def test_a_body_cut_off_is_never_taken_for_a_whole_one():
    """The cut-off connection reads as the end of the body: leaving the block still raises."""
    got = b""
    with serve() as port, net.session() as s, pytest.raises(net.DeadlineExceeded):
        url = f"http://127.0.0.1:{port}/drip-body"
        with net.Deadline(1.0) as deadline, s.get(url, stream=True, timeout=deadline.timeouts(30)) as r:
            while block := r.raw.read1(1 << 16):  # b"" once the connection is cut: what the end of a body reads as
                got += block
    assert 0 < len(got) < len(BODY)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_headers_and_a_dripped_handshake_are_cut_at_the_deadline(certificate):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serve(context) as port, net.session() as s:
        assert _timed(f"https://127.0.0.1:{port}/ok", 5.0, s, verify=str(cert))[1] is None
        took, exc = _timed(f"https://127.0.0.1:{port}/drip-headers", 1.0, s, verify=str(cert))
        assert isinstance(exc, net.DeadlineExceeded) and 0.9 < took < 2.0, (took, exc)

    # A server that answers the ClientHello with a TLS record promising 16 KB, then sends it one byte at a time.
    class Handshake(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with contextlib.suppress(OSError):
                self.request.recv(4096)
                self.request.sendall(b"\x16\x03\x03\x40\x00")
                for _ in range(200):
                    self.request.sendall(b"\x00")
                    time.sleep(EVERY)

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handshake)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with net.session() as s:
            took, exc = _timed(f"https://127.0.0.1:{srv.server_address[1]}/", 1.0, s, verify=str(cert))
        assert isinstance(exc, net.DeadlineExceeded) and 0.9 < took < 2.0, (took, exc)
    finally:
        srv.shutdown()
        srv.server_close()


def test_no_deadline_and_a_deadline_not_reached_change_nothing():
    with serve() as port, net.session() as s:
        with net.Deadline(None) as unbounded:
            assert unbounded.remaining() is None and unbounded.timeouts(7) == (7, 7)
            assert s.get(f"http://127.0.0.1:{port}/ok", timeout=unbounded.timeouts(7)).content == BODY
        with net.Deadline(5.0) as deadline:
            assert s.get(f"http://127.0.0.1:{port}/ok", timeout=deadline.timeouts(30)).content == BODY
            assert deadline.timeouts(30)[0] <= 5.0
        assert not deadline.fired
        with pytest.raises(ValueError, match="not ours"), net.Deadline(5.0):
            raise ValueError("not ours")  # an error inside a deadline not reached passes unchanged
