"""Byte ranges of remote AEF tiles over HTTP(S): checked, retried, counted, and handed to GDAL.

Why not GDAL's own ``/vsicurl/`` for ``http(s)://`` roots: measured against ``tests/aef_server.py``
(GDAL 3.10 in the rasterio wheel), a connection dropped while the TIFF header is read makes GDAL take
the short body for the end of the file and return every pixel as nodata (-128) WITHOUT an error (the
place would silently become "open sea"), and a 503 or a timeout on the first request is cached as
"does not exist" for the rest of the process. Here every response is checked against the range that was
asked for (status 206, ``Content-Range``, length); 5xx, 429, timeouts and dropped connections are retried
with exponential backoff and counted; 403 and 404 are one-line errors naming the file.

GDAL still does all TIFF decoding: it reads through :class:`RemoteTile` (rasterio's ``opener=``). Small
header reads are served from 64 KiB chunks; before a window is decoded, :meth:`RemoteTile.prefetch`
fetches every block the window needs (their offsets come from GDAL's ``BLOCK_OFFSET_x_y`` items) in
parallel, so a 64-band window costs one round trip instead of 64 sequential ones. Prefetched blocks stay
until :meth:`RemoteTile.release`: a one-off read drops them at once, a pull keeps each block until the
last of its tile's windows that needs it has been read (one fetch per block per pull).
"""

from __future__ import annotations

import http.client
import random
import socket
import ssl
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from . import GeoError

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
CHUNK = 1 << 16  # header reads come in small pieces; fetch them 64 KiB at a time
MERGE_GAP = 256  # blocks this close share a request: neighbours in a row, with GDAL's 4-byte leader and trailer
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


