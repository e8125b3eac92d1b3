"""A plain-text corpus -> token .betons (train + test) and their manifests.

    lmc beton build text --src input.txt [--tokenizer char|gpt2] [--bpe gpt2.tiktoken]
                         [--stride 1024] [--vocab-from BETON] [--name NAME]

* **Split**: the corpus is decoded as UTF-8 and cut at character ``int(0.9 * len(text))``:
  the first 90% -> ``train``, the last 10% -> ``test`` (nanoGPT's rule for tiny-shakespeare,
  applied to the characters before tokenising, as nanoGPT does for both its char and its BPE
  preparation). ``test`` is the held-out split seed 002 interpolates on (nanoGPT calls it ``val``).
* **Tokenizers**: ``char`` (default): one token per character; the vocabulary is the sorted set
  of the corpus's characters (65 symbols for tiny-shakespeare), or, with ``--vocab-from``, that
  of another char-level .beton, in which case characters outside it are dropped and counted in
  the manifest (so a pretraining corpus shares the fine-tuning corpus's ids). ``gpt2``: GPT-2's
  BPE through ``tiktoken`` from a LOCAL ranks file (``--bpe``; never downloaded), 50,257 ids,
  ``encode_ordinary`` (text such as ``<|endoftext|>`` in the corpus is plain text).
* **Layout** (``lmc.manifest.window_starts``): sample i = the int32 tokens
  ``[start_i, start_i + 2 * stride)``, ``start_i = min(i * stride, N - 2 * stride)``. Samples
  overlap by half, so the loader can cut a window of ``block_size + 1 <= stride + 1`` tokens at
  any offset in ``[0, stride)`` of a sample: every start position of the stream is reachable,
  each from one sample, so an epoch's windows start uniformly over the stream and every
  token-to-token transition is trained on (non-overlapping chunks would never train across
  a chunk boundary). The whole stream is stored, so evaluation reads it back exactly.
* **Determinism**: one FFCV writer worker, fixed page size: the same corpus and options give
  byte-identical files (tested).

Bad input (empty or non-UTF-8 corpus, unknown tokenizer, missing BPE file, a split shorter
than one stored window) raises a ``SourceError`` before anything is written.
"""
from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import numpy as np

from beton_builders.sources import SourceError, file_record
from lmc import paths
from lmc.config import save_json
from lmc.io import atomic_path, atomic_write_text, sha256_file
from lmc.manifest import BUILDER_VERSION, ManifestError, read_manifest, stream_sha256, window_starts

NAME = "text"
TOKENIZERS = ("char", "gpt2")
SPLITS = ("train", "test")
TRAIN_FRACTION = 0.9
# Holds windows of up to 1024 + 1 tokens: every preset of seed 002, GPT-2's context included.
DEFAULT_STRIDE = 1024
TOKEN_DTYPE = np.dtype("int32")
GPT2_MERGEABLE = 50256  # ranks in GPT-2's BPE file; <|endoftext|> is id 50256 after them
GPT2_VOCAB = GPT2_MERGEABLE + 1
SPLIT_RULE = "characters [0, int(0.9 * n)) -> train, [int(0.9 * n), n) -> test (nanoGPT), then tokenised"
CORPUS_PREFIX = "corpus:"


# -- corpora that ship with an installed package (offline pretraining) ---------------------------

