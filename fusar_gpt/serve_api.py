"""Reading an OpenAI chat-completions request into one model input, with every refusal a clear JSON error.

The model answers one question about one image, so a request is one user message holding one image part
and text (OpenAI's ``content`` list). The image is a base64 ``data:`` URL or a path on the server, which
must resolve (symlinks followed) inside the configured image root: a client may name files, never
wander the disk. The place and year come as extra body fields (``bbox`` + ``year``, ``anchors`` as arrays or
an ``.npz`` path, or ``no_aef: true``) or from the GeoTIFF itself, exactly as ``fusar-gpt ask`` takes them.
Decoding is greedy (answers are reproducible); sampling fields such as ``temperature`` are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from .chip import InputTooLarge, load_chip
from .geo import GeoError, check_bbox
from .geo.anchors import Anchors
from .serve_limits import Busy, PixelBudget, header_size
from .text import one_line

log = logging.getLogger("fusar_gpt.serve")
YEARS = (1900, 2100)  # as the AEF store: a year outside is a typo, not a request for the nearest year


class ApiError(Exception):
    """A refusal with its HTTP status; the message is returned to the client as is."""

    def __init__(self, status: int, message: str, code: str = "invalid_request", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


def _bad(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code)


class ChatRequest(BaseModel):
    """The body fields this server reads (others, such as ``temperature``, are ignored). Strict types: ``"5"`` is
    not a number of tokens and ``1`` is not ``true``. ``messages`` is checked by :func:`_content`, whose rules
    (one user message, one image part) pydantic's unions would only make harder to explain."""
    model_config = ConfigDict(strict=True, extra="ignore")

    model: StrictStr | None = None
    messages: list[Any]
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    stream: StrictBool | None = False
    n: StrictInt = 1
    no_aef: StrictBool = False
    year: Annotated[StrictInt, Field(ge=YEARS[0], le=YEARS[1])] | None = None
    bbox: Any = None
    anchors: dict[str, Any] | StrictStr | None = None
    task: StrictStr | None = None           # picks the adapter of a model with one per task (default: the question's)


FIELD_RULES = {"model": "model must be a string", "messages": "messages must be a non-empty list",
               "max_tokens": "max_tokens must be a positive integer", "n": "n must be 1",
               "max_completion_tokens": "max_completion_tokens must be a positive integer",
               "stream": "stream must be true or false (and streaming is not supported: send false)",
               "no_aef": "no_aef must be true or false", "year": f"year must be an integer in {YEARS[0]}..{YEARS[1]}",
               "anchors": "anchors must be {features, positions[, mask]} arrays or the path of an .npz file",
               "task": "task must be a task name"}


def _validated(body: dict) -> ChatRequest:
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as err:
        field = str(err.errors()[0]["loc"][0]) if err.errors()[0]["loc"] else ""
        rule = FIELD_RULES.get(field, f"{field} is not valid")
        got = json.dumps(body.get(field))
        raise _bad(f"{rule}, got {got if len(got) <= 40 else got[:40] + '...'}") from None


def _max_tokens(req: ChatRequest, config) -> int:
    value = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if value is None:
        return int(config.default_max_tokens)
    if value < 1:
        raise _bad(f"max_tokens must be a positive integer, got {value!r}")
    if value > config.max_tokens:
        raise _bad(f"max_tokens {value} is above this server's limit of {config.max_tokens}", "max_tokens_too_large")
    return value


