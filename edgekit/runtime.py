"""The interpreter: the model file's flatbuffer running in LiteRT on the device.

``Runtime`` is everything edgekit asks of the interpreter: one context's
features, logits and word ranking (a keyboard's hot path), features for
batches of contexts (learning), and the head's weights as the file holds them.

LiteRT (``ai-edge-litert``) is the supported runtime; ``tflite-runtime`` 2.14
is the fallback for older boards (it needs numpy<2 and Python <= 3.11, and can
only load files converted with ``--compat tflite-runtime-2.14``).
Choose explicitly with ``EDGEKIT_RUNTIME=litert`` or ``=tflite-runtime``.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import math
import os
import tempfile
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from .errors import ModelFileError, RuntimeMissingError
from .flatbuffer_check import BATCH
from .flatbuffer_head import (
    FlatHeadError,
    default_int8_scale,
    narrow_ranking,
    output_ceiling,
    per_tensor_int8_scale,
    rank_slots,
    without_ranking,
    write_head,
)
from .modelfile import FIX, ModelFile, require_runnable
from .progress import progress_bar
from .vocab import Vocabulary

# BATCH (from flatbuffer_check, which bounds the arena at it): contexts per invoke when learning or
# evaluating. Measured on the project's machine (int8 model, one thread): 16 or 32 per invoke ran
# 23-26 us a context against 35 us at 256 and 50 us one at a time (13 us without the word ranking,
# ``without_ranking``); at 16 the interpreter added 6 MB to the process once used (8 MB at 32), and
# every [BATCH, V] array learning makes is 0.6 MB.
RUNTIMES = {
    "litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}
INSTALL_HINT = ("no TensorFlow Lite runtime found: install LiteRT with `pip install ai-edge-litert` "
                "(or, on Python <= 3.11 with numpy<2, `pip install tflite-runtime`)")


def interpreter_class(prefer: str | None = None) -> tuple[type, str]:
    """The Interpreter class of the first runtime that imports, and its name."""
    prefer = prefer or os.environ.get("EDGEKIT_RUNTIME") or None
    if prefer is not None and prefer not in RUNTIMES:
        raise ValueError(f"unknown runtime {prefer!r}; choose one of {', '.join(RUNTIMES)}")
    order = [prefer] if prefer else list(RUNTIMES)
    errors = []
    for name in order:
        try:
            return importlib.import_module(RUNTIMES[name]).Interpreter, name
        except ImportError as e:  # missing, or built for another numpy
            errors.append(f"{name}: {e}")
    raise RuntimeMissingError(f"{INSTALL_HINT} ({'; '.join(errors)})")


def load_interpreter(content: bytes, num_threads: int | None = None,
                     prefer: str | None = None) -> tuple[Any, str]:
    """An allocated interpreter for a validated flatbuffer, and the runtime's name.

    ``content`` must already have passed ``edgekit.modelfile.require_runnable``:
    the interpreter is native code and must never see an unchecked file.
    """
    cls, name = interpreter_class(prefer)
    with _native_stderr() as native_log:
        try:
            interp = cls(model_content=content, num_threads=num_threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            hint = ("files for tflite-runtime 2.14 need `edgekit convert --compat tflite-runtime-2.14`"
                    if name == "tflite-runtime" else FIX)
            raise ModelFileError(f"{name} cannot load this model: {e} {native_log()}".strip() + f"; {hint}") from None
    return interp, name


def run_interpreter(interp: Any) -> None:
    """``invoke()``, with a model that passed every check but still fails in a kernel reported as the model's fault."""
    try:
        interp.invoke()
    except (ValueError, RuntimeError) as e:
        raise ModelFileError(f"the model failed to run ({e}); {FIX}") from None


class Scores:
    """One context's log-scale scores over the vocabulary; the best words' ranking when known.

    ``top_ids`` are the best words, best first (no specials, no free personal
    slots), ``top_values`` their scores (plain lists: they are read a few
    numbers at a time, in Python) and ``sum_exp`` the sum of
    ``exp(score)`` over the words that can be suggested: a word's probability
    is ``exp(value) / sum_exp``. ``values`` (every id's score) may be made on
    first use by ``dense``: ranking the next words reads only the top list,
    so a personalized context does not pay for ten thousand scores unless a
    completion of a typed prefix asks for them.
    """

    __slots__ = ("_values", "_dense", "top_ids", "top_values", "sum_exp")

    def __init__(self, values: np.ndarray | None = None, top_ids: list[int] | None = None,
                 top_values: list[float] | None = None, sum_exp: float = math.nan,
                 dense: Callable[[], np.ndarray] | None = None):
        if values is None and dense is None:
            raise ValueError("Scores needs values or a way to make them")
        self._values, self._dense = values, dense
        self.top_ids, self.top_values, self.sum_exp = top_ids, top_values, sum_exp

    @property
    def values(self) -> np.ndarray:
        """Every id's score ``[V]``."""
        if self._values is None:
            assert self._dense is not None
            self._values, self._dense = self._dense(), None
        return self._values


