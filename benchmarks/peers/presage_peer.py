"""Peer benchmark: Debian's presage 0.9.1 n-gram predictor, scored exactly like edgekit.

    python -m benchmarks.peers.presage_peer [--max-targets 5000] [--out benchmarks/results/peers.json]

What it does (see ``README.md`` next to this file for the why):

1. Tokenizes the base training text (``edgekit.converters.corpus.train_files``) with
   ``edgekit.tokenizer.Tokenizer`` and writes it back as plain words, one line
   per line, so presage's own tokenizer cuts it exactly like ours (below).
2. Builds presage's 1-, 2- and 3-gram SQLite database with ``text2ngram``.
3. Drives ``libpresage.so.1`` through its C API with ``ctypes`` (Debian
   bookworm ships no Python binding) and scores it on the held-out email and
   book, and on the two personal splits before and after ``presage_learn``.

Scoring is the rule of ``edgekit/metrics.py``: targets are the word tokens of
each line in line order (``<s>``, ``</s>``, ``<num>`` are context only), the
first ``--max-targets`` of each text; a target outside the model's vocabulary
(``models/vocab.txt``, else the 10,000 most frequent training words) is a miss;
keystroke savings use 3 suggestions, tried at every prefix (the empty one
first), a tap costs one key and enters the space.

Rendering tokens for presage: presage treats ``'`` as a separator, so inside
words it becomes U+02BC (a letter to presage) and back on the way out;
``<num>`` becomes ``0`` (presage keeps digit words, and ``0`` is dropped from
its suggestions as ``<num>`` is never suggested by edgekit); ``</s>`` becomes
``.`` (a separator to presage, like any sentence end it sees in real text);
``<s>`` is dropped (presage's context is the text of the current line only).
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from edgekit.tokenizer import BOS, EOS, NUM, Tokenizer, read_text_lines
from edgekit import metrics
from edgekit.vocab import Vocabulary

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "peers.json"
DEFAULT_VOCAB = REPO / "models" / "vocab.txt"
FALLBACK_VOCAB_SIZE = 10_000
NOT_TARGETS = metrics.NOT_TARGETS
SUGGESTIONS = 3
APOSTROPHE_FOR_PRESAGE = "\u02bc"  # MODIFIER LETTER APOSTROPHE: a word character to presage
NUM_FOR_PRESAGE = "0"
DELTAS = "0.01 0.1 0.89"  # presage's shipped trigram interpolation weights (/etc/presage.xml)


# -- rendering edgekit tokens as text presage cuts the same way ----------------
def to_presage_word(token: str) -> str:
    if token == NUM:
        return NUM_FOR_PRESAGE
    if token == EOS:
        return "."
    return token.replace("'", APOSTROPHE_FOR_PRESAGE)


def render(tokens: Iterable[str]) -> str:
    """Plain text of a token list: what presage is trained on and given as context."""
    return " ".join(to_presage_word(t) for t in tokens if t != BOS)


def from_presage_word(word: str) -> str | None:
    """edgekit's token for a presage suggestion; None for one edgekit never suggests."""
    if word == NUM_FOR_PRESAGE or not word:
        return None
    return word.replace(APOSTROPHE_FOR_PRESAGE, "'")


# -- libpresage through its C API ------------------------------------------------
_PAST_STREAM = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)


def _load_libpresage() -> ctypes.CDLL:
    name = ctypes.util.find_library("presage") or "libpresage.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise SystemExit(f"libpresage not found ({e}); install it: apt-get install presage libpresage1v5") from None
    lib.presage_new_with_config.argtypes = [_PAST_STREAM, ctypes.c_void_p, _PAST_STREAM, ctypes.c_void_p,
                                            ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.presage_predict.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p))]
    lib.presage_learn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.presage_free_string_array.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.presage_free.argtypes = [ctypes.c_void_p]
    return lib


