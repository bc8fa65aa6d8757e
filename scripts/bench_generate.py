#!/usr/bin/env python3
"""Reference point: plain transformers generate() on a model, batch 1 and batch 8, fixed output length.

    python scripts/bench_generate.py [--model-path models/SmolLM2-135M-Instruct] [--output-len 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-path", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct")
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--batch-sizes", default="1,8")
    args = p.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model_path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32, local_files_only=True).eval()
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    for bs in (int(x) for x in args.batch_sizes.split(",")):
        batch = {k: v.repeat(bs, 1) for k, v in inputs.items()}
        model.generate(**batch, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        start = time.perf_counter()
        model.generate(**batch, max_new_tokens=args.output_len, min_new_tokens=args.output_len, do_sample=False)
        elapsed = time.perf_counter() - start
        print(f"generate() batch {bs}: {bs * args.output_len / elapsed:.1f} tok/s "
              f"({args.output_len} new tokens, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
