"""HTTP requests bounded by a deadline on the whole exchange: connect, TLS handshake, status line, headers and body.

A timeout of ``requests``/``urllib3`` bounds each wait for bytes, and every byte that arrives starts the wait again: a
server that sends its headers (or its body) one byte a second holds a request for as long as it likes. Here a
watchdog timer closes the request's connection when its deadline passes, whatever the server is doing, so the
blocked read returns at once; the ``with`` block then raises :class:`DeadlineExceeded` (even where the cut-off
connection looked like a short, complete answer)::

    with net.session() as s, net.Deadline(5.0) as deadline, s.get(url, stream=True, timeout=deadline.timeouts(10)):
        ...

Only requests sent through a :func:`session` (its connection classes report each connection they open or send on)
from the thread that entered the ``with`` are watched. The sockets are shut down, not closed, so the descriptor
stays with its connection object and cannot be reused by another file while a read is still in flight.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection

if TYPE_CHECKING:
    from urllib3 import PoolManager

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("recipe_lib_deadline", default=None)


class DeadlineExceeded(Exception):
    """The request was not complete within its deadline; its connection was closed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"not complete within {seconds:g} s")
        self.seconds = seconds


class Deadline:
    """``with Deadline(seconds):`` the requests sent inside (through a :func:`session`, on this thread) are cut off
    ``seconds`` after the ``Deadline`` was made; ``None`` sets no bound. Leaving the block after the cut-off raises
    :class:`DeadlineExceeded` (chained to the error the closed connection caused, if any)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds
        self.fired = False
        self._connections: list[HTTPConnection] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._token: contextvars.Token[Deadline | None] | None = None

    def remaining(self) -> float | None:
        """Seconds left (never below 0), or None without a bound."""
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.fired or (self.end is not None and time.monotonic() >= self.end)

    def timeouts(self, timeout: float) -> tuple[float, float]:
        """``(connect, read)`` timeouts for ``requests``: ``timeout`` each, but never past the deadline."""
        left = self.remaining()
        wait = timeout if left is None else max(0.001, min(timeout, left))
        return wait, wait

    def watch(self, connection: HTTPConnection) -> None:
        """Cut ``connection`` off at the deadline (at once when it has passed)."""
        with self._lock:
            if not self.fired:
                self._connections.append(connection)
                return
        _shut(connection)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            connections, self._connections = self._connections, []
        for connection in connections:
            _shut(connection)

    def __enter__(self) -> Deadline:
        self._token = _current.set(self)
        left = self.remaining()
        if left is not None:
            self._timer = threading.Timer(left, self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if self._timer is not None:
            self._timer.cancel()
        if self._token is not None:
            _current.reset(self._token)
        with self._lock:
            self._connections = []
        if self.seconds is not None and self.expired and (exc is None or isinstance(exc, Exception)):
            raise DeadlineExceeded(self.seconds) from exc
        return False


def _shut(connection: HTTPConnection) -> None:
    """Shut the connection's socket down (both ways): a read blocked on it returns, the descriptor stays open until
    urllib3 closes the connection. The plain socket's method is used for TLS sockets too (it acts on the
    descriptor; the TLS socket's own ``shutdown`` would drop its TLS state under a thread still reading)."""
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch(connection: HTTPConnection) -> None:
    deadline = _current.get()
    if deadline is not None:
        deadline.watch(connection)


class _Watched:
    """Reports the connection to the thread's :class:`Deadline` when it connects (for https: before the TLS
    handshake) and when it sends a request (a kept-alive connection is reused without connecting again)."""

    def connect(self) -> None:
        _watch(self)  # type: ignore[arg-type]
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    """An http connection the thread's deadline can close."""


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    """An https connection the thread's deadline can close, from before its TLS handshake."""


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def _use_watched_pools(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


class DeadlineAdapter(HTTPAdapter):
    """``requests``' adapter with connections a :class:`Deadline` can cut off, directly and through an http(s)
    proxy. A SOCKS proxy keeps urllib3's own connections: the deadline cannot close those, only the per-read timeout
    bounds each wait, and the late request raises :class:`DeadlineExceeded` when it ends."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _use_watched_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        known = proxy in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not known and not proxy.lower().startswith("socks"):
            _use_watched_pools(manager)
        return manager


def session() -> requests.Session:
    """A ``requests.Session`` whose http(s) requests a :class:`Deadline` can cut off."""
    s = requests.Session()
    s.mount("http://", DeadlineAdapter())
    s.mount("https://", DeadlineAdapter())
    return s