class RemoteTile:
    """One remote file as the seekable, readable object GDAL reads through (rasterio ``opener=``).

    Prefetched ranges (:meth:`prefetch`) and 64 KiB header chunks are kept in memory; a failure inside a
    GDAL callback is remembered in ``error`` and re-raised by :meth:`check` after the GDAL call, because
    GDAL would otherwise take a failed read for a short file and return nodata.
    """

    def __init__(self, client: HttpClient, url: str, max_chunks: int = 64):
        self.client, self.url = client, url
        self.size = client.size(url)
        self.error: BaseException | None = None
        self._chunks: OrderedDict[int, bytes] = OrderedDict()
        self._max_chunks = max_chunks
        self._ranges: dict[int, bytes] = {}  # prefetched: start -> bytes
        self._lock = threading.Lock()
        self._chunk(0)  # the header, fetched here so that its errors are ours, not GDAL's

    def read_at(self, pos: int, n: int) -> bytes:
        try:
            n = min(n, max(self.size - pos, 0))
            return self._bytes(pos, n)
        except BaseException as err:
            self.error = err
            raise

    def get_byte_ranges(self, offsets, sizes) -> list[bytes]:
        try:
            hits = [self._cached(o, s) for o, s in zip(offsets, sizes)]
            missing = [(int(o), int(s)) for o, s, h in zip(offsets, sizes, hits) if h is None]
            fetched = iter(self.client.get_ranges(self.url, missing, merge_gap=MERGE_GAP))
            return [h if h is not None else next(fetched) for h in hits]
        except BaseException as err:
            self.error = err
            raise

    # ours
    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Fetch ``(start, length)`` ranges in parallel and keep them until :meth:`release`."""
        todo = [(int(s), int(n)) for s, n in ranges if n > 0 and self._cached(s, n) is None]
        for (s, _), body in zip(todo, self.client.get_ranges(self.url, todo, merge_gap=MERGE_GAP)):
            with self._lock:
                self._ranges[s] = body

    def release(self, ranges: list[tuple[int, int]] | None = None) -> None:
        """Forget prefetched ranges: all of them (after a one-off read), or those listed (``(start, length)`` as
        prefetched) once no later window of the tile needs them, so that a pull fetches each block once."""
        with self._lock:
            if ranges is None:
                self._ranges.clear()
            else:
                for start, _ in ranges:
                    self._ranges.pop(int(start), None)

    def check(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise err if isinstance(err, GeoError) else RemoteError(f"{self.url}: {err}", self.url)

    def _cached(self, start: int, n: int) -> bytes | None:
        with self._lock:
            body = self._ranges.get(start)
            if body is not None and len(body) >= n:
                return body[:n]
            for s, b in self._ranges.items():
                if s <= start and start + n <= s + len(b):
                    return b[start - s:start - s + n]
        return None

    def _bytes(self, start: int, n: int) -> bytes:
        if n <= 0:
            return b""
        hit = self._cached(start, n)
        if hit is not None:
            return hit
        if n >= CHUNK:
            return self.client.get_range(self.url, start, n)
        first, last = start // CHUNK, (start + n - 1) // CHUNK
        data = b"".join(self._chunk(k) for k in range(first, last + 1))
        return data[start - first * CHUNK:start - first * CHUNK + n]

    def _chunk(self, k: int) -> bytes:
        with self._lock:
            if k in self._chunks:
                self._chunks.move_to_end(k)
                return self._chunks[k]
        body = self.client.get_range(self.url, k * CHUNK, min(CHUNK, self.size - k * CHUNK))
        with self._lock:
            self._chunks[k] = body
            while len(self._chunks) > self._max_chunks:
                self._chunks.popitem(last=False)
        return body


class _Handle:
    """One open file of a :class:`RemoteTile` (GDAL may hold several at once): its own position, shared bytes."""

    def __init__(self, tile: RemoteTile):
        self.tile, self.pos = tile, 0

    def read(self, n: int = -1) -> bytes:
        n = self.tile.size - self.pos if n is None or n < 0 else n
        data = self.tile.read_at(self.pos, n)
        self.pos += len(data)
        return data

    def get_byte_ranges(self, offsets, sizes) -> list[bytes]:
        return self.tile.get_byte_ranges(offsets, sizes)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.tile.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Opener:
    """rasterio's file-container protocol over one :class:`RemoteTile`: only the tile itself exists (no sidecar
    ``.aux.xml`` / ``.msk`` / ``.ovr`` files, no listings), so opening a tile costs no requests for absent files
    (GDAL probes a dozen sidecar names per open)."""

    def __init__(self, client: HttpClient, url: str):
        self.client, self.url = client, url
        self.remote = RemoteTile(client, url)

    def open(self, path, mode="rb", **kwds) -> _Handle:
        if str(path) != self.url:
            raise FileNotFoundError(path)
        if "w" in mode or "a" in mode or "+" in mode:
            raise PermissionError(f"{path}: remote AEF tiles are read-only")
        return _Handle(self.remote)

    def isfile(self, path) -> bool:
        return str(path) == self.url

    def isdir(self, path) -> bool:
        return False

    def ls(self, path) -> list:
        return []

    def mtime(self, path) -> int:
        return 0

    def rm(self, path) -> None:
        raise PermissionError(f"{path}: remote AEF tiles are read-only")

    def size(self, path) -> int:
        if str(path) != self.url:
            raise FileNotFoundError(path)
        return self.remote.size


def _register() -> None:
    from rasterio.abc import MultiByteRangeResourceContainer

    MultiByteRangeResourceContainer.register(Opener)  # so GDAL hands it many ranges at once


_register()


def open_http(url: str, client: HttpClient):
    """(rasterio dataset, its :class:`RemoteTile`) for a tile URL read through ``client``."""
    import warnings

    import rasterio

    opener = Opener(client, url)
    tile = opener.remote  # fetch the size and the header first: their errors are one line naming the URL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = rasterio.open(url, opener=opener, driver="GTiff")
        except rasterio.errors.RasterioIOError as err:
            tile.check()
            raise RemoteError(f"cannot open AEF tile {url}: {str(err).splitlines()[0]}", url) from None
    tile.check()
    return ds, tile


def block_ranges(ds, window, bands=None) -> list[tuple[int, int]]:
    """``(offset, length)`` of every stored block (of every band) that ``window`` touches, read from GDAL's
    ``BLOCK_OFFSET_x_y`` / ``BLOCK_SIZE_x_y`` items (sparse blocks, offset 0, are left out)."""
    bh, bw = ds.block_shapes[0]
    c0, r0 = int(window.col_off), int(window.row_off)
    c1, r1 = c0 + int(window.width), r0 + int(window.height)
    out = []
    for b in bands or range(1, ds.count + 1):
        for by in range(r0 // bh, (r1 - 1) // bh + 1):
            for bx in range(c0 // bw, (c1 - 1) // bw + 1):
                off = ds.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=b)
                size = ds.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=b)
                if off and size and int(off) > 0:
                    out.append((int(off), int(size)))
    return out