def _content(messages) -> tuple[str, str]:
    """(question, image URL) of the single user message."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list")
    if not all(isinstance(m, dict) for m in messages):
        raise _bad("each message must be an object with role and content")
    roles = [m.get("role") for m in messages]
    if roles != ["user"]:
        raise _bad(f"one user message per request (the model answers one question about one image, with its own "
                   f"system prompt); got roles {roles}")
    content = messages[0].get("content")
    if isinstance(content, str):
        raise _bad("the user message has no image: send content as a list with an image_url part and a text part")
    if not isinstance(content, list):
        raise _bad("message content must be a string or a list of parts")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url:
                raise _bad("an image_url part needs a url string")
            images.append(url)
        else:
            raise _bad(f"unsupported content part {json.dumps(part)[:80]} (text and image_url parts only)")
    if len(images) != 1:
        raise _bad(f"exactly one image per request, got {len(images)}")
    question = " ".join(t.strip() for t in texts if t.strip())
    if not question:
        raise _bad("the user message has no question text")
    return question, images[0]


def _image(url: str) -> dict:
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise _bad("image data URLs must be base64: data:image/png;base64,...")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("the image data URL is not valid base64") from None
        if not data:
            raise _bad("the image data URL is empty")
        return {"data": data}
    if url.startswith(("http://", "https://")):
        raise _bad("remote image URLs are not fetched: send the image as a base64 data URL, or a path under the "
                   "server's image root")
    return {"path": url[len("file://"):] if url.startswith("file://") else url}


def _geo(req: ChatRequest) -> dict:
    geo = {"no_aef": req.no_aef, "year": req.year}
    try:
        geo["bbox"] = None if req.bbox is None else check_bbox(req.bbox)
        anchors = req.anchors
        if isinstance(anchors, dict):
            geo["anchors"] = Anchors(anchors.get("features"), anchors.get("positions"),
                                     anchors.get("mask", [True] * len(anchors.get("positions") or [])))
        elif isinstance(anchors, str):
            geo["anchors_path"] = anchors
    except (GeoError, TypeError, ValueError, OverflowError) as err:
        raise _bad(one_line(err)) from None
    if geo["no_aef"] and (geo.get("anchors") is not None or geo.get("anchors_path")):
        raise _bad("anchors and no_aef contradict each other: give one")
    return geo


def parse_chat(raw: bytes, config) -> dict:
    """Validate a request body; returns ``{question, max_tokens, image: {data | path}, geo, task}``. Cheap: no file
    is opened here, so bad requests are refused before any work."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad("the request body is not valid JSON", "invalid_json") from None
    except RecursionError:  # a body of 200,000 nested lists: the decoder's stack, never a 500
        raise _bad("the request body is nested too deeply", "invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    if "messages" not in body:
        raise _bad("messages must be a non-empty list")
    req = _validated(body)
    if req.model is not None and req.model != config.model_name:
        raise ApiError(404, f"model {req.model!r} does not exist; this server serves {config.model_name!r}",
                       "model_not_found")
    if req.stream:
        raise _bad("streaming is not supported: send stream false")
    if req.n != 1:
        raise _bad("n must be 1 (answers are greedy: every choice would be the same)")
    question, url = _content(req.messages)
    return {"question": question, "max_tokens": _max_tokens(req, config), "image": _image(url), "geo": _geo(req),
            "task": req.task}


def under_root(name: str, root) -> Path:
    """The server-side file ``name`` (absolute, or relative to ``root``), refused unless it lies inside
    ``root`` once every symlink and ``..`` is resolved."""
    if not root:
        raise ApiError(403, "server-side paths are disabled on this server (it has no image root); send the image "
                            "as a base64 data URL", "paths_disabled")
    base = Path(root).resolve()
    try:
        path = Path(name)
        real = (path if path.is_absolute() else base / path).resolve()
    except (ValueError, OSError, RuntimeError):  # a NUL byte, a symlink loop (RuntimeError in Python 3.11), ...
        raise _bad(f"not a usable path: {name!r}", "bad_path") from None
    if not real.is_relative_to(base):
        raise ApiError(403, f"path {name!r} is outside the server's image root", "path_not_allowed")
    if not real.is_file():
        raise _bad(f"no such file under the image root: {name!r}", "file_not_found")
    return real


class AEFUnavailable(Exception):
    """The server's own AEF data could not be read (a corrupt tile, an unreachable remote root): a 503 whose message
    names no path; the full message goes to the server log."""


_SERVER_AEF = re.compile(r"\bAEF (tile|index)\b")


class _GuardedStore:
    """The server's AEF store as :func:`~fusar_gpt.chip.load_chip` sees it during a request. What goes wrong while it
    reads its own tiles is the server's problem, not the client's: a corrupt tile answered ``400 "cannot read AEF
    tile /srv/aef/2024/31N/tile.tiff"``, blaming the client and showing the AEF root. A place or year the client got
    wrong (a footprint off the globe) stays the client's 400."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def sample(self, *args, **kwargs):
        return self._guard(self._store.sample, args, kwargs)

    def sample_raster(self, *args, **kwargs):
        return self._guard(self._store.sample_raster, args, kwargs)

    def _guard(self, read, args, kwargs):
        from .geo.aef_http import RemoteError

        try:
            return read(*args, **kwargs)
        except RemoteError as err:
            raise AEFUnavailable(str(err)) from None
        except GeoError as err:
            if _SERVER_AEF.search(str(err)) or str(self._store.root) in str(err):
                raise AEFUnavailable(str(err)) from None
            raise
        except Exception as err:  # a reader's own error class (rasterio, OS) from the server's files
            raise AEFUnavailable(f"{type(err).__name__}: {err}") from None


_UPLOAD_TEMP = re.compile(r"fusar-upload-\w+\.\w+")           # chip._as_file's temporary copy of an upload
_ABS_PATH = re.compile(r"(?<![\w.>~/-])/[\w.+@-]+(?:/[\w.+@-]*)*")  # an absolute path, not a URL's // or a/b


def client_message(message: str, config, name: str) -> str:
    """A reader's error as the client may see it: one line, the image named as the client sent it (``name``),
    and no server path. The temporary file of an upload leaks through GDAL/libtiff messages by its basename
    (``fusar-upload-lnmpk952.tif: TIFFReadDirectory...``), the image root by its folders, and any other file by an
    absolute path; each is replaced here, in the server layer, whatever the reader below wrote."""
    message = one_line(message)
    if config.image_root:  # the client's own path, relative to the root it cannot see
        for root in {str(Path(config.image_root).resolve()), str(Path(config.image_root).absolute())}:
            message = message.replace(root, "<image root>")
    message = _UPLOAD_TEMP.sub(name, message)
    return _ABS_PATH.sub("<server path>", message)


# A busy decode budget is answered 503 (retry shortly) this long before the request's own 504 would be.
BUSY_MARGIN_S = 0.25


def prepare_request(req: dict, config, budget: PixelBudget | None = None, timeout: float = 0.0):
    """The request's :class:`~fusar_gpt.chip.ModelChip` (runs in a worker thread: it reads files). The image's
    size is read from its header first: above ``config.max_image_pixels`` is a 413 at once; otherwise, with a
    ``budget``, the decoding waits up to ``timeout`` s for its pixels (the whole budget when the header does not
    tell them; 503 when they cannot be had)."""
    geo = dict(req["geo"])
    if geo.get("anchors_path"):
        geo["anchors"] = under_root(geo.pop("anchors_path"), config.image_root)
    if config.store is None and geo.get("anchors") is None and not geo["no_aef"]:
        raise _bad("this server has no AEF store: send anchors, or no_aef: true", "no_aef_store")
    image = req["image"]
    path = None if "data" in image else under_root(image["path"], config.image_root)
    name = "uploaded image" if path is None else image["path"]
    store = None if config.store is None else _GuardedStore(config.store)
    try:
        size = header_size(path, image.get("data"))
        pixels = None if size is None else size[0] * size[1]
        if pixels is not None and pixels > config.max_image_pixels:
            raise InputTooLarge(f"{name}: {size[0]}x{size[1]} pixels is above this server's cap of "
                                f"{config.max_image_pixels}")
        with (budget.reserve(pixels, max(timeout - BUSY_MARGIN_S, 0.0)) if budget else nullcontext()):
            if path is None:
                return load_chip(name, config.chip, data=image["data"], store=store,
                                 max_pixels=config.max_image_pixels, **geo)
            return load_chip(path, config.chip, name=name, store=store, max_pixels=config.max_image_pixels, **geo)
    except Busy as err:
        raise ApiError(503, str(err), "server_busy", {"Retry-After": "1"}) from None
    except AEFUnavailable as err:
        log.error("AEF store error on %s: %s", name, err)
        raise ApiError(503, "the server could not read its AEF data for this image's place and year (a server-side "
                            "problem, logged); retry later, or send anchors or no_aef", "aef_unavailable",
                       {"Retry-After": "60"}) from None
    except InputTooLarge as err:
        raise ApiError(413, client_message(str(err), config, name), "image_too_large") from None
    except (ValueError, FileNotFoundError) as err:
        raise _bad(client_message(str(err), config, name)) from None
