"""Byte ranges of remote AEF tiles over HTTP(S): checked, retried, counted, and handed to GDAL.

Why not GDAL's own ``/vsicurl/`` for ``http(s)://`` roots: measured against ``tests/aef_server.py``
(GDAL 3.10 in the rasterio wheel), a connection dropped while the TIFF header is read makes GDAL take
the short body for the end of the file and return every pixel as nodata (-128) WITHOUT an error (the
place would silently become "open sea"), and a 503 or a timeout on the first request is cached as
"does not exist" for the rest of the process. Here every response is checked against the range that was
asked for (status 206, ``Content-Range``, length); 5xx, 429, timeouts and dropped connections are retried
with exponential backoff and counted; 403 and 404 are one-line errors naming the file.

GDAL still does all TIFF decoding, reading through ``aef_remote_tile.RemoteTile`` (rasterio's ``opener=``),
which gets its bytes from this client.
"""

from __future__ import annotations

import http.client
import random
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from . import GeoError

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
CHUNK = 1 << 16  # header reads come in small pieces; fetch them 64 KiB at a time
TRANSIENT = (TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException, ssl.SSLError, OSError)


class RemoteError(GeoError):
    """A remote file that cannot be had: 403/404 (``status``), or retries exhausted."""

    def __init__(self, message: str, url: str = "", status: int | None = None):
        super().__init__(message)
        self.url, self.status = url, status


class _Retry(Exception):
    """A transient failure worth another try (5xx, timeout, dropped or short body)."""


def is_http(path: str) -> bool:
    return str(path).startswith(("http://", "https://"))


