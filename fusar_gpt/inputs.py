"""The one input processor: chat turns -> tokens, labels masked from the chat template, anchors -> priors.

Every path into the model goes through :class:`InputProcessor`: the training and evaluation batches (it is the
DataLoader's ``collate_fn``), ``FusarGPT.answer`` (``ask``, ``detect-scene``) and the server's batcher, so a
question is rendered, checked and paired with its anchors the same way everywhere.

Label masking is derived from the chat template itself, never from hand-written offsets: each
record's generation prompt (``add_generation_prompt=True``) must be a prefix of its full
conversation; the prompt's token ids, with its image placeholder expanded as the processor
expands it, must be a prefix of the row the processor produced; the supervised tokens are those
after that prefix up to and including the first end-of-turn token (``<|im_end|>``). Everything
else (system and user turns, image tokens, the newline after ``<|im_end|>``, padding) is -100.
Anything that breaks these assumptions raises a one-line ``ValueError`` naming the record:
nothing is silently left unsupervised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .data.record import MAX_QUESTION_CHARS
from .geo.anchors import Anchors

IGNORE_INDEX = -100
END_OF_TURN = "<|im_end|>"


@dataclass
class Priors:
    """AEF anchors of a batch: ``features [B,S,P]``, ``positions [B,S,2]`` (y, x in [0,1]), ``mask [B,S]``."""

    features: torch.Tensor
    positions: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def stack(cls, items: Sequence[tuple], prior_dim: int = 64) -> Priors:
        """Pad per-image ``(features, positions[, mask])`` to one batch; padding is masked out.

        An image may have zero anchors (``features`` of shape [0, P]) or ``None``: it simply gets
        no valid anchor and the TLM's missing-prior policy applies.
        """
        rows = []
        for item in items:
            if item is None:
                rows.append((np.zeros((0, prior_dim), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, bool)))
                continue
            f = np.asarray(item[0], dtype=np.float32)
            p = np.asarray(item[1], dtype=np.float32)
            m = np.ones(len(f), bool) if len(item) < 3 or item[2] is None else np.asarray(item[2], dtype=bool)
            if f.ndim != 2 or p.shape != (len(f), 2) or m.shape != (len(f),):
                raise ValueError(f"anchors must be features [S,P], positions [S,2], mask [S]; got "
                                 f"{f.shape}, {p.shape}, {m.shape}")
            rows.append((f, p, m & np.isfinite(f).all(axis=1)))
        s = max(1, max(len(r[0]) for r in rows))
        dim = rows[0][0].shape[1] if rows else prior_dim
        feats = np.zeros((len(rows), s, dim), np.float32)
        pos = np.zeros((len(rows), s, 2), np.float32)
        mask = np.zeros((len(rows), s), bool)
        for i, (f, p, m) in enumerate(rows):
            feats[i, : len(f)] = np.nan_to_num(f)
            pos[i, : len(f)] = p
            mask[i, : len(f)] = m
        return cls(torch.from_numpy(feats), torch.from_numpy(pos), torch.from_numpy(mask))

    def to(self, device: torch.device | str) -> Priors:
        return Priors(self.features.to(device), self.positions.to(device), self.mask.to(device))

    def __len__(self) -> int:
        return self.features.shape[0]


class Batch(dict):
    """Keyword arguments for ``FusarGPT.forward`` / ``generate`` (so ``model(**batch)`` just works).

    The records' ``ids``, ``questions``, ``answers`` and ``tasks`` ride along as attributes, not keys,
    so they never reach the model. :meth:`to` keeps them; ``copy``/pickling (DataLoader workers,
    pinned memory) keep them too. Keys: ``input_ids, attention_mask, mm_token_type_ids,
    pixel_values, image_grid_thw, priors`` and, in training mode, ``labels``.
    """

    def __init__(self, inputs=(), *, ids: Sequence[str] = (), questions: Sequence[str] = (),
                 answers: Sequence[str | None] = (), tasks: Sequence[str | None] = ()) -> None:
        super().__init__(inputs)
        self.ids = list(ids)
        self.questions = list(questions)
        self.answers = list(answers)
        self.tasks = list(tasks)

    def to(self, device: torch.device | str) -> Batch:
        moved = {k: v.to(device) if isinstance(v, (torch.Tensor, Priors)) else v for k, v in self.items()}
        return Batch(moved, ids=self.ids, questions=self.questions, answers=self.answers, tasks=self.tasks)


def _as_rgb(image) -> Image.Image:
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    return im.convert("RGB")


def as_prior(anchors, rid: str):
    """One record's anchors as the ``(features, positions, mask)`` :meth:`Priors.stack` takes (None: no prior)."""
    if anchors is None or isinstance(anchors, tuple):
        return anchors
    if isinstance(anchors, Anchors):
        if anchors.multi_year:
            raise ValueError(f"record {rid!r}: multi-year anchors reached the collator; pick one year "
                             f"(Anchors.for_year, as ManifestDataset does)")
        return anchors.features, anchors.positions, anchors.mask
    raise ValueError(f"record {rid!r}: anchors must be Anchors, a (features, positions[, mask]) tuple or None, "
                     f"got {type(anchors).__name__}")


