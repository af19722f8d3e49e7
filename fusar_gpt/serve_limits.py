"""Bounds on what concurrent requests may cost the server at once: pixels being decoded.

The per-image pixel cap bounds one request; it does not bound six at once. A 1-bit PNG of 9500 x 9500 px is
11 KB on the wire and about 90 MB once decoded (more while it is converted and resized): six of them in the
worker threads took the server from 0.8 to 5.8 GB (measured). So decoding draws from one shared budget of
pixels (by default one maximum-size image): a request waits for its share, and one that cannot get it within
its own deadline is answered 503 instead of taking the memory. The header is read first (no pixel decoded), so
the wait costs nothing.
"""

from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .geo.raster import SAR_DRIVER, open_raster


class Busy(Exception):
    """The budget could not be had in time (the server answers 503)."""


class PixelBudget:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the pixel budget must be positive, got {capacity}")
        self.capacity, self.used = int(capacity), 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, pixels: int | None, timeout: float):
        """Hold ``pixels`` of the budget (capped at the whole budget; ``None``, a size the header did not tell, is
        the whole budget) for the block; :class:`Busy` after ``timeout`` seconds of waiting."""
        want = self.capacity if pixels is None else max(1, min(int(pixels), self.capacity))
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while self.used + want > self.capacity:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    if self.used + want > self.capacity:
                        raise Busy(f"the server is decoding other images ({self.used} of {self.capacity} pixels "
                                   f"in use); retry shortly")
            self.used += want
        try:
            yield want
        finally:
            with self._cond:
                self.used -= want
                self._cond.notify_all()


def header_size(path: Path | None = None, data: bytes | None = None) -> tuple[int, int] | None:
    """``(width, height)`` from the image's header alone, no pixel decoded; None when no reader can tell.

    PIL reads PNG/JPEG and the TIFFs it knows; the TIFFs it cannot parse (2-band, complex, int16: most SAR) are
    asked of GDAL's GTiff driver, for an upload through an in-memory file. Without the second reader such an upload
    counted as 0 pixels, so it took nothing from the budget: four concurrent 14 KB complex64 uploads of 10000 x
    10000 px took the server from 0.4 to 7.9 GB (measured)."""
    from PIL import Image, UnidentifiedImageError
    from rasterio.errors import RasterioError

    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:  # lazy: the header only
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        pass
    try:
        if data is None:
            with open_raster(path) as ds:
                return int(ds.width), int(ds.height)
        from rasterio.io import MemoryFile

        with MemoryFile(data) as mem, mem.open(driver=SAR_DRIVER) as ds:  # GeoTIFF only, as every raster read
            return int(ds.width), int(ds.height)
    except (RasterioError, OSError, ValueError):
        return None


def header_pixels(path: Path | None = None, data: bytes | None = None) -> int | None:
    """Width x height from the header alone (:func:`header_size`); None when unknown (the whole budget is then
    reserved while the reader refuses it)."""
    size = header_size(path, data)
    return None if size is None else size[0] * size[1]


def header_timeout_protocol(seconds: float):
    """uvicorn's h11 protocol with a deadline for each request's headers. uvicorn starts its keep-alive timer only
    after a response and restarts it on every byte, so a client that connects and sends its headers one byte at a
    time (or never) holds a connection and a socket indefinitely; no setting of uvicorn or h11 bounds it, hence
    this subclass. The deadline is armed when the connection opens and again after each response: a keep-alive
    connection's next request gets the same ``seconds``, and so does the rest of a body the app stopped reading
    (after a 408 or 413), which h11 would otherwise drain byte by byte for ever. The connection is closed when no
    new request has begun by then. The body has its own deadline in the app (``ServeConfig.body_timeout_s``)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.headers_timer = None
            self._arm()

        def _arm(self) -> None:
            """(Re)start the deadline for the next request: it is met when a new cycle (a request whose headers
            are complete) replaces the one current now (None on a fresh connection)."""
            if self.headers_timer is not None:
                self.headers_timer.cancel()
            waiting_after = self.cycle
            self.headers_timer = self.loop.call_later(seconds, self.headers_late, waiting_after)

        def headers_late(self, waiting_after=None) -> None:
            if self.cycle is waiting_after and not self.transport.is_closing():
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # may start a pipelined request at once: then its cycle is current
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm()

        def connection_lost(self, exc) -> None:
            if self.headers_timer is not None:
                self.headers_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutH11Protocol