class PresageEngine:
    """One presage instance; the "past stream" callback returns whatever text we set."""

    def __init__(self, config_path: Path):
        self.lib = _load_libpresage()
        self._past = ctypes.create_string_buffer(b"")
        self._future = ctypes.create_string_buffer(b"")
        # Keep the callbacks referenced: presage calls them on every predict().
        self._past_cb = _PAST_STREAM(lambda _arg: ctypes.addressof(self._past))
        self._future_cb = _PAST_STREAM(lambda _arg: ctypes.addressof(self._future))
        self.handle = ctypes.c_void_p()
        rc = self.lib.presage_new_with_config(self._past_cb, None, self._future_cb, None,
                                              str(config_path).encode(), ctypes.byref(self.handle))
        if rc != 0:
            raise RuntimeError(f"presage_new_with_config failed with code {rc} ({config_path})")

    def predict(self, text: str) -> list[str]:
        """presage's suggestions for ``text`` (words before, then the partial word)."""
        self._past = ctypes.create_string_buffer(text.encode("utf-8"))
        result = ctypes.POINTER(ctypes.c_char_p)()
        rc = self.lib.presage_predict(self.handle, ctypes.byref(result))
        if rc != 0:
            raise RuntimeError(f"presage_predict failed with code {rc} on {text!r}")
        words, i = [], 0
        while result[i] is not None:
            words.append(result[i].decode("utf-8", errors="replace"))
            i += 1
        self.lib.presage_free_string_array(result)
        return words

    def learn(self, text: str) -> None:
        rc = self.lib.presage_learn(self.handle, text.encode("utf-8"))
        if rc != 0:
            raise RuntimeError(f"presage_learn failed with code {rc}")

    def close(self) -> None:
        if self.handle:
            self.lib.presage_free(self.handle)
            self.handle = ctypes.c_void_p()


def _predictor_xml(name: str, db: Path, learn: bool) -> str:
    return (f"<{name}><PREDICTOR>SmoothedNgramPredictor</PREDICTOR><LOGGER>ERROR</LOGGER>"
            f"<DBFILENAME>{db}</DBFILENAME><DELTAS>{DELTAS}</DELTAS><LEARN>{'true' if learn else 'false'}</LEARN>"
            f"<DatabaseConnector><LOGGER>ERROR</LOGGER></DatabaseConnector></{name}>")


def write_config(path: Path, base_db: Path, user_db: Path | None = None, learn_base: bool = False,
                 raw_suggestions: int = 6) -> Path:
    """A presage profile: /etc/presage.xml's defaults with our databases.

    Online learning is off (the test text must not teach the model while it is
    scored: edgekit's model is frozen during evaluation too); repeated
    suggestions are allowed (each prefix is scored on its own, like edgekit);
    presage returns a few more than 3 so that dropping ``0`` still leaves 3.
    """
    predictors = [_predictor_xml("DefaultSmoothedNgramPredictor", base_db, learn_base)]
    names = ["DefaultSmoothedNgramPredictor"]
    if user_db is not None:
        predictors.append(_predictor_xml("UserSmoothedNgramPredictor", user_db, True))
        names.append("UserSmoothedNgramPredictor")
    xml = f"""<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<Presage>
  <PredictorRegistry><LOGGER>ERROR</LOGGER><PREDICTORS>{' '.join(names)}</PREDICTORS></PredictorRegistry>
  <ContextTracker><LOGGER>ERROR</LOGGER><SLIDING_WINDOW_SIZE>80</SLIDING_WINDOW_SIZE>
    <LOWERCASE_MODE>yes</LOWERCASE_MODE><ONLINE_LEARNING>no</ONLINE_LEARNING></ContextTracker>
  <Selector><LOGGER>ERROR</LOGGER><SUGGESTIONS>{raw_suggestions}</SUGGESTIONS>
    <REPEAT_SUGGESTIONS>yes</REPEAT_SUGGESTIONS><GREEDY_SUGGESTION_THRESHOLD>0</GREEDY_SUGGESTION_THRESHOLD></Selector>
  <PredictorActivator><LOGGER>ERROR</LOGGER><PREDICT_TIME>1000</PREDICT_TIME>
    <MAX_PARTIAL_PREDICTION_SIZE>60</MAX_PARTIAL_PREDICTION_SIZE><COMBINATION_POLICY>Meritocracy</COMBINATION_POLICY></PredictorActivator>
  <ProfileManager><LOGGER>ERROR</LOGGER><AUTOPERSIST>false</AUTOPERSIST></ProfileManager>
  <Predictors>
    {chr(10).join(predictors)}
  </Predictors>
</Presage>
"""
    path.write_text(xml, encoding="utf-8")
    return path