def _pydoc_topics() -> tuple[str, str]:
    """CPython's help topics (``pydoc_data.topics``): ~465k characters of English prose about
    Python, present in every CPython install. Its text changes between Python releases, so the
    version is recorded and the file's sha256 is in every manifest built from it."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key].strip("\n") for key in sorted(topics)) + "\n"
    return text, f"pydoc_data.topics of Python {sys.version.split()[0]}: {len(topics)} topics, sorted by key"


CORPORA = {"pydoc_topics": _pydoc_topics}


def materialise_corpus(name: str, root=None) -> Path:
    """Write corpus ``name`` to ``<results>/corpora/<name>.txt`` (atomically, once) and return it."""
    if name not in CORPORA:
        raise SourceError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(CORPORA))}")
    text, _ = CORPORA[name]()
    out = paths.corpus_path(name, root)
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        atomic_write_text(out, text)
    return out


def resolve_src(src, root=None) -> tuple[Path, str]:
    """``--src``: a text file, ``corpus:NAME`` (see CORPORA; written under the results ``root``),
    or None for tiny-shakespeare under the data root. Returns the file and where it came from."""
    if src is None:
        path = paths.data_root() / "tinyshakespeare" / "input.txt"
        if not path.exists():
            raise SourceError(f"no --src given and {path} does not exist; pass --src a UTF-8 text file "
                              f"(e.g. tiny-shakespeare's input.txt) or set LMC_DATA_ROOT")
        return path, "tiny-shakespeare (input.txt under the data root)"
    if str(src).startswith(CORPUS_PREFIX):
        name = str(src)[len(CORPUS_PREFIX):]
        if name not in CORPORA:
            raise SourceError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(CORPORA))}")
        return materialise_corpus(name, root), CORPORA[name]()[1]
    path = Path(src).expanduser()
    if not path.is_file():
        raise SourceError(f"{path}: no such file; --src must be a UTF-8 text file or corpus:NAME "
                          f"({', '.join(CORPUS_PREFIX + n for n in sorted(CORPORA))})")
    return path, f"user text {path.name}"


def default_name(src, tokenizer: str) -> str:
    """``<file stem>_<tokenizer>``; tiny-shakespeare (no --src) is ``shakespeare_<tokenizer>``."""
    if src is None:
        stem = "shakespeare"
    elif str(src).startswith(CORPUS_PREFIX):
        stem = str(src)[len(CORPUS_PREFIX):]
    else:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(src).name.split(".")[0]).strip("._") or "text"
    return f"{stem}_{tokenizer}"


def read_corpus(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise SourceError(f"{path}: the corpus is empty; give a text file with content")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 (byte {exc.start}: {exc.reason}); convert it, e.g. "
                          f"`iconv -f latin1 -t utf-8 {path.name} > out.txt`") from None


def split_text(text: str) -> dict[str, tuple[int, int]]:
    cut = int(TRAIN_FRACTION * len(text))
    return {"train": (0, cut), "test": (cut, len(text))}


# -- tokenizers -----------------------------------------------------------------------------

def encode_chars(text: str, vocabulary: str) -> tuple[np.ndarray, int]:
    """Ids of ``text``'s characters in the sorted ``vocabulary``; characters outside it are
    dropped. Returns (int32 ids, number dropped)."""
    codes = np.frombuffer(text.encode("utf-32-le"), "<u4")
    vocab = np.frombuffer(vocabulary.encode("utf-32-le"), "<u4")
    ids = np.searchsorted(vocab, codes)
    known = (ids < len(vocab)) & (vocab[np.minimum(ids, len(vocab) - 1)] == codes)
    return ids[known].astype(TOKEN_DTYPE), int(len(codes) - known.sum())


def gpt2_encoding(bpe):
    """GPT-2's tokenizer from a local tiktoken ranks file (``r50k_base``'s format).

    The ranks are parsed here rather than with ``tiktoken.load.load_tiktoken_bpe``, which copies
    every file it reads into a cache keyed by the path alone (a changed file at the same path
    would then be served stale).
    """
    import tiktoken
    from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

    if bpe is None:
        raise SourceError("--tokenizer gpt2 needs --bpe PATH: GPT-2's BPE ranks file (gpt2.tiktoken / "
                          "r50k_base.tiktoken); it is never downloaded")
    path = Path(bpe).expanduser()
    if not path.is_file():
        raise SourceError(f"{path}: no such BPE file; pass --bpe the path of GPT-2's ranks file "
                          f"(gpt2.tiktoken), which is never downloaded")
    ranks = {}
    try:
        for line in path.read_bytes().splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
    except ValueError:
        raise SourceError(f"{path}: not a tiktoken ranks file (lines of '<base64 token> <rank>')") from None
    if sorted(ranks.values()) != list(range(GPT2_MERGEABLE)):
        raise SourceError(f"{path}: holds {len(ranks)} ranks, GPT-2's BPE has ranks 0..{GPT2_MERGEABLE - 1}; "
                          f"pass GPT-2's file (gpt2.tiktoken)")
    enc = tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                            special_tokens={ENDOFTEXT: GPT2_MERGEABLE})
    return enc, {**file_record(path), "eot_token": GPT2_MERGEABLE}


def _char_vocabulary(text: str, vocab_from) -> tuple[str, dict]:
    if vocab_from is None:
        return "".join(sorted(set(text))), {"vocabulary_from": "corpus"}
    try:
        other = read_manifest(vocab_from)
    except ManifestError as exc:
        raise SourceError(f"--vocab-from: {exc}") from None
    tok = other.get("tokenizer") or {}
    if other.get("kind") != "tokens" or tok.get("name") != "char":
        raise SourceError(f"--vocab-from {vocab_from}: not a char-level token .beton; give the train.beton "
                          f"built with --tokenizer char whose vocabulary to share")
    return tok["vocabulary"], {"vocabulary_from": f"{other['dataset']}/{other['split']} "
                                                  f"(beton sha256 {other['beton_sha256'][:16]})"}


def tokenize(text: str, tokenizer: str, *, bpe=None, vocab_from=None) -> tuple[dict[str, np.ndarray], dict]:
    """The corpus's splits as int32 token ids, and the manifest's ``tokenizer`` record."""
    if tokenizer not in TOKENIZERS:
        raise SourceError(f"unknown tokenizer {tokenizer!r}; expected one of {', '.join(TOKENIZERS)}")
    if tokenizer != "char" and vocab_from is not None:
        raise SourceError("--vocab-from applies to --tokenizer char only (gpt2's vocabulary is fixed)")
    if tokenizer == "char" and bpe is not None:
        raise SourceError("--bpe applies to --tokenizer gpt2 only")
    ranges = split_text(text)
    if tokenizer == "char":
        vocabulary, origin = _char_vocabulary(text, vocab_from)
        out, dropped = {}, {}
        for split, (lo, hi) in ranges.items():
            out[split], dropped[split] = encode_chars(text[lo:hi], vocabulary)
        unknown = "".join(sorted(set(text) - set(vocabulary)))
        record = {"name": "char", "vocabulary": vocabulary, "vocab_size": len(vocabulary), **origin,
                  "dropped_chars": dropped, "dropped_symbols": unknown}
        return out, record
    enc, bpe_record = gpt2_encoding(bpe)
    out = {split: np.asarray(enc.encode_ordinary(text[lo:hi]), dtype=TOKEN_DTYPE) for split, (lo, hi) in ranges.items()}
    return out, {"name": "gpt2", "vocab_size": GPT2_VOCAB, "bpe": bpe_record, "pattern": "r50k (GPT-2)",
                 "encode": "encode_ordinary"}


# -- writing --------------------------------------------------------------------------------

class _Windows:
    """The indexed-dataset view FFCV's writer expects: item i -> (sample i's tokens,)."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, window: int):
        self.tokens, self.starts, self.window = tokens, starts, window

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i):
        start = int(self.starts[i])
        return (self.tokens[start:start + self.window],)


