"""Text betons, the seeded window loader and GPT steps on this machine (docs/text.md's tables).

Run: ``.venv/bin/python benchmarks/bench_text.py [--repeats 3] [--threads 2]``. Needs
tiny-shakespeare under the data root (and GPT-2's BPE file beside it for the BPE rows).
Prints three Markdown tables: build seconds per tokenizer (median of the repeats after a
warm-up, imports excluded), loader windows/s over three epochs (after one warm-up epoch), and
milliseconds per training step (forward + backward + AdamW, median of 20 after 3 warm-up
steps) and per full evaluation of the test split, for seed 002's CPU-sized presets.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def builds(tmp: Path, repeats: int) -> tuple[list[dict], dict]:
    from beton_builders import text
    from lmc import paths
    from lmc.manifest import read_manifest

    src = paths.data_root() / "tinyshakespeare" / "input.txt"
    bpe = paths.data_root().parent / "assets" / "gpt2.tiktoken"
    rows, built = [], {}
    for tokenizer, kw in (("char", {}), ("gpt2", {"bpe": bpe})):
        if tokenizer == "gpt2" and not bpe.exists():
            continue
        times = []
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            out = text.build(tmp / f"{tokenizer}{r}", src=src, tokenizer=tokenizer, progress=False, **kw)
            times.append(time.perf_counter() - t0)
        m = {s: read_manifest(p) for s, p in out.items()}
        built[tokenizer] = out
        rows.append({"tokenizer": tokenizer, "tokens": sum(v["num_tokens"] for v in m.values()),
                     "seconds": statistics.median(times[1:]),
                     "mib": sum(v["beton_bytes"] for v in m.values()) / 2**20,
                     "sha": ", ".join(v["beton_sha256"][:12] for v in m.values())})
    return rows, built


def loader_rate(beton, block_size: int, batch_size: int) -> float:
    from pipelines import make_text_loader

    loader = make_text_loader(beton, batch_size=batch_size, block_size=block_size, order_seed=1, aug_seed=1)
    for _ in loader.iter_epoch(0):
        pass
    t0, n = time.perf_counter(), 0
    for e in range(1, 4):
        for x, _, _ in loader.iter_epoch(e):
            n += len(x)
    return n / (time.perf_counter() - t0)


def step_ms(name: str, vocab_size: int, batch_size: int) -> tuple[float, int]:
    import torch

    from experiments.language import accumulate
    from experiments.models.gpt import GPT, parameter_count, preset

    cfg = preset(name, vocab_size=vocab_size)
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95))
    x = torch.randint(0, vocab_size, (batch_size, cfg.block_size))
    times = []
    for i in range(23):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        accumulate(model, [(x, x)])
        opt.step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[3:]), parameter_count(cfg)


def eval_seconds(beton, name: str, vocab_size: int) -> tuple[float, int]:
    import torch

    from experiments.language import evaluate_lm
    from experiments.models.gpt import GPT, preset
    from pipelines import eval_windows

    cfg = preset(name, vocab_size=vocab_size)
    windows = eval_windows(beton, cfg.block_size)
    model = GPT(cfg)
    t0 = time.perf_counter()
    with torch.no_grad():
        evaluate_lm(model, windows, batch_size=512)
    return time.perf_counter() - t0, int(windows[:, 1:].numel())


def main() -> None:
    from lmc import numerics

    numerics.apply()  # before torch loads: the pinned profile (LMC_NUMERICS=native for the libraries' own paths)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    from importlib.metadata import version

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} CPUs, no GPU; python {platform.python_version()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), ffcv {version('ffcv')}, tiktoken {version('tiktoken')}\n")
    with tempfile.TemporaryDirectory() as tmp:
        rows, built = builds(Path(tmp), args.repeats)
        print("| tokenizer | tokens (train + test) | build s | .betons MiB | sha256 (first 12) |")
        print("|---|---:|---:|---:|---|")
        for r in rows:
            print(f"| {r['tokenizer']} | {r['tokens']:,} | {r['seconds']:.2f} | {r['mib']:.1f} | {r['sha']} |")
        char = built["char"]
        print("\n| loader (char train, stride 1024) | windows/s |")
        print("|---|---:|")
        for block, batch in ((8, 32), (64, 32), (256, 32)):
            print(f"| block {block}, batch {batch} | {loader_rate(char['train'], block, batch):,.0f} |")
        print("\n| model | params | batch x block | ms / step | test-split eval s (tokens) |")
        print("|---|---:|---|---:|---:|")
        for name, vocab, batch, beton in (("TinyGPT", 65, 32, char["test"]), ("CompactGPT", 65, 32, char["test"]),
                                          ("CompactGPT", 50257, 32, built.get("gpt2", {}).get("test"))):
            if beton is None:
                continue
            ms, params = step_ms(name, vocab, batch)
            secs, tokens = eval_seconds(beton, name, vocab)
            block = {"TinyGPT": 8, "CompactGPT": 64}[name]
            print(f"| {name} (vocab {vocab}) | {params:,} | {batch} x {block} | {ms:.1f} | {secs:.1f} ({tokens:,}) |")


if __name__ == "__main__":
    main()
