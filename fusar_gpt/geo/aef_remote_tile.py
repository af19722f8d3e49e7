"""One remote AEF tile as the file GDAL reads (rasterio ``opener=``), fed by the checked ``aef_http.HttpClient``.

Why apart from the client: the client knows HTTP (ranges, retries, counts); this knows what GDAL asks of a
file. Small header reads are served from 64 KiB chunks; before a window is decoded, :meth:`RemoteTile.prefetch`
fetches every block the window needs (their offsets come from GDAL's ``BLOCK_OFFSET_x_y`` items) in parallel,
so a 64-band window costs one round trip instead of 64 sequential ones. Prefetched blocks stay until
:meth:`RemoteTile.release`: a one-off read drops them at once, a pull keeps each block until the last of its
tile's windows that needs it has been read (one fetch per block per pull).
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import rasterio
from rasterio.abc import MultiByteRangeResourceContainer

from ..io_atomic import write_bytes
from . import GeoError
from .aef_http import CHUNK, HttpClient, RemoteError

MERGE_GAP = 256  # blocks this close share a request: neighbours in a row, with GDAL's 4-byte leader and trailer


class RemoteTile:
    """One remote file as the seekable, readable object GDAL reads through (rasterio ``opener=``).

    Prefetched ranges (:meth:`prefetch`) and 64 KiB header chunks are kept in memory; a failure inside a
    GDAL callback is remembered in ``error`` and re-raised by :meth:`check` after the GDAL call, because
    GDAL would otherwise take a failed read for a short file and return nodata.

    ``spill``: a folder where prefetched ranges are also written (one file each, atomically) until
    :meth:`release` lets them go. A pull sets it: a block that a finished window and a later one share then
    survives a killed process, and the re-run reads it from disk instead of fetching it a second time.
    """

    def __init__(self, client: HttpClient, url: str, max_chunks: int = 64):
        self.client, self.url = client, url
        self.size = client.size(url)
        self.error: BaseException | None = None
        self._chunks: OrderedDict[int, bytes] = OrderedDict()
        self._max_chunks = max_chunks
        self._ranges: dict[int, bytes] = {}  # prefetched: start -> bytes
        self._lock = threading.Lock()
        self.spill: Path | None = None
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
        todo = [(s, n) for s, n in todo if not self._unspill(s, n)]
        for (s, n), body in zip(todo, self.client.get_ranges(self.url, todo, merge_gap=MERGE_GAP)):
            with self._lock:
                self._ranges[s] = body
            if self.spill is not None:
                write_bytes(self._spilled(s, n), body)

    def release(self, ranges: list[tuple[int, int]] | None = None) -> None:
        """Forget prefetched ranges: all of them (after a one-off read), or those listed (``(start, length)`` as
        prefetched) once no later window of the tile needs them, so that a pull fetches each block once."""
        with self._lock:
            if ranges is None:
                self._ranges.clear()
            else:
                for start, n in ranges:
                    self._ranges.pop(int(start), None)
                    if self.spill is not None:
                        self._spilled(start, n).unlink(missing_ok=True)

    def _spilled(self, start: int, n: int) -> Path:
        return self.spill / f"{int(start)}-{int(n)}"

    def _unspill(self, start: int, n: int) -> bool:
        """Take a range a killed earlier run had fetched and not yet used up from ``spill``, if it is there whole."""
        if self.spill is None:
            return False
        try:
            body = self._spilled(start, n).read_bytes()
        except OSError:
            return False
        if len(body) != n:
            return False
        with self._lock:
            self._ranges[start] = body
        return True

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
    MultiByteRangeResourceContainer.register(Opener)  # so GDAL hands it many ranges at once


_register()


def open_http(url: str, client: HttpClient):
    """(rasterio dataset, its :class:`RemoteTile`) for a tile URL read through ``client``."""
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
