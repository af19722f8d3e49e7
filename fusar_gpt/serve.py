"""An OpenAI-compatible HTTP API for a trained model (``fusar-gpt serve``), with dynamic batching.

vLLM and its kin cannot run the TLM, so this small server does the three things a deployment needs:
- **the API other tools already speak**: ``POST /v1/chat/completions`` (one user turn: one image + text),
  ``GET /v1/models``, ``GET /health``; images as base64 data URLs or as paths under an allowed root; the
  place and year as extra fields (``bbox`` + ``year``, ``anchors``, ``no_aef``) or from a GeoTIFF itself, and
  ``task`` for a model with one adapter per task (default: the one the question's wording names);
- **dynamic batching**: requests that arrive together share one ``generate`` call (:class:`Batcher`), which
  is where a GPU's throughput comes from; greedy decoding is exact per row, so each request is cut to its
  own ``max_tokens`` afterwards and answers exactly as it would alone;
- **safety**: a bearer token unless auth is explicitly off on loopback, limits on body size, image pixels,
  ``max_tokens``, queue length and time, and OpenAI-style JSON errors with the right status codes (the
  traceback of an unexpected error goes to the server log, never to the client).
Request parsing lives in ``serve_api.py``, the batcher in ``serve_batcher.py``, the limits on concurrent work
in ``serve_limits.py``; this module holds the configuration, the app and the server.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from starlette.requests import Request  # at module level: FastAPI resolves the handlers' annotations here

from .data.record import MAX_QUESTION_CHARS
from .geo.aef import AEFStore
from .inputs import InputProcessor
from .model.loader import load_model
from .model.routing import RoutingError, adapter_of
from .serve_api import ApiError, parse_chat, prepare_request
from .serve_batcher import Batcher
from .serve_limits import PixelBudget, header_timeout_protocol

log = logging.getLogger("fusar_gpt.serve")
API_KEY_ENV = "FUSAR_GPT_API_KEY"


@dataclass
class ServeConfig:
    model_name: str = "fusar-gpt"
    api_key: str | None = None
    no_auth: bool = False                   # allowed on loopback only
    host: str = "127.0.0.1"
    image_root: str | None = None           # server-side image paths must resolve under it (None: refused)
    max_body_bytes: int = 32 * 2**20
    max_image_pixels: int = 10000 * 10000
    max_tokens: int = 1024                  # cap on a request's max_tokens
    max_prompt_tokens: int = 512            # cap on a question's tokens (a task prompt is under 50)
    body_timeout_s: float = 30.0            # a client that sends its body slower than this is cut off (408)
    header_timeout_s: float = 10.0          # a connection whose request headers are not in by then is closed
    default_max_tokens: int = 256
    timeout_s: float = 120.0
    max_batch: int = 8
    max_batch_tokens: int | None = None     # tokens one generate may take (rows x (prompt + max_tokens), padded);
                                            # None: max_batch requests of a 64-token question at default_max_tokens
    batch_wait_ms: float = 5.0
    max_queue: int = 256
    chip: object = None                     # the model's chip.ChipSpec (how request images become inputs)
    store: object = field(default=None, repr=False)  # AEFStore or None

    def check(self) -> None:
        """Refuse configurations that would serve a model to the network without a token, or cannot work."""
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is empty")
        if self.api_key and self.no_auth:
            raise ValueError("an API key and no-auth contradict each other: give one")
        if not self.api_key and not self.no_auth:
            raise ValueError(f"an API key is required: pass --api-key or set {API_KEY_ENV} (auth may be turned off "
                             f"with --no-auth only on a loopback host)")
        if self.no_auth and not is_loopback(self.host):
            raise ValueError(f"--no-auth is allowed only on a loopback host (127.0.0.1, ::1, localhost), not on "
                             f"{self.host!r}: anyone on the network could use the model")
        for name in ("max_body_bytes", "max_image_pixels", "max_tokens", "default_max_tokens", "max_batch",
                     "max_queue", "max_prompt_tokens", "max_batch_tokens"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default max tokens {self.default_max_tokens} is above the cap {self.max_tokens}")
        if not self.timeout_s > 0 or not self.body_timeout_s > 0 or not self.header_timeout_s > 0 \
                or self.batch_wait_ms < 0:
            raise ValueError("the timeouts must be positive and the batch wait non-negative")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _error(status: int, message: str, kind: str, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    types = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 408: "timeout", 413: "request_too_large", 503: "server_busy", 504: "timeout"}
    return JSONResponse({"error": {"message": message, "type": types.get(status, "server_error"), "param": None,
                                   "code": kind}}, status_code=status, headers=headers)


def make_app(model, config: ServeConfig):
    """The FastAPI app; its batcher thread starts here (``app.state.batcher``)."""
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    config.check()
    if config.chip is None:
        raise ValueError("the server needs the model's chip spec (model.loader.load_model returns it)")
    processor = InputProcessor(model.processor, train=False)
    check = processor.check_text  # the batcher's own rule, before queueing
    tokenizer = model.processor.tokenizer
    overhead = prompt_overhead(processor, tokenizer, config.chip.frame)
    max_batch_tokens = batch_token_budget(config, overhead)
    app = FastAPI(title="fusar-gpt", docs_url=None, redoc_url=None, openapi_url=None)
    batcher = Batcher(model, config.max_batch, config.batch_wait_ms / 1000, config.max_queue, max_batch_tokens)
    app.state.batcher, app.state.config = batcher, config
    budget = PixelBudget(config.max_image_pixels)  # concurrent decodes share one maximum-size image's pixels
    app.state.budget = budget

    def check_question(question: str) -> int:
        """Refused before it is queued: one long question makes every batch it joins slow for everyone (measured:
        a 2 MB question blocked all clients for 347 s). Characters first, so the tokenizer never sees megabytes."""
        if len(question) > MAX_QUESTION_CHARS:
            raise ApiError(400, f"the question is {len(question)} characters, above the limit of {MAX_QUESTION_CHARS}",
                           "question_too_long")
        n = len(tokenizer(question)["input_ids"])
        if n > config.max_prompt_tokens:
            raise ApiError(400, f"the question is {n} tokens, above this server's limit of {config.max_prompt_tokens}",
                           "question_too_long")
        try:
            check("request", question)
        except ValueError as err:  # a chat special token would rewrite the conversation: 400, never a 500
            raise ApiError(400, str(err).replace("record 'request': the", "the"), "bad_question") from None
        return n
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(request, err: ApiError):
        return _error(err.status, err.message, err.code, err.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, err: HTTPException):
        return _error(err.status_code, str(err.detail), "http_error")

    @app.exception_handler(Exception)
    async def _unexpected(request, err: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, "internal server error (details are in the server log)", "internal_error")

    def authorize(request: Request) -> None:
        if config.no_auth:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", "invalid_api_key",
                           {"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request) -> bytes:
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > config.max_body_bytes:
            raise ApiError(413, f"request body of {size} bytes is above the limit of {config.max_body_bytes}",
                           "body_too_large")
        chunks = []

        async def receive():
            n = 0
            async for chunk in request.stream():
                n += len(chunk)
                if n > config.max_body_bytes:
                    raise ApiError(413, f"request body is above the limit of {config.max_body_bytes} bytes",
                                   "body_too_large")
                chunks.append(chunk)

        try:  # a client trickling its body must not hold a connection (and its memory) indefinitely
            await asyncio.wait_for(receive(), timeout=config.body_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {config.body_timeout_s:g} s",
                           "body_timeout") from None
        return b"".join(chunks)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": config.model_name, "queued": batcher.queue.qsize(),
                "generate_calls": batcher.generate_calls, "answered": batcher.answered,
                "max_batch_tokens": batcher.max_batch_tokens, "peak_batch_tokens": batcher.peak_batch_tokens}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": created,
                                            "owned_by": "fusar-gpt"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        authorize(request)
        started = time.monotonic()
        req = parse_chat(await read_body(request), config)
        prompt_tokens = overhead + check_question(req["question"])
        try:  # a question no adapter is for is the client's to fix: 400 before it is queued, never a 500 later
            adapter_of(model, req["question"], req["task"], how='send "task": one of those')
        except RoutingError as err:
            raise ApiError(400, str(err), "unknown_task") from None

        async def work():
            left = max(config.timeout_s - (time.monotonic() - started), 0)
            item = await run_in_threadpool(prepare_request, req, config, budget, left)
            return await asyncio.wrap_future(batcher.submit(item, req["question"], req["max_tokens"], req["task"],
                                                            prompt_tokens))

        try:
            result = await asyncio.wait_for(work(), timeout=max(config.timeout_s - (time.monotonic() - started), 0))
        except asyncio.TimeoutError:
            raise ApiError(504, f"no answer within the server's timeout of {config.timeout_s:g} s",
                           "timeout") from None
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": config.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                             "finish_reason": result["finish_reason"]}],
                "usage": {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["completion_tokens"],
                          "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}}

    return app


# A question tokenised inside its turn may merge at its edges differently than alone: a margin on the estimate.
PROMPT_SLACK = 8


def prompt_overhead(processor: InputProcessor, tokenizer, frame: int) -> int:
    """Tokens of a prompt besides its question (system turn, template, the image's tokens for the model frame every
    request image is made into), measured once on a probe, plus :data:`PROMPT_SLACK`: a request's prompt is then
    this + its question's tokens, known before it is queued."""
    import numpy as np

    probe = "How many ships?"
    batch = processor.prompts([np.zeros((frame, frame), np.uint8)], [probe], [None])
    return int(batch["attention_mask"].sum()) - len(tokenizer(probe)["input_ids"]) + PROMPT_SLACK


