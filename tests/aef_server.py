"""A real HTTP server on loopback that serves a folder the way a public bucket serves AEF tiles.

Not a mock: GDAL's ``/vsicurl/`` and our pull client talk to it over TCP exactly as they talk to
``https://data.source.coop/...``: HEAD for the size, ``Range: bytes=a-b`` GETs answered with 206 and
``Content-Range`` (several ranges in one request as ``multipart/byteranges``), ``Accept-Ranges: bytes``,
404 for what is not there, no directory listings. On top of that it misbehaves on request, as real
networks do, so that retries and error messages are tested against the real client stack:

- ``fail_first[path] = n``: the first n requests for ``path`` (from when it is set) get 503;
- ``drop_first[path] = n``: the first n GETs for ``path`` send the headers and half the body, then
  the connection is closed (a dropped connection mid-body);
- ``slow = s``: every response waits s seconds first;
- ``slow_first[path] = n``: the first n requests for ``path`` wait ``slow_first_s`` seconds first (a
  client with a shorter timeout gives up on them, and its retries are answered at once);
- ``missing`` / ``forbidden``: paths answered 404 / 403 although the file exists.

Every request is logged (method, path, range, status, body bytes sent, whether it was signed) so tests and
the benchmark can count what went over the wire. Paths are relative to the served folder
(``2024/31N/t.tiff``). Signatures are not checked: an S3 client (GDAL's ``/vsis3/`` with
``AWS_S3_ENDPOINT`` pointed here) reads it as an anonymous public bucket, signed or not.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


@dataclass
class Faults:
    fail_first: dict[str, int] = field(default_factory=dict)
    drop_first: dict[str, int] = field(default_factory=dict)
    slow: float = 0.0
    slow_first: dict[str, int] = field(default_factory=dict)
    slow_first_s: float = 1.0
    missing: set[str] = field(default_factory=set)
    forbidden: set[str] = field(default_factory=set)
    refuse_offsets: set[int] = field(default_factory=set)  # 403 for any range covering one of these bytes


@dataclass
class Hit:
    method: str
    path: str
    range: str | None
    status: int
    sent: int
    signed: bool = False  # an ``Authorization`` header came with it (an S3 client with credentials)


class BucketServer:
    """Serve ``root`` on ``http://127.0.0.1:PORT/``; ``url`` is the base, ``log`` the requests seen."""

    def __init__(self, root, host: str = "127.0.0.1"):
        self.root = Path(root).resolve()
        self.faults = Faults()
        self.log: list[Hit] = []
        self._lock = threading.Lock()
        server = self

        class Handler(_Handler):
            owner = server

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="aef-bucket-server", daemon=True)

    def start(self) -> BucketServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        """Forget faults, counters and the request log (between tests sharing one server)."""
        with self._lock:
            self.faults = Faults()
            self.log.clear()

    def bytes_sent(self, prefix: str = "") -> int:
        with self._lock:
            return sum(h.sent for h in self.log if h.path.startswith(prefix))

    def hits(self, path: str | None = None, status: int | None = None) -> list[Hit]:
        with self._lock:
            return [h for h in self.log if (path is None or h.path == path) and (status is None or h.status == status)]

    def _take(self, budget: dict[str, int], path: str) -> bool:
        """Whether this request is one of the n a fault still has for ``path`` (and use it up)."""
        with self._lock:
            left = budget.get(path, 0)
            if left > 0:
                budget[path] = left - 1
            return left > 0

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.log.append(hit)