@dataclass
class Stats:
    """What went over the wire: requests, body bytes received, retries by cause."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0
    causes: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, requests: int = 0, nbytes: int = 0, retry: str | None = None) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += nbytes
            if retry:
                self.retries += 1
                self.causes[retry] = self.causes.get(retry, 0) + 1

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    def as_dict(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "bytes": self.bytes, "retries": self.retries,
                    "retry_causes": dict(self.causes)}


class HttpClient:
    """HEAD and ranged GET with keep-alive connections (one per thread and host), retries and counters.

    ``retries`` further tries after the first, waiting ``backoff * 2**k`` seconds (plus jitter, at most
    ``max_wait``; a ``Retry-After`` header is honoured within that cap). ``parallel`` bounds the
    concurrent requests of one :meth:`get_ranges` call.
    """

    def __init__(self, *, timeout: float = 30.0, retries: int = 5, backoff: float = 0.2, max_wait: float = 8.0,
                 parallel: int = 8, on_bytes=None):
        self.timeout, self.retries, self.backoff, self.max_wait = timeout, retries, backoff, max_wait
        self.parallel = max(int(parallel), 1)
        self.stats = Stats()
        self.on_bytes = on_bytes  # progress callback(n) for every body received
        self._local = threading.local()
        self._sizes: dict[str, int] = {}
        self._final: dict[str, str] = {}  # url -> where its redirects end
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- public --------------------------------------------------------------------------------
    def size(self, url: str) -> int:
        """The file's size in bytes (HEAD; cached)."""
        if url not in self._sizes:
            status, headers, _ = self._request("HEAD", url)
            length = headers.get("content-length")
            if length is None or not length.isdigit():
                raise RemoteError(f"{url}: the server gave no Content-Length, so it cannot be read by ranges", url)
            self._sizes[url] = int(length)
        return self._sizes[url]

    def get_range(self, url: str, start: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``start`` (fewer only at the end of the file)."""
        if length <= 0:
            return b""
        return self._request("GET", url, (start, start + length - 1))[2]

    def get_ranges(self, url: str, ranges: list[tuple[int, int]], merge_gap: int = 0) -> list[bytes]:
        """``(start, length)`` ranges fetched in parallel; ranges closer than ``merge_gap`` bytes share a request."""
        if not ranges:
            return []
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        spans: list[list] = []  # [start, end, [indices]]
        for i in order:
            s, n = ranges[i]
            if spans and s <= spans[-1][1] + merge_gap:
                spans[-1][1] = max(spans[-1][1], s + n)
                spans[-1][2].append(i)
            else:
                spans.append([s, s + n, [i]])
        if len(spans) == 1:
            bodies = [self.get_range(url, spans[0][0], spans[0][1] - spans[0][0])]
        else:
            bodies = list(self._executor().map(lambda sp: self.get_range(url, sp[0], sp[1] - sp[0]), spans))
        out: list[bytes] = [b""] * len(ranges)
        for (s0, _, idx), body in zip(spans, bodies):
            for i in idx:
                s, n = ranges[i]
                out[i] = body[s - s0:s - s0 + n]
        return out

    def download(self, url: str, dest, chunk: int = 1 << 23) -> int:
        """The whole file into the open binary file ``dest``, ``chunk`` bytes per ranged request, so a dropped
        connection costs one chunk, not the file. Returns the bytes written."""
        size, done = self.size(url), 0
        while done < size:
            body = self.get_range(url, done, min(chunk, size - done))
            dest.write(body)
            done += len(body)
        return done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __getstate__(self):
        """Picklable (a store holding it goes to worker processes): connections and pools are made anew."""
        state = self.__dict__.copy()
        state.update(_local=None, _pool=None, _pool_lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local, self._pool_lock = threading.local(), threading.Lock()

    # -- internals -------------------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="aef-http")
            return self._pool

    def _connection(self, scheme: str, netloc: str, fresh: bool = False):
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        key = (scheme, netloc)
        if fresh and key in conns:
            conns.pop(key).close()
        if key not in conns:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conns[key] = cls(netloc, timeout=self.timeout)
        return conns[key]

    def _request(self, method: str, url: str, rng: tuple[int, int] | None = None):
        """One request with retries. Returns (status, lower-case headers, body)."""
        attempt = 0
        while True:
            try:
                return self._once(method, self._final.get(url, url), url, rng, fresh=attempt > 0)
            except _Retry as why:
                cause, wait = why.args[0], why.args[1]
                if attempt >= self.retries:
                    raise RemoteError(f"{url}: gave up after {attempt + 1} tries ({cause})", url) from None
                self.stats.add(retry=cause.split(":")[0])
                delay = min(self.backoff * 2 ** attempt * (1 + random.random() * 0.25), self.max_wait)
                time.sleep(max(delay, min(wait or 0.0, self.max_wait)))
                attempt += 1

    def _once(self, method, target, url, rng, fresh, hops: int = 0):
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https"):
            raise RemoteError(f"{url}: only http(s) URLs are read by ranges here", url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Accept-Encoding": "identity", "User-Agent": "fusar-gpt-aef"}
        if rng is not None:
            headers["Range"] = f"bytes={rng[0]}-{rng[1]}"
        try:
            conn = self._connection(parts.scheme, parts.netloc, fresh)
            conn.request(method, path or "/", headers=headers)
            resp = conn.getresponse()
            status, hdrs = resp.status, {k.lower(): v for k, v in resp.getheaders()}
            body = resp.read()  # also for HEAD (empty): the connection is not reusable until the response is read
        except TRANSIENT as err:
            self._drop(parts)
            kind = ("timeout" if isinstance(err, (TimeoutError, socket.timeout)) else
                    "dropped" if isinstance(err, (http.client.IncompleteRead, http.client.RemoteDisconnected,
                                                  ConnectionResetError)) else "connection")
            raise _Retry(f"{kind}: {type(err).__name__}", 0.0) from None
        self.stats.add(requests=1, nbytes=len(body))
        if method == "GET" and body and self.on_bytes is not None:
            self.on_bytes(len(body))
        if hdrs.get("connection", "").lower() == "close":
            self._drop(parts)
        if status in (301, 302, 303, 307, 308) and "location" in hdrs and hops < 5:
            self._final[url] = urljoin(target, hdrs["location"])
            return self._once(method, self._final[url], url, rng, fresh, hops + 1)
        if status in RETRY_STATUS:
            after = hdrs.get("retry-after", "")
            raise _Retry(f"http {status}", float(after) if after.replace(".", "", 1).isdigit() else 0.0)
        if status in (401, 403):
            raise RemoteError(f"{url}: access denied (HTTP {status}); the bucket is public, so the path is probably "
                              f"wrong (or the mirror needs credentials)", url, status)
        if status == 404:
            raise RemoteError(f"{url}: not found (HTTP 404)", url, 404)
        if status == 416:
            raise RemoteError(f"{url}: range {rng} is past the end of the file (HTTP 416): the index does not "
                              f"describe this file", url, 416)
        if status >= 400:
            raise RemoteError(f"{url}: HTTP {status}", url, status)
        if method == "HEAD" or rng is None:
            return status, hdrs, body
        want = rng[1] - rng[0] + 1
        if status == 200:  # a server that ignores Range sends everything: keep what was asked for
            part = body[rng[0]:rng[1] + 1]
            if len(body) < int(hdrs.get("content-length", len(body))):
                raise _Retry("short body", 0.0)
            return status, hdrs, part
        start = _content_range_start(hdrs.get("content-range", ""))
        if start != rng[0]:
            raise RemoteError(f"{url}: asked for bytes {rng[0]}-{rng[1]}, got {hdrs.get('content-range')!r}", url)
        total = _content_range_total(hdrs.get("content-range", ""))
        if len(body) != want and not (total is not None and rng[0] + len(body) == total):
            raise _Retry(f"short body: {len(body)} of {want} bytes", 0.0)
        return status, hdrs, body

    def _drop(self, parts) -> None:
        conns = getattr(self._local, "conns", None) or {}
        conn = conns.pop((parts.scheme, parts.netloc), None)
        if conn is not None:
            conn.close()


def _content_range_start(value: str) -> int | None:
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _content_range_total(value: str) -> int | None:
    try:
        return int(value.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None