def batch_token_budget(config: ServeConfig, overhead: int) -> int:
    """``config.max_batch_tokens``, or by default ``max_batch`` requests of a 64-token question at
    ``default_max_tokens`` (at least one request at every cap). A budget that one request at the caps would exceed
    is refused: that request could never be answered within it."""
    worst = overhead + config.max_prompt_tokens + config.max_tokens
    if config.max_batch_tokens is None:
        return max(config.max_batch * (overhead + 64 + config.default_max_tokens), worst)
    if config.max_batch_tokens < worst:
        raise ValueError(f"max batch tokens {config.max_batch_tokens} is below one request at the caps ({overhead} "
                         f"image and template + {config.max_prompt_tokens} question + {config.max_tokens} answer = "
                         f"{worst}): raise it, or lower the max tokens / max prompt tokens")
    return int(config.max_batch_tokens)


class BackgroundServer:
    """uvicorn on a loopback socket in a thread: what tests and the benchmark talk to (``with ... as port``)."""

    def __init__(self, app, host: str = "127.0.0.1") -> None:
        import socket

        import uvicorn

        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        http = header_timeout_protocol(app.state.config.header_timeout_s)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", http=http))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.port

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def serve(path, config: ServeConfig, *, port: int = 8000, aef: str | None = None, aef_index: str | None = None,
          device: str = "cpu") -> None:
    """Load the run (or exported model), check the configuration, and serve until interrupted."""
    import uvicorn


    config.check()  # before loading gigabytes of weights
    if aef:

        config.store = AEFStore(aef, index=aef_index)
    model, config.chip = load_model(path, device)
    app = make_app(model, config)
    log.info("serving %s on %s:%d", config.model_name, config.host, port)
    uvicorn.run(app, host=config.host, port=port, log_level="info", lifespan="off",
                http=header_timeout_protocol(config.header_timeout_s))
