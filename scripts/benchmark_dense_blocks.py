"""When to compute a block whole instead of gathering its computed tokens: one layer, both ways, by block size.

``halting.sparse_layer`` computes a (B, T) block of at most ``halting.DENSE_ROWS`` token slots whole (every token
through the layer, the stopped tokens' states put back) and gathers the computed tokens otherwise. This script
times one layer of a trained tagger both ways (the packed path with ``DENSE_ROWS = 0``, the whole block with it
huge) for blocks of B sentences of T tokens with a share of the tokens computed (halt-and-copy: every real token a
key), interleaved, best of ``--repeats``; prints a table and writes JSON + markdown.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_dense_blocks.py \\
        --model-dir /work/runs/conll2003-selfsampling/model --quantize bf16 --out reports/dense_blocks_bf16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tokexit.api import Tagger
from tokexit.engine import halting

BLOCKS = [(1, 16), (1, 32), (2, 32), (1, 64), (4, 32), (8, 32), (16, 32), (32, 32)]
SHARES = [0.75, 0.5, 0.25]


def best_time(fn, repeats: int, inner: int = 10) -> float:
    for _ in range(2):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--quantize", default=None, help="bf16 | int8 (default fp32)")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="writes OUT.json and OUT.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tagger = Tagger.load(args.model_dir, device="cpu", quantize=args.quantize)
    parts = tagger.encoder.layer_parts(tagger.encoder.plan[args.layer][0])
    dtype = torch.bfloat16 if args.quantize == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        for b, t in BLOCKS:
            hidden = torch.randn(b, t, parts.attn_out.out_features, dtype=dtype, generator=g).to(dtype)
            real = torch.ones(b, t, dtype=torch.bool)
            for share in SHARES:
                computed = (torch.rand(b, t, generator=g) < share) & real
                computed[:, 0] = True
                times = {}
                for name, limit in (("packed", 0), ("whole", 1 << 30)):
                    def step(limit=limit, hidden=hidden, real=real, computed=computed):
                        halting.DENSE_ROWS = limit
                        halting.sparse_layer(parts, hidden.clone(), real, real, computed)
                    times[name] = best_time(step, args.repeats)
                rows.append({"sentences": b, "tokens": t, "slots": b * t, "computed_share": share,
                             "packed_us": round(times["packed"] * 1e6, 1), "whole_us": round(times["whole"] * 1e6, 1),
                             "whole_over_packed": round(times["whole"] / times["packed"], 3)})
                print(f"{b:>3} x {t:<3} ({b * t:>5} slots) {share:>5.2f} computed: packed {rows[-1]['packed_us']:>8} us"
                      f"  whole {rows[-1]['whole_us']:>8} us  whole/packed {rows[-1]['whole_over_packed']}", flush=True)
    if args.out:
        import sys

        out = {"command": "OMP_NUM_THREADS=" + str(__import__("os").environ.get("OMP_NUM_THREADS")) + " python "
               + " ".join(sys.argv), "quantize": args.quantize, "threads": args.threads, "rows": rows}
        Path(args.out + ".json").write_text(json.dumps(out, indent=1))
        lines = [f"# One layer, whole block vs packed ({args.quantize or 'fp32'}, {args.threads} threads)", "",
                 f"Command: `{out['command']}`", "",
                 "| block (B x T) | computed | packed us | whole us | whole/packed |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['sentences']} x {r['tokens']} | {r['computed_share']} | {r['packed_us']} | {r['whole_us']} | "
                  f"{r['whole_over_packed']} |" for r in rows]
        Path(args.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