class InputProcessor:
    """Turns items (``ManifestDataset``'s, or :meth:`prompts`' image + question + anchors) into a :class:`Batch`.

    ``train=True``: prompt + answer, right padding (default), ``labels`` supervising exactly the
    answer tokens and the ``<|im_end|>`` closing them. ``train=False``: the generation prompt
    only, left padding (batched ``generate`` appends after the last column), no labels; the truth
    is in ``batch.answers``. ``max_length`` refuses (never truncates) a record whose tokens,
    image tokens included, exceed it. ``padding_side`` overrides the mode's default; with left
    padding in training the labels are masked just as correctly.
    """

    def __init__(self, processor, *, max_length: int | None = None, train: bool = True,
                 padding_side: str | None = None, prior_dim: int = 64) -> None:
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        side = padding_side or ("right" if train else "left")
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if not train and side != "left":
            raise ValueError("evaluation batches must be left-padded: generate() appends after the last column")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.train = train
        self.padding_side = side
        self.prior_dim = prior_dim
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)
        self.eot_id = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if self.eot_id is None or self.eot_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {END_OF_TURN} token: not a Qwen chat tokenizer")
        self.special = tuple(t for t in self.tokenizer.all_special_tokens if t)

    # ------------------------------------------------------------------------------------------ text
    def _render(self, turns: Sequence[tuple[str, str | None]], open_last: bool) -> str:
        """The conversation: the image leads the first user turn; ``open_last`` leaves the last answer out and
        ends on the generation prompt (what the model sees before answering that turn)."""
        msgs = []
        for k, (question, answer) in enumerate(turns):
            text = {"type": "text", "text": question}
            msgs.append({"role": "user", "content": [{"type": "image"}, text] if k == 0 else [text]})
            if not (open_last and k == len(turns) - 1):
                msgs.append({"role": "assistant", "content": answer})
        return self.processor.apply_chat_template(msgs, add_generation_prompt=open_last, tokenize=False)

    def check_text(self, rid: str, question, answer=None) -> None:
        """Refuse, in one line naming the record, a question (or, training, an answer) that is not a string, is
        empty, or carries a chat special token that would break the conversation's structure."""
        if not isinstance(question, str):
            raise ValueError(f"record {rid!r}: question must be a string, got {type(question).__name__}")
        if len(question) > MAX_QUESTION_CHARS:  # before any tokenizer sees it (50 MB aborted a run)
            raise ValueError(f"record {rid!r}: the question is {len(question)} characters, above the cap of "
                             f"{MAX_QUESTION_CHARS}")
        fields = [("question", question)]
        if self.train:
            if not isinstance(answer, str) or not answer.strip():
                raise ValueError(f"record {rid!r}: empty answer, nothing to supervise")
            fields.append(("answer", answer))
        for name, text in fields:
            bad = [t for t in self.special if t in text]
            if bad:
                raise ValueError(f"record {rid!r}: the {name} contains the special token {bad[0]}, which would "
                                 f"break the chat structure")

    # ------------------------------------------------------------------------------------------ batch
    def __call__(self, items: Sequence[dict]) -> Batch:
        if len(items) == 0:
            raise ValueError("cannot collate an empty list of items")
        ids = [str(it["id"]) for it in items]
        # an item is one question/answer turn, or (``turns``) a conversation of several about the same image
        convs = [list(it.get("turns") or [(it["question"], it.get("answer"))]) for it in items]
        for rid, turns in zip(ids, convs):
            for q, a in turns:
                self.check_text(rid, q, a)
        # prompts[b][k]: everything the model sees before answering turn k (earlier turns answered)
        prompts = [[self._render(turns[:k + 1], True) for k in range(len(turns))] for turns in convs]
        if self.train:
            texts = [self._render(turns, False) for turns in convs]
            for rid, prompt, full in zip(ids, prompts, texts):
                if not all(full.startswith(p) for p in prompt):
                    raise ValueError(f"record {rid!r}: the chat template renders the conversation so that it does "
                                     f"not start with the generation prompt; cannot tell where the answer begins")
        else:
            texts = [p[-1] for p in prompts]
        images = [_as_rgb(it["image"]) for it in items]
        enc = self.processor(images=images, text=texts, return_tensors="pt", padding=True,
                             padding_side=self.padding_side)
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        if self.max_length is not None:
            for rid, n, row in zip(ids, lengths, enc["input_ids"]):
                if n > self.max_length:
                    n_img = int((row == self.image_token_id).sum())
                    raise ValueError(f"record {rid!r}: {n} tokens ({n_img} image + {n - n_img} text) exceed "
                                     f"max_length {self.max_length}; records are refused, never truncated "
                                     f"(shorten the question or lower the image resolution)")
        inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values",
                                      "image_grid_thw")}
        if self.train:
            inputs["labels"] = self._labels(enc["input_ids"], enc["attention_mask"], prompts, ids)
        inputs["priors"] = Priors.stack([as_prior(it.get("anchors"), rid) for it, rid in zip(items, ids)],
                                        self.prior_dim)
        return Batch(inputs, ids=ids, questions=[c[-1][0] for c in convs], answers=[c[-1][1] for c in convs],
                     tasks=[it.get("task") for it in items])

    def prompts(self, images: Sequence, questions: Sequence[str], anchors: Sequence | None = None) -> Batch:
        """Generation prompts for (image, question[, anchors]) triples: what ``FusarGPT.answer`` and the server
        feed to ``generate``. Images are PIL images or HxW[x3] uint8 arrays; anchors as :func:`as_prior` takes."""
        if self.train:
            raise ValueError("prompts() makes generation batches: use InputProcessor(processor, train=False)")
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        anchors = [None] * len(images) if anchors is None else list(anchors)
        if len(anchors) != len(images):
            raise ValueError(f"{len(images)} images but anchors for {len(anchors)}")
        return self([{"id": str(i), "image": im, "question": q, "anchors": a}
                     for i, (im, q, a) in enumerate(zip(images, questions, anchors))])


    def _labels(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: list[list[str]],
                ids: list[str]) -> torch.Tensor:
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for b, rid in enumerate(ids):
            valid = attention_mask[b].nonzero().flatten()
            start, stop = int(valid[0]), int(valid[-1]) + 1
            if stop - start != len(valid):
                raise ValueError(f"record {rid!r}: the attention mask has a hole; expected one run of tokens")
            row = input_ids[b, start:stop]
            n_img = int((row == self.image_token_id).sum())
            for k, prompt_ids in enumerate(self.tokenizer(prompts[b])["input_ids"]):
                turn = f" (turn {k + 1})" if len(prompts[b]) > 1 else ""
                prefix = []
                for t in prompt_ids:  # the processor expands the one image placeholder into n_img tokens
                    prefix.extend([t] * n_img if t == self.image_token_id else [t])
                p = len(prefix)
                if p >= len(row) or row[:p].tolist() != prefix:
                    raise ValueError(f"record {rid!r}{turn}: the tokenised conversation does not begin with the "
                                     f"tokenised prompt (the tokenizer merges the prompt's end with the answer's "
                                     f"start)")
                ends = (row[p:] == self.eot_id).nonzero().flatten()
                if len(ends) == 0:
                    raise ValueError(f"record {rid!r}{turn}: no {END_OF_TURN} closes the answer")
                n = int(ends[0])
                if n == 0:
                    raise ValueError(f"record {rid!r}{turn}: the answer has no token to supervise")
                labels[b, start + p: start + p + n + 1] = row[p: p + n + 1]
        return labels


def build_inputs(processor, images: Sequence, questions: Sequence[str], answers: Sequence[str] | None = None) -> dict:
    """Tokens and pixels of one-image chats (generation prompts, or with ``answers`` whole conversations), without
    priors or labels: for callers that pass their own (tests, benchmarks). The same rendering as every batch."""
    if answers is None:
        batch = InputProcessor(processor, train=False).prompts(images, questions)
    else:
        if len(answers) != len(questions) or len(images) != len(questions):
            raise ValueError(f"{len(images)} images, {len(questions)} questions and {len(answers)} answers")
        batch = InputProcessor(processor, train=True)([{"id": str(i), "image": im, "question": q, "answer": a}
                                                       for i, (im, q, a) in enumerate(zip(images, questions,
                                                                                          answers))])
    return {k: v for k, v in batch.items() if k not in ("priors", "labels")}


def to_priors(anchors: Sequence, prior_dim: int = 64) -> Priors:
    """Anchors of a batch (each an :class:`Anchors`, a tuple or None) as one padded :class:`Priors`."""
    return Priors.stack([as_prior(a, str(i)) for i, a in enumerate(anchors)], prior_dim)