def write_tokens(tokens: np.ndarray, beton, *, dataset: str, split: str, stride: int, extra: dict,
                 progress: bool = True) -> dict:
    """Write one split's token stream as a .beton + manifest (atomically); return the manifest."""
    from importlib.metadata import version

    from beton_builders.writer import _watched_ffcv_writer, page_size_for
    from lmc.ffcv_compat import import_ffcv

    import_ffcv()
    from ffcv.fields import NDArrayField
    from ffcv.writer import DatasetWriter

    beton = Path(beton)
    window = 2 * stride
    starts = window_starts(len(tokens), stride)
    page_size = page_size_for(window * TOKEN_DTYPE.itemsize + 4096)
    mpath = paths.manifest_path(beton)
    if mpath.exists():  # never pair an old manifest with a new .beton
        mpath.unlink()
    with atomic_path(beton) as tmp, _watched_ffcv_writer(f"write {dataset}/{beton.name}", progress):
        writer = DatasetWriter(str(tmp), {"tokens": NDArrayField(dtype=TOKEN_DTYPE, shape=(window,))},
                               page_size=page_size, num_workers=1)
        writer.from_indexed_dataset(_Windows(np.ascontiguousarray(tokens, TOKEN_DTYPE), starts, window),
                                    chunksize=1000)
    try:
        manifest = {
            "kind": "tokens", "dataset": dataset, "split": split,
            "num_samples": int(len(starts)), "num_tokens": int(len(tokens)), "token_dtype": "int32",
            "stride": int(stride), "stored_window": int(window),
            "field_order": ["tokens"],
            "fields": {"tokens": {"type": "NDArrayField", "dtype": "int32", "shape": [window]}},
            "tokens_sha256": stream_sha256(tokens),
            "writer": {"ffcv": version("ffcv"), "num_workers": 1, "page_size": page_size, "deterministic": True},
            "builder_version": BUILDER_VERSION,
            **extra,
            "beton_sha256": sha256_file(beton), "beton_bytes": beton.stat().st_size,
        }
        save_json(manifest, mpath)
    except BaseException:
        beton.unlink(missing_ok=True)
        raise
    return manifest