class _Handler(BaseHTTPRequestHandler):
    owner: BucketServer
    protocol_version = "HTTP/1.1"  # keep-alive, as GDAL's curl expects from a bucket
    disable_nagle_algorithm = True  # headers and body go out as two writes: without this, 40 ms per answer

    def log_message(self, *args):  # quiet: the test log is the record
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    # ---------------------------------------------------------------------------------------------
    def _serve(self, body: bool) -> None:
        srv, faults = self.owner, self.owner.faults
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        if faults.slow:
            time.sleep(faults.slow)
        if srv._take(faults.slow_first, rel):
            time.sleep(faults.slow_first_s)
        if srv._take(faults.fail_first, rel):
            return self._status(503, rel, rng, body, "Slow Down")
        if rel in faults.missing:
            return self._status(404, rel, rng, body, "NoSuchKey")
        if rel in faults.forbidden:
            return self._status(403, rel, rng, body, "AccessDenied")
        target = (srv.root / rel).resolve()
        if srv.root not in target.parents or not target.is_file():  # no listings, nothing outside the root
            return self._status(404, rel, rng, body, "NoSuchKey")
        size = target.stat().st_size
        ranges = _parse_ranges(rng, size) if rng else None
        if ranges and any(a <= o <= b for a, b in ranges for o in faults.refuse_offsets):
            return self._status(403, rel, rng, body, "AccessDenied")  # a fetch that fails mid-pull, every time
        if ranges == []:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            srv._record(Hit(self.command, rel, rng, 416, 0, self._signed()))
            return self.end_headers()
        with open(target, "rb") as fh:
            if ranges is None:
                status, payload, ctype, extra = 200, None, "image/tiff", {}
                parts = [(0, size - 1)]
            elif len(ranges) == 1:
                a, b = ranges[0]
                status, ctype, extra = 206, "image/tiff", {"Content-Range": f"bytes {a}-{b}/{size}"}
                parts = ranges
            else:
                status, ctype, extra, parts = 206, "multipart/byteranges; boundary=AEFBOUNDARY", {}, ranges
            if status == 206 and len(parts) > 1:
                chunks = []
                for a, b in parts:
                    fh.seek(a)
                    chunks.append(f"--AEFBOUNDARY\r\nContent-Type: image/tiff\r\nContent-Range: bytes {a}-{b}/{size}"
                                  f"\r\n\r\n".encode() + fh.read(b - a + 1) + b"\r\n")
                payload = b"".join(chunks) + b"--AEFBOUNDARY--\r\n"
            else:
                a, b = parts[0]
                fh.seek(a)
                payload = fh.read(b - a + 1)
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("ETag", f'"{size:x}-{int(target.stat().st_mtime_ns):x}"')
        for k, v in extra.items():
            self.send_header(k, v)
        # logged before the headers go out, so that a client that has its answer finds it in the log
        if not body:
            srv._record(Hit(self.command, rel, rng, status, 0, self._signed()))
            with contextlib.suppress(OSError):  # a client that timed out has gone
                self.end_headers()
            return
        if srv._take(faults.drop_first, rel):
            half = payload[: max(len(payload) // 2, 1)]
            srv._record(Hit(self.command, rel, rng, -status, len(half), self._signed()))  # negative: dropped
            with contextlib.suppress(OSError):
                self.end_headers()
                self.wfile.write(half)
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        srv._record(Hit(self.command, rel, rng, status, len(payload), self._signed()))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.end_headers()
            self.wfile.write(payload)

    def _signed(self) -> bool:
        return "Authorization" in self.headers

    def _status(self, code: int, rel: str, rng, body: bool, s3_code: str) -> None:
        msg = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{s3_code}</Code>"
               f"<Key>{rel}</Key></Error>").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(msg)))
        if code == 503:
            self.send_header("Retry-After", "0")
        self.owner._record(Hit(self.command, rel, rng, code, len(msg) if body else 0, self._signed()))
        self.end_headers()
        if body:
            with contextlib.suppress(OSError):
                self.wfile.write(msg)


def _parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """RFC 9110 byte ranges -> inclusive (first, last) pairs; [] when none is satisfiable, None when malformed
    (a malformed Range header is ignored: the whole file is sent)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        return None
    out = []
    for part in spec.split(","):
        m = _RANGE.match(part)
        if not m or (m.group(1) == "" and m.group(2) == ""):
            return None
        if m.group(1) == "":  # suffix range: the last n bytes
            n = int(m.group(2))
            if n > 0:
                out.append((max(size - n, 0), size - 1))
            continue
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else size - 1
        if b < a:
            return None
        if a < size:
            out.append((a, min(b, size - 1)))
    return out


@contextlib.contextmanager
def serve(root):
    """``with serve(folder) as server: ...`` -- a started server, stopped afterwards."""
    server = BucketServer(root).start()
    try:
        yield server
    finally:
        server.stop()


def write_url_index(root, base_url: str, name: str = "aef_index.parquet", into=None) -> Path:
    """An official-layout index of the tiles under ``root`` whose ``path`` column holds their URLs on the
    server (``{base_url}/{year}/{zone}/{file}``), as the bucket's own index holds ``s3://`` URLs."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from fusar_gpt.geo.aef_tiles import write_index

    parquet = name.endswith(".parquet")
    local = write_index(root, name)
    rows = (pq.read_table(local) if parquet else pacsv.read_csv(local)).to_pylist()
    for r in rows:
        r["path"] = f"{base_url.rstrip('/')}/{r['path']}"
    out = Path(into) / name if into is not None else local
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, out) if parquet else pacsv.write_csv(table, out)
    if into is not None and local != out:
        os.unlink(local)
    return out
