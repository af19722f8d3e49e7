"""Dynamic batching for the server: one thread owns the model; requests that arrive together share one
``generate`` call, which is where a GPU's throughput comes from. Greedy decoding is exact per row, so each request
is cut to its own ``max_tokens`` afterwards and answers exactly as it would alone. A model with one adapter per
task (an imported release) answers a batch in one ``generate`` per adapter its questions need
(:func:`fusar_gpt.model.routing.route`).

The work admitted to one ``generate`` is bounded in tokens, not only in rows: a batch is padded to its longest
prompt and decodes for its longest ``max_tokens``, so it costs ``rows x (longest prompt + longest max_tokens)``
tokens of compute and KV cache (:func:`batch_tokens`), and a batch is closed before a request would take it above
``max_batch_tokens``. Without it the bound was only implicit (``max_batch x (prompt cap + max_tokens cap)``), and
one request asking for 1024 tokens made seven others asking for 16 decode 1024 steps beside it."""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass

import torch

from .inputs import END_OF_TURN, InputProcessor
from .model.routing import route
from .serve_api import ApiError

log = logging.getLogger("fusar_gpt.serve")


@dataclass
class Job:
    item: object            # chip.ModelChip
    question: str
    max_tokens: int
    future: concurrent.futures.Future
    task: str | None = None  # the request's task (picks the adapter of a model with one per task)
    prompt_tokens: int = 0   # the prompt's length in tokens (image + template + question), known before queueing


def batch_tokens(jobs) -> int:
    """What one ``generate`` over ``jobs`` costs in tokens: every row padded to the longest prompt and decoded for
    the longest ``max_tokens``."""
    return len(jobs) * (max(j.prompt_tokens for j in jobs) + max(j.max_tokens for j in jobs)) if jobs else 0


class Batcher:
    """One worker thread that owns the model: it takes the first waiting request, gathers whatever else
    arrives within ``wait_s`` (up to ``max_batch`` rows and ``max_batch_tokens`` tokens, :func:`batch_tokens`; the
    request that would go over waits for the next batch), answers them in one ``generate`` call and starts again.
    A request alone above ``max_batch_tokens`` still runs, alone (the server refuses such limits at start).
    Requests whose client gave up (cancelled futures) are dropped before they cost anything."""

    def __init__(self, model, max_batch: int = 8, wait_s: float = 0.005, max_queue: int = 256,
                 max_batch_tokens: int | None = None) -> None:
        self.model, self.max_batch, self.wait_s = model, int(max_batch), float(wait_s)
        self.max_batch_tokens = None if max_batch_tokens is None else int(max_batch_tokens)
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.generate_calls = 0
        self.answered = 0
        self.peak_batch_tokens = 0  # the most tokens one generate took, as run (rows x padded prompt + new tokens)
        self._held: Job | None = None  # a request that did not fit the last batch: the first of the next one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fusar-batcher", daemon=True)
        self._thread.start()

    def submit(self, item, question: str, max_tokens: int, task: str | None = None,
               prompt_tokens: int = 0) -> concurrent.futures.Future:
        job = Job(item, question, int(max_tokens), concurrent.futures.Future(), task, int(prompt_tokens))
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise ApiError(503, "the server is busy (request queue full); retry later", "server_busy") from None
        return job.future

    def close(self) -> None:
        self._stop.set()
        self.queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            first, self._held = (self._held, None) if self._held is not None else (self.queue.get(), None)
            if first is None:
                return
            jobs = [first]
            deadline = time.monotonic() + self.wait_s
            while len(jobs) < self.max_batch:
                try:
                    nxt = self.queue.get(timeout=max(deadline - time.monotonic(), 0)) if self.wait_s else \
                        self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._stop.set()
                    break
                if self.max_batch_tokens is not None and batch_tokens(jobs + [nxt]) > self.max_batch_tokens:
                    self._held = nxt  # the batch is full in tokens: this one opens the next
                    break
                jobs.append(nxt)
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            try:
                results = self.generate(jobs)
            except Exception as err:  # reported to each waiting request as a 500; the traceback stays in the log
                log.exception("generation failed")
                for j in jobs:
                    j.future.set_exception(err)
                continue
            for j, r in zip(jobs, results):
                j.future.set_result(r)

    def generate(self, jobs: list[Job]) -> list[dict]:
        """The jobs' answers, one ``generate`` per adapter their questions need (one for a model without task
        adapters), each row cut back to its own limit."""
        results: list[dict] = [{}] * len(jobs)
        for group in route(self.model, [j.question for j in jobs], [j.task for j in jobs]):
            for i, result in zip(group, self._generate([jobs[i] for i in group])):
                results[i] = result
        return results

    def _generate(self, jobs: list[Job]) -> list[dict]:
        """One ``generate`` over the jobs (longest ``max_tokens``), each row cut back to its own limit."""
        model = self.model
        tok = model.processor.tokenizer
        eos = model.base.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) | {tok.convert_tokens_to_ids(END_OF_TURN)}
        batch = InputProcessor(model.processor, train=False, prior_dim=model.tlm.prior_dim).prompts(
            [j.item.image for j in jobs], [j.question for j in jobs], [j.item.anchors for j in jobs])
        batch = batch.to(next(model.parameters()).device)
        new = max(j.max_tokens for j in jobs)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=new, do_sample=False)
        self.peak_batch_tokens = max(self.peak_batch_tokens, len(jobs) * (batch["input_ids"].shape[1] + new))
        self.generate_calls += 1
        self.answered += len(jobs)
        prompt = batch["attention_mask"].sum(dim=1).tolist()
        results = []
        for j, row, n_prompt in zip(jobs, out[:, batch["input_ids"].shape[1]:].tolist(), prompt):
            stop = next((i for i, t in enumerate(row) if t in eos), None)
            ids = row[:stop] if stop is not None and stop < j.max_tokens else row[:j.max_tokens]
            finish = "stop" if stop is not None and stop < j.max_tokens else "length"
            results.append({"text": tok.decode(ids, skip_special_tokens=True).strip(), "finish_reason": finish,
                            "prompt_tokens": int(n_prompt), "completion_tokens": len(ids)})
        return results