def build(out_dir, splits=SPLITS, src=None, tokenizer: str = "char", bpe=None, stride: int = DEFAULT_STRIDE,
          vocab_from=None, name: str | None = None, root=None, download: bool = False, progress: bool = True,
          encoding: str = "raw", jpeg_quality: int = 90) -> dict[str, Path]:
    """Tokenise ``src`` and write ``<out_dir>/{train,test}.beton`` + manifests; return the paths.
    ``name`` is the dataset name recorded in the manifests (default: :func:`default_name`);
    ``root`` the results root a ``corpus:NAME`` is written under; ``jpeg_quality`` is ignored
    (images only; accepted because `lmc beton build` passes it to every builder)."""
    from beton_builders.base import check_splits

    if download:
        raise SourceError("--download does not apply to text: the corpus is a local file")
    if encoding != "raw":
        raise SourceError(f"--encoding {encoding} applies to images only")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise SourceError(f"--stride must be a positive integer, got {stride!r}")
    splits = check_splits(splits)
    path, note = resolve_src(src, root)
    text = read_corpus(path)
    tokens, tok_record = tokenize(text, tokenizer, bpe=bpe, vocab_from=vocab_from)
    for split in splits:  # every split is checked before the first byte is written
        if len(tokens[split]) < 2 * stride:
            raise SourceError(f"{path}: the {split} split has {len(tokens[split])} tokens, fewer than one stored "
                              f"window of 2 x stride = {2 * stride}; use --stride {max(1, len(tokens[split]) // 2)} "
                              f"or less, or a longer corpus")
    name = name or default_name(src, tokenizer)
    ranges = split_text(text)
    source = {**file_record(path), "num_chars": len(text)}
    counts = {s: int(len(t)) for s, t in tokens.items()}
    out = {}
    for split in splits:
        extra = {"tokenizer": tok_record, "vocab_size": tok_record["vocab_size"], "sources": [source],
                 "source_note": note, "split_rule": SPLIT_RULE, "char_range": list(ranges[split]),
                 "token_counts": counts}
        beton = Path(out_dir) / f"{split}.beton"
        write_tokens(tokens[split], beton, dataset=name, split=split, stride=stride, extra=extra, progress=progress)
        if progress:
            print(f"[beton] {name}/{split}: {counts[split]} tokens -> {beton}", file=sys.stderr)
        out[split] = beton
    return out