# -- building the n-gram database ---------------------------------------------------
def write_rendered(token_lines: Iterable[list[str]], path: Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for line in token_lines:
            f.write(render(line) + "\n")
            n += 1
    return n


def build_ngram_db(text_file: Path, db: Path, order: int = 3) -> float:
    """``text2ngram`` once per order, appending into one SQLite file (as presage's docs do)."""
    exe = shutil.which("text2ngram")
    if exe is None:
        raise SystemExit("text2ngram not found; install it: apt-get install presage")
    db.unlink(missing_ok=True)
    start = time.perf_counter()
    env = dict(os.environ, LC_ALL="C")
    for n in range(1, order + 1):
        subprocess.run([exe, "-n", str(n), "-l", "-a", "-f", "sqlite", "-o", str(db), str(text_file)],
                       check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def empty_ngram_db(db: Path, order: int = 3) -> None:
    """An empty user database with text2ngram's schema (presage's per-user lm.db)."""
    db.unlink(missing_ok=True)
    with sqlite3.connect(db) as con:
        for n in range(1, order + 1):
            cols = [f"word_{i}" for i in range(n - 1, 0, -1)] + ["word"]
            con.execute(f"CREATE TABLE _{n}_gram ({', '.join(c + ' TEXT' for c in cols)}, count INTEGER, "
                        f"UNIQUE({', '.join(cols)}))")


def ngram_db_stats(db: Path) -> dict:
    with sqlite3.connect(db) as con:
        return {f"{n}_grams": con.execute(f"SELECT COUNT(*) FROM _{n}_gram").fetchone()[0] for n in (1, 2, 3)}


# -- scoring --------------------------------------------------------------------------
@dataclass
class Target:
    context: list[str]  # tokens of the line before the target (starts with <s>)
    word: str


def iter_targets(token_lines: Iterable[list[str]], max_targets: int | None) -> Iterator[Target]:
    """The first ``max_targets`` word targets of the text, in line order (edgekit.metrics' rule)."""
    for before, word in metrics.iter_targets(token_lines, max_targets):
        yield Target(before, word)


@dataclass
class Score:
    targets: int = 0
    oov: int = 0
    hit1: int = 0
    hit3: int = 0
    keys_without: int = 0
    keys_with: int = 0
    # open vocabulary: an out-of-vocabulary target presage gets right counts as a hit
    open_hit1: int = 0
    open_hit3: int = 0
    open_keys_with: int = 0
    next_word_seconds: list[float] = field(default_factory=list)
    all_seconds: list[float] = field(default_factory=list)

    def result(self) -> dict:
        n = max(self.targets, 1)
        kw = max(self.keys_without, 1)
        us = lambda xs: 1e6 * sum(xs) / max(len(xs), 1)  # noqa: E731
        return {
            "targets": self.targets,
            "top1": self.hit1 / n,
            "top3": self.hit3 / n,
            "keystroke_savings": 1 - self.keys_with / kw,
            "oov_rate": self.oov / n,
            "open_vocab": {"top1": self.open_hit1 / n, "top3": self.open_hit3 / n,
                           "keystroke_savings": 1 - self.open_keys_with / kw},
            "us_per_prediction": us(self.next_word_seconds),
            "us_per_call_all_prefixes": us(self.all_seconds),
            "predict_calls": len(self.all_seconds),
        }


def score(engine: PresageEngine, token_lines: Iterable[list[str]], vocab: Vocabulary,
          max_targets: int | None, label: str = "", progress: bool = True) -> dict:
    acc = Score()
    started = time.perf_counter()

    def top(context_text: str, prefix: str) -> list[str]:
        t0 = time.perf_counter()
        raw = engine.predict(context_text + prefix.replace("'", APOSTROPHE_FOR_PRESAGE))
        dt = time.perf_counter() - t0
        acc.all_seconds.append(dt)
        if not prefix:
            acc.next_word_seconds.append(dt)
        out: list[str] = []
        for w in raw:
            token = from_presage_word(w)
            if token is not None and token.startswith(prefix) and token not in out:
                out.append(token)
        return out[:SUGGESTIONS]

    for t in iter_targets(token_lines, max_targets):
        in_vocab = vocab.is_word_id(vocab.id_of(t.word))
        context_text = render(t.context)
        context_text = context_text + " " if context_text else ""
        acc.targets += 1
        acc.oov += not in_vocab
        acc.keys_without += len(t.word) + 1
        cost = len(t.word) + 1
        hit1 = hit3 = False
        for typed in range(len(t.word)):
            shown = top(context_text, t.word[:typed])
            if typed == 0:
                hit1, hit3 = shown[:1] == [t.word], t.word in shown
            if t.word in shown:
                cost = typed + 1
                break
        acc.open_hit1 += hit1
        acc.open_hit3 += hit3
        acc.open_keys_with += cost
        acc.hit1 += hit1 and in_vocab
        acc.hit3 += hit3 and in_vocab
        acc.keys_with += cost if in_vocab else len(t.word) + 1
        if progress and acc.targets % 500 == 0:
            print(f"  {label}: {acc.targets} targets, {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    return acc.result()


# -- data, vocabulary, experiments ------------------------------------------------------
def token_lines(paths: Sequence[Path], tokenizer: Tokenizer) -> Iterator[list[str]]:
    for p in paths:  # plain or .xz
        yield from tokenizer.iter_lines(read_text_lines(p))


def split_lines(path: Path, train_fraction: float = 0.8) -> tuple[list[str], list[str]]:
    """First 80% of the file's lines to learn from, the last 20% to test on (line order)."""
    lines = list(read_text_lines(path))
    cut = int(len(lines) * train_fraction)
    return lines[:cut], lines[cut:]


def presage_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libpresage1v5"],
                             capture_output=True, text=True, check=True).stdout.strip()
        return f"presage {out} (Debian libpresage1v5)"
    except (OSError, subprocess.CalledProcessError):
        return "presage (version unknown)"


def learning_experiment(name: str, path: Path, base_db: Path, work: Path, vocab: Vocabulary,
                        tokenizer: Tokenizer, max_targets: int | None, progress: bool,
                        merged_db: bool = False) -> dict:
    """Score a split's test part before and after presage learns its train part."""
    train_raw, test_raw = split_lines(path)
    train_lines = list(tokenizer.iter_lines(train_raw))
    test_lines = list(tokenizer.iter_lines(test_raw))
    out: dict = {"file": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
                 "train_lines": len(train_raw), "test_lines": len(test_raw),
                 "train_words": sum(len([t for t in line if t not in NOT_TARGETS]) for line in train_lines)}

    engine = PresageEngine(write_config(work / f"{name}_before.xml", base_db))
    out["before"] = score(engine, test_lines, vocab, max_targets, f"{name} before", progress)
    engine.close()

    # presage's own layout (/etc/presage.xml): a read-only base model plus a
    # per-user n-gram database that learns; their predictions are combined.
    user_db = work / f"{name}_user.db"
    empty_ngram_db(user_db)
    engine = PresageEngine(write_config(work / f"{name}_user.xml", base_db, user_db=user_db))
    out["after_user_db"] = _learn_then_score(engine, train_lines, test_lines, vocab, max_targets,
                                             f"{name} after (user db)", progress)
    out["after_user_db"]["user_db"] = ngram_db_stats(user_db)

    if not merged_db:
        return out
    # Alternative: learning straight into (a copy of) the base database. Slow:
    # presage's consistency check after each learned n-gram scans the big tables.
    merged_db = work / f"{name}_merged.db"
    shutil.copyfile(base_db, merged_db)
    engine = PresageEngine(write_config(work / f"{name}_merged.xml", merged_db, learn_base=True))
    out["after_merged_db"] = _learn_then_score(engine, train_lines, test_lines, vocab, max_targets,
                                               f"{name} after (merged db)", progress)
    merged_db.unlink()
    return out


def _learn_then_score(engine: PresageEngine, train_lines: list[list[str]], test_lines: list[list[str]],
                      vocab: Vocabulary, max_targets: int | None, label: str, progress: bool) -> dict:
    """Teach presage the personal-train lines through its learning API, then score; closes the engine."""
    t0 = time.perf_counter()
    for line in train_lines:
        engine.learn(render(line))
    learn_s = time.perf_counter() - t0
    result = score(engine, test_lines, vocab, max_targets, label, progress)
    result["learn_seconds"] = learn_s
    engine.close()
    return result


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def print_table(record: dict) -> None:
    rows = [(f"base / {k}", v) for k, v in record["base"].items()]
    for k, v in record["learning"].items():
        rows += [(f"{k} test, before learning", v["before"]),
                 (f"{k} test, after learn (user db)", v["after_user_db"])]
        if "after_merged_db" in v:
            rows.append((f"{k} test, after learn (merged db)", v["after_merged_db"]))
    print(f"\n{record['peer']}; first {record['max_targets']} targets per text; vocabulary: {record['vocab']['source']}")
    print(f"{'set':40s} {'targets':>7s} {'top1':>6s} {'top3':>6s} {'KS@3':>6s} {'OOV':>6s} {'us/pred':>8s}"
          f"  | open-vocab {'top1':>6s} {'top3':>6s} {'KS@3':>6s}")
    for label, r in rows:
        o = r["open_vocab"]
        print(f"{label:40s} {r['targets']:7d} {_pct(r['top1'])} {_pct(r['top3'])} {_pct(r['keystroke_savings'])} "
              f"{_pct(r['oov_rate'])} {r['us_per_prediction']:8.0f}  |            "
              f"{_pct(o['top1'])} {_pct(o['top3'])} {_pct(o['keystroke_savings'])}")


def markdown_table(record: dict) -> str:
    """The results as a Markdown table (for README.md)."""
    lines = ["| set | targets | top-1 | top-3 | keystroke savings | OOV targets | µs / prediction | open-vocab top-1 / top-3 / KS |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]

    def row(label: str, r: dict) -> None:
        o = r["open_vocab"]
        lines.append(f"| {label} | {r['targets']} | {_pct(r['top1']).strip()} | {_pct(r['top3']).strip()} | "
                     f"{_pct(r['keystroke_savings']).strip()} | {_pct(r['oov_rate']).strip()} | "
                     f"{r['us_per_prediction']:,.0f} | {_pct(o['top1']).strip()} / {_pct(o['top3']).strip()} / "
                     f"{_pct(o['keystroke_savings']).strip()} |")

    for k, v in record["base"].items():
        row(f"held-out {k} (`{v.get('file', k)}`)", v)
    for k, v in record["learning"].items():
        row(f"{k} last 20%, before learning", v["before"])
        row(f"{k} last 20%, after `presage_learn` of first 80% (user db)", v["after_user_db"])
        if "after_merged_db" in v:
            row(f"{k} last 20%, after `presage_learn` (merged db)", v["after_merged_db"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    from edgekit.converters import corpus  # the shipped file lists; workstation side, no TensorFlow

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-targets", type=int, default=5000,
                    help="score the first N word targets of each test text, in line order (0 = all)")
    ap.add_argument("--data-dir", type=Path, default=corpus.DATA_DIR)
    ap.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB,
                    help=f"vocab.txt of the model (default models/vocab.txt; if missing, the "
                         f"{FALLBACK_VOCAB_SIZE} most frequent training words)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="keep presage's databases here and reuse the base one (default: a temporary directory)")
    ap.add_argument("--order", type=int, default=3, help="n-gram order of presage's model")
    ap.add_argument("--merged-db", action="store_true",
                    help="also learn into a copy of the base database (slow: tens of minutes)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the sets already in --out (same settings) and score only the missing ones")
    ap.add_argument("--sets", default="all",
                    help="comma-separated: held-out sets by name (email, persuasion, each source's test split), "
                         "learn:sms, learn:persuasion; 'all' (default) scores every one")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="only print --out's results as a Markdown table")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown_table(json.loads(args.out.read_text(encoding="utf-8"))))
        return {}
    max_targets = args.max_targets or None
    wanted = set(args.sets.split(","))
    if "all" in wanted:
        wanted |= set(corpus.heldout_files(args.data_dir)) | {"learn:sms", "learn:persuasion"}
    progress = not args.quiet
    started = time.perf_counter()
    tokenizer = Tokenizer()
    train_paths = corpus.train_files(args.data_dir)
    missing = [p for p in train_paths if not p.is_file()]
    if missing:
        raise SystemExit(f"missing training text {missing[0]}; rebuild it: python -m edgekit.converters.rebuild_data --shared DIR")

    if args.vocab.is_file():
        vocab, vocab_source = Vocabulary.load(args.vocab), str(args.vocab.relative_to(REPO) if args.vocab.is_relative_to(REPO) else args.vocab)
    else:
        vocab = Vocabulary.build(token_lines(train_paths, tokenizer), FALLBACK_VOCAB_SIZE, 0)
        vocab_source = f"{FALLBACK_VOCAB_SIZE} most frequent training words ({args.vocab} not found)"

    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="presage_peer_")
        work = Path(tmp.name)
    else:
        work = args.work_dir
        work.mkdir(parents=True, exist_ok=True)
    try:
        train_txt, base_db = work / "train.txt", work / "base.db"
        n_lines = write_rendered(token_lines(train_paths, tokenizer), train_txt.with_suffix(".new"))
        reuse = base_db.is_file() and train_txt.is_file() and train_txt.read_bytes() == train_txt.with_suffix(".new").read_bytes()
        train_txt.with_suffix(".new").replace(train_txt)
        build_s = 0.0
        if not reuse or not (work / f"order{args.order}").is_file():
            if progress:
                print(f"building presage {args.order}-gram database from {n_lines} training lines ...", file=sys.stderr)
            build_s = build_ngram_db(train_txt, base_db, args.order)
            (work / f"order{args.order}").write_text("")
        record: dict = {
            "peer": f"{presage_version()}, SmoothedNgramPredictor {args.order}-gram, deltas {DELTAS}",
            "command": "python -m benchmarks.peers.presage_peer " + " ".join(argv if argv is not None else sys.argv[1:]),
            "max_targets": max_targets,
            "targets_rule": "first max_targets word targets of each test text in line order; <s>, </s>, <num> are "
                            "context only; out-of-vocabulary targets are misses (open_vocab: counted like any word)",
            "vocab": {"source": vocab_source, "words": int(vocab.suggestable_mask().sum())},
            "train": {"files": [str(p.relative_to(args.data_dir)) for p in train_paths], "lines": n_lines,
                      "ngram_db": ngram_db_stats(base_db), "build_seconds": build_s},
            "base": {}, "learning": {},
        }
        if args.resume and args.out.is_file():
            old = json.loads(args.out.read_text(encoding="utf-8"))
            same = all(old.get(k) == record[k] for k in ("peer", "max_targets", "vocab"))
            if same:
                record["base"], record["learning"] = old.get("base", {}), old.get("learning", {})

        def save() -> None:
            record["seconds"] = record.get("seconds", 0.0) + time.perf_counter() - save.last
            save.last = time.perf_counter()
            record["machine"] = {"python": platform.python_version(), "cpu": platform.machine(),
                                 "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        save.last = started

        engine = PresageEngine(write_config(work / "base.xml", base_db))
        for name, path in corpus.heldout_files(args.data_dir).items():
            if name in record["base"] or name not in wanted:
                continue
            lines = token_lines([path], tokenizer)
            record["base"][name] = score(engine, lines, vocab, max_targets, name, progress)
            record["base"][name]["file"] = str(path.relative_to(args.data_dir))
            save()
        engine.close()
        splits = {"sms": corpus.personal_file(args.data_dir), "persuasion": corpus.heldout_files(args.data_dir)["persuasion"]}
        for name, path in splits.items():
            if f"learn:{name}" not in wanted or (
                    name in record["learning"] and ("after_merged_db" in record["learning"][name] or not args.merged_db)):
                continue
            record["learning"][name] = learning_experiment(name, path, base_db, work, vocab, tokenizer,
                                                           max_targets, progress, args.merged_db)
            record["learning"][name]["file"] = str(path.relative_to(args.data_dir))
            save()
    finally:
        if tmp is not None:
            tmp.cleanup()
    print_table(record)
    print(f"\nwrote {args.out}")
    return record


if __name__ == "__main__":
    main()