class Tensors(NamedTuple):
    """Where the runtime reads and writes in the interpreter (tensor indices)."""

    tokens: int
    features: int
    logits: int
    top_values: int | None  # the word-ranking outputs; None (rank on the host) in files made before them
    top_ids: int | None
    sum_exp: int | None


class Runtime:
    """A model file's flatbuffer in an interpreter: one context per call, or batches.

    One interpreter at a time (``_interpreter``): a one-thread one for single
    contexts (one context is too little work to share, and a runtime's idle
    threads spin after each invoke, taking the core the app needs next), or
    one sized for ``BATCH`` contexts with ``num_threads`` for learning and
    evaluation (on a copy without the word ranking, which they never read).
    Each interpreter packs the file's weights again (XNNPACK) and
    has its own arena: a second one cost a keyboard process 3.7 MB.
    ``release`` frees it; the next call makes it again.
    Personal-slot ids are fed to the body as ``<unk>``: the body was never
    trained on them; only the head knows personal words.
    """

    def __init__(self, file: ModelFile, vocab: Vocabulary, prefer: str | None = None,
                 num_threads: int | None = None):
        self.file, self._vocab, self._num_threads = file, vocab, num_threads
        require_runnable(file)  # the flatbuffer's structure and the fields read below, before LiteRT sees it
        self._live, self.name = load_interpreter(file.flatbuffer, 1, prefer)  # loads now: a bad file fails here
        self._batched = False  # whether ``_live`` is sized for BATCH contexts
        self.io = tensor_indices(self._live, file.metadata, vocab)
        shapes = {d["index"]: d["shape"] for d in self._live.get_output_details()}
        # The most words one call ranks: the width of the file's top-k output, else every word (host ranking).
        self.max_k = (int(shapes[self.io.top_ids][-1]) if self.io.top_ids is not None
                      else vocab.word_ids[1] - vocab.word_ids[0])

    @property
    def _interp(self) -> Any:
        """The interpreter for one context."""
        return self._interpreter(batch=False)

    def with_file(self, file: ModelFile) -> Runtime:
        """The same runtime and threads on another version of the model (loaded before anything changes)."""
        return Runtime(file, self._vocab, self.name, self._num_threads)

    def with_head(self, head: tuple[np.ndarray, np.ndarray] | None, slots_end: int | None = None,
                  width: int | None = None) -> Runtime:
        """A runtime for single contexts whose flatbuffer holds ``head`` (``W [F, V]``, ``b [V]``; ``None``:
        the version's) as its own.

        The interpreter then ranks the words under that head itself, at the
        version's speed (a personal head, for suggestions). The copy lives in
        memory only. A one-scale int8 head keeps the version's scale unless a
        weight needs more, so every column the head leaves alone computes
        exactly the version's logits. With ``slots_end``, its ranking (top
        ids, ``sum_exp``) also covers the personal slots below that id, free
        ones included, and it reads a slot id as ``<unk>`` by itself
        (``flatbuffer_head.rank_slots``). With ``width``, its top-k keeps only
        that many words (``narrow_ranking``). Raises ``FlatHeadError`` when the
        head cannot be written into this file. ``logit_ceiling`` says where its
        logits saturate.
        """
        flat = self.file.flatbuffer
        if head is not None:
            scale = per_tensor_int8_scale(self.file)
            if scale is not None:
                scale = max(scale, default_int8_scale(head[0]))
            flat = write_head(self.file, head, scale)
        if slots_end is not None:
            flat = rank_slots(flat, self.io.logits, (self._vocab.first_slot, len(self._vocab)), slots_end,
                              self._vocab.unk)
        if width is not None and self.io.top_ids is not None and width < self.max_k:
            try:
                return self._copy(narrow_ranking(flat, width))
            except (FlatHeadError, ModelFileError):  # a top-k this file cannot narrow ranks as wide: still right
                pass
        return self._copy(flat)

    def _copy(self, flatbuffer: bytes) -> Runtime:
        """A one-thread runtime on ``flatbuffer`` in place of this file's (checked again before it loads)."""
        copy = ModelFile(flatbuffer, self.file.metadata, self.file.vocab,
                         extras=self.file.extras, origin=self.file.origin, path=self.file.path)
        return Runtime(copy, self._vocab, self.name, num_threads=1)

    @functools.cached_property
    def logit_ceiling(self) -> float:
        """The largest logit the file can output (int8 logits saturate there; ``inf`` for float ones)."""
        return output_ceiling(self.file.flatbuffer, self.io.logits)

    def invoke(self, ids: np.ndarray) -> Scores:
        """One context ``[1, T]``: its logits, plus the interpreter's word ranking when the file has one."""
        io, interp = self.io, self._interp
        interp.set_tensor(io.tokens, ids)
        run_interpreter(interp)
        logits = interp.get_tensor(io.logits)[0]
        if io.top_ids is None:
            return Scores(logits)
        return Scores(logits, interp.get_tensor(io.top_ids).tolist()[0], interp.get_tensor(io.top_values).tolist()[0],
                      interp.get_tensor(io.sum_exp).item())

    def invoke_features(self, ids: np.ndarray) -> tuple[np.ndarray, Scores]:
        """``invoke`` on a context that may hold personal-slot ids, with the body's features ``[F]``."""
        if ids.max() >= self._vocab.first_slot:
            ids = self.body_ids(ids)
        scores = self.invoke(ids)
        return self._interp.get_tensor(self.io.features)[0], scores

    def features_logits(self, ids: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Run the body on context ids ``[N, T]``: ``(features [N, F], logits [N, V])``."""
        ids = self.body_ids(ids)
        if len(ids) == 1 and not self._batched:  # learning's last chunk may be one context: no second interpreter
            return self._run(self._interp, ids)
        parts = list(self._batches(ids, progress, keep_logits=True))
        if len(parts) == 1:  # one chunk: no [N, V] copy
            return parts[0]  # type: ignore[return-value]
        return np.concatenate([f for f, _ in parts]), np.concatenate([lg for _, lg in parts])

    def features(self, ids: np.ndarray, progress: bool = False) -> np.ndarray:
        """Features only, ``[N, F]``: what head training needs, without ``N x V`` logits in memory."""
        ids = self.body_ids(ids)
        return np.concatenate([f for f, _ in self._batches(ids, progress, keep_logits=False)])

    def flat_head(self) -> tuple[np.ndarray, np.ndarray]:
        """The head inside the flatbuffer as float ``(W [F, V], b [V])``, dequantized."""
        return self.stored_head().weights()

    def stored_head(self) -> StoredHead:
        """The flatbuffer's head as the interpreter holds it (int8: a quarter of a float head)."""
        h = self.file.metadata["head"]
        details = {d["index"]: d for d in self._interp.get_tensor_details()}
        bias = h.get("bias_tensor")
        return StoredHead(self._interp.get_tensor(h["weight_tensor"]), details[h["weight_tensor"]],
                          None if bias is None else self._interp.get_tensor(bias), details.get(bias))

    def body_ids(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` as the body reads them: a personal slot is ``<unk>`` (the body never trained on one)."""
        return np.where(np.asarray(ids) >= self._vocab.first_slot, self._vocab.unk, ids).astype(np.int32)

    def _run(self, interp: Any, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        interp.set_tensor(self.io.tokens, ids)
        run_interpreter(interp)
        return interp.get_tensor(self.io.features), interp.get_tensor(self.io.logits)

    def _batches(self, ids: np.ndarray, progress: bool,
                 keep_logits: bool) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        interp = self._interpreter(batch=True)
        with progress_bar(len(ids), "running model", progress) as bar:
            for start in range(0, len(ids), BATCH):
                chunk = ids[start : start + BATCH]
                padded = np.concatenate([chunk, np.zeros((BATCH - len(chunk), ids.shape[1]), np.int32)])
                f, lg = self._run(interp, padded)
                bar.update(len(chunk))
                yield f[: len(chunk)], (lg[: len(chunk)] if keep_logits else None)

    def release(self) -> None:
        """Free the interpreter (its arena and packed weights) and hand the memory back to the system; the
        next call makes it again (a few ms). A keyboard process learns now and then and must not keep the
        batch-sized one between times, and while a copy with a personal head ranks (``with_head``) this
        file's own one is idle."""
        self._live = None
        release_freed_memory()

    def _interpreter(self, batch: bool) -> Any:
        """The live interpreter, sized for one context or ``BATCH``, made or resized when the other is asked.

        Batches run the flatbuffer without its word ranking when it can be
        cut (``flatbuffer_head.without_ranking``: half the time per invoke; that
        copy of the flatbuffer lives as long as the batch interpreter).
        Otherwise a one-context interpreter becomes a batch one by resizing
        its input when the threads agree (one: the default). Going back to
        one context makes a new interpreter, as a resized arena never shrinks.
        """
        if self._live is not None and self._batched == batch:
            return self._live
        threads = (self._num_threads or 1) if batch else 1
        cut = without_ranking(self.file.flatbuffer, self.io.features, self.io.logits) if batch else None
        if self._live is None or not batch or threads != 1 or cut is not None:
            self._live = None  # freed before the next is made: it reuses the memory
            self._live, _ = load_interpreter(self.file.flatbuffer if cut is None else cut, threads, self.name)
        self._batched = False
        if batch:
            try:
                self._live.resize_tensor_input(self.io.tokens, [BATCH, self.file.metadata["context_length"]])
                self._live.allocate_tensors()
            except (ValueError, RuntimeError) as e:
                self._live = None
                raise ModelFileError(f"the model cannot run batches ({e}); {FIX}") from None
            self._batched = True
        return self._live


class StoredHead(NamedTuple):
    """A flatbuffer head's tensors as stored (the weight ``[V, F]``) with their quantization details: any
    of its columns dequantize from it with no interpreter alive (learning frees its own before it trains,
    and reads the columns it trains after)."""

    weight: np.ndarray
    weight_detail: dict
    bias: np.ndarray | None
    bias_detail: dict | None

    def weights(self, columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Float ``(W [F, V], b [V])``; with ``columns``, only those words' (``[F, C]``, ``[C]``, the same
        numbers): a whole float head is 2.6 MB for 10,000 words."""
        return _dequantize(self.weight, self.weight_detail, columns, transposed=True), self.biases(columns)

    def biases(self, columns: np.ndarray | None = None) -> np.ndarray:
        """The float bias ``[V]`` (``[C]`` with ``columns``)."""
        if self.bias is None or self.bias_detail is None:
            return np.zeros(len(self.weight) if columns is None else len(columns), np.float32)
        return _dequantize(self.bias, self.bias_detail, columns)


def release_freed_memory() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing).

    glibc raises its threshold for ``mmap`` after the first large block is
    freed, so an interpreter's arena and learning's big arrays come from the
    heap, and freeing them keeps their pages: a keyboard process held 5-10 MB
    it no longer used. Pinning the threshold instead made learning 60% slower.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, TypeError, AttributeError):  # not glibc, or no C library to look in (Windows)
        return None


def read_head(file: ModelFile, vocab: Vocabulary | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A model version's float head: its ``head.npz`` override, else the flatbuffer's, dequantized."""
    if file.head is not None:
        return file.head
    require_runnable(file)
    return Runtime(file, vocab or Vocabulary(file.vocab, file.metadata.get("personal_slots", 0))).flat_head()


def tensor_indices(interp: Any, metadata: dict, vocab: Vocabulary) -> Tensors:
    """Interpreter tensor indices of the input and the outputs the runtime reads."""
    outs, o = interp.get_output_details(), metadata["outputs"]
    # Files converted before the word ranking lack it (or ranked every id).
    ranks = metadata.get("ranked_ids") == list(vocab.word_ids)
    ranking = [outs[o[n]]["index"] if ranks else None for n in ("top_values", "top_ids", "sum_exp")]
    return Tensors(interp.get_input_details()[metadata["inputs"]["tokens"]]["index"],
                   outs[o["features"]]["index"], outs[o["logits"]]["index"], *ranking)


def _dequantize(values: np.ndarray, detail: dict, rows: np.ndarray | None = None,
                transposed: bool = False) -> np.ndarray:
    """A tensor's ``values`` (only ``rows``, indices into its first axis, when given) as float32 from its
    ``detail``, C-ordered (``transposed``: its transpose). Written into one new array in place: the head
    is 2.6 MB as float32, and a temporary per operation (and a copy to transpose) made learning's first
    step peak 5 MB higher."""
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), np.float32)
    zero = np.asarray(q.get("zero_points", np.zeros_like(scales)), np.float32)
    axis = int(q.get("quantized_dimension", 0))
    if rows is not None:
        values = values[rows]
        if axis == 0 and len(scales) > 1:  # a scale per row
            scales, zero = scales[rows], zero[rows] if len(zero) > 1 else zero
    if transposed:
        values, axis = values.T, values.ndim - 1 - axis
    out = np.empty(values.shape, np.float32)
    if values.dtype in (np.float32, np.float16) or not len(scales):
        out[...] = values
        return out
    shape = [1] * values.ndim
    shape[axis] = -1
    np.subtract(values, zero.reshape(shape), out=out)
    out *= scales.reshape(shape)
    return out


@contextlib.contextmanager
def _native_stderr() -> Iterator:
    """Hold back the runtime's native log lines ("INFO: Created TensorFlow Lite
    XNNPACK delegate") that would otherwise land in every app's stderr; what
    they said is kept for error messages."""
    with tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (some embedded hosts)
            yield lambda: ""
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read().decode(errors="replace").strip())[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)
