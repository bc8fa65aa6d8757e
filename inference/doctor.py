"""`python -m inference.doctor`: check the machine and the model before the first start.

Prints the GPU (model, driver, the CUDA it supports, VRAM total and free), whether the installed torch
was built for a CUDA this driver runs, the model folder's consistency (config, tokenizer, chat template,
every weight shard present and of the size its index announces, quantisation), and the memory plan the
server will use, part by part. Exits non-zero with a readable reason when something would stop the
server.

  --plan     the memory plan alone, for any card and model, without a GPU:
             python -m inference.doctor --plan --model-config llama-7b --vram-gib 7.6 --method w8a8 --json
  --smoke    starts the engine and measures it (inference/smoke.py; its own options follow)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .doctor_checks import Report, check_driver, check_gpu, check_model, check_plan, small_card_problem
from .memory_plan import (GIB, KV_DTYPES, LLAMA_7B_CONFIG, WEIGHT_BITS, describe_alternative, method_of, plan_for,
                          shape_from_config)

__all__ = ["Report", "main", "run"]
_UNSET: Any = object()


def run(settings: Any, *, nvml: Any = None, torch: Any = _UNSET) -> Report:
    """Every check, in order. `nvml` replaces pynvml and `torch` the installed torch's build (tests)."""
    from .engines.runtime import torch_build
    from .gpu import probe

    report = Report()
    report.section(f"Settings: engine {settings.engine}, device {settings.device}, "
                   f"quantization {settings.quantization}, max_num_seqs {settings.max_num_seqs}")
    gpus, error = probe(nvml)
    gpu = check_gpu(report, list(gpus), error)
    if gpu is not None and settings.device != "cpu":
        check_driver(report, gpu, torch_build() if torch is _UNSET else torch,
                     wants_gpu=settings.device == "cuda" or settings.engine == "vllm")
    elif gpu is not None:
        report.warnings.append("a GPU is present but INFERENCE_DEVICE=cpu")
    config = check_model(report, settings.model_path)
    check_plan(report, settings, config, gpu)
    disk = shutil.disk_usage(settings.model_path.parent if settings.model_path.exists() else Path.cwd())
    report.section("Disk")
    report.info(f"{disk.free / GIB:.1f} GiB free next to the model")
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inference.doctor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="start the engine and check it (python -m inference.doctor --smoke --help for its options)")
    p.add_argument("--plan", action="store_true", help="print only the memory plan (no GPU needed)")
    plan = p.add_argument_group("--plan options")
    plan.add_argument("--model-config", metavar="PATH|llama-7b",
                      help="a config.json, a model folder, or llama-7b (default: INFERENCE_MODEL_PATH)")
    plan.add_argument("--vram-gib", type=float, help="what the card reports in all (default: GPU 0's)")
    plan.add_argument("--free-gib", type=float, help="free before the server starts (default: --vram-gib, or GPU 0's)")
    plan.add_argument("--method", choices=sorted(WEIGHT_BITS), help="the weights (default: the checkpoint's)")
    plan.add_argument("--lm-head-int8", action="store_true", help="lm_head is quantised too (default: the checkpoint's)")
    plan.add_argument("--kv-cache-dtype", choices=list(KV_DTYPES),
                      help="default: fp16, int8_per_token_head when fp16 leaves too little context")
    plan.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                      help="default: eager below 12 GiB, CUDA graphs above unless they do not fit")
    plan.add_argument("--max-num-batched-tokens", type=int, help="default: 2048, 512 when memory is short")
    plan.add_argument("--max-num-seqs", type=int, help="default: INFERENCE_MAX_NUM_SEQS")
    plan.add_argument("--max-model-len", type=int, help="default: INFERENCE_MAX_MODEL_LEN, else min(model's, 4096)")
    plan.add_argument("--capability", default=None, help="compute capability without a GPU (default 7.5, a T4)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p


def _model_config(value: str | None, settings: Any) -> dict[str, Any]:
    if value in ("llama-7b", "llama2-7b", "llama-2-7b"):
        return dict(LLAMA_7B_CONFIG)
    path = Path(value) if value else settings.model_path
    return json.loads((path / "config.json" if path.is_dir() else path).read_text())


def plan_command(args: argparse.Namespace) -> int:
    """--plan: 0 when it fits, 1 when it does not, 2 for bad input."""
    from .gpu import first_gpu
    from .settings import InferenceSettings

    settings = InferenceSettings()
    try:
        config = _model_config(args.model_config, settings)
    except (OSError, ValueError) as exc:
        print(f"doctor --plan: cannot read the model config ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    gpu = None if args.vram_gib else first_gpu()
    if args.vram_gib is None and gpu is None:
        print("doctor --plan: no GPU here; give --vram-gib (an 8 GB card reports about 7.6, a T4 15)", file=sys.stderr)
        return 2
    total = int(args.vram_gib * GIB) if args.vram_gib else gpu.total_bytes
    free = int(args.free_gib * GIB) if args.free_gib else total if args.vram_gib else gpu.free_bytes
    name = gpu.name if gpu else f"a {args.vram_gib:g} GiB card"
    capability = gpu.capability if gpu else tuple(int(x) for x in (args.capability or "7.5").split("."))[:2]
    checkpoint_method, checkpoint_head = method_of(config, "fp16")
    method = args.method or checkpoint_method
    try:
        plan = plan_for(shape_from_config(config), free, vram_bytes=total, method=method,
                        lm_head_quantized=args.lm_head_int8 or (checkpoint_head and not args.method),
                        want_model_len=args.max_model_len or settings.max_model_len,
                        want_seqs=args.max_num_seqs or settings.max_num_seqs, kv_cache_dtype=args.kv_cache_dtype,
                        enforce_eager=args.enforce_eager, max_num_batched_tokens=args.max_num_batched_tokens,
                        capability=capability)
    except ValueError as exc:
        print(f"doctor --plan: {exc}", file=sys.stderr)
        return 2
    out = plan.as_dict(capability)
    out.update(card=name, capability=f"{capability[0]}.{capability[1]}")
    if problem := small_card_problem(name, total):
        out.update(fits=False, reason=problem, engine_arguments=None, alternative=None)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_plan(out, plan)
    return 0 if out["fits"] else 1


def _print_plan(out: dict[str, Any], plan: Any) -> None:
    gib = lambda b: f"{b / GIB:.2f} GiB"  # noqa: E731
    print(f"{out['card']} (compute capability {out['capability']}): {gib(out['vram_bytes'])} in all, "
          f"{gib(out['free_bytes'])} free")
    print(f"  weights ({out['options']['method']}): {gib(out['weight_bytes'])}")
    for part, value in out["overhead"].items():
        print(f"  {part}: {gib(value)}")
    print(f"  {out['arithmetic']}")
    if out["fits"]:
        print(f"fits: max_model_len {out['max_model_len']}, max_num_seqs {out['max_num_seqs']}")
        print(f"vLLM arguments: {json.dumps(out['engine_arguments'])}")
    else:
        print(f"does not fit: {out['reason']}")
        if alternative := describe_alternative(plan) if out.get("alternative") else "":
            print(f"what fits: {alternative}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--smoke" in argv:  # its own parser and options (it accepts --smoke itself)
        from .smoke import main as smoke_main

        return smoke_main(argv)
    args = _parser().parse_args(argv)  # --help exits here, before anything else happens
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.plan:
        return plan_command(args)
    from .settings import InferenceSettings

    report = run(InferenceSettings())
    print("\n".join(report.lines))
    for warning in report.warnings:
        print(f"WARNING: {warning}")
    if report.problems:
        for problem in report.problems:
            print(f"PROBLEM: {problem}")
        print(f"\ndoctor: {len(report.problems)} problem(s) would stop the server.")
        return 1
    print("\ndoctor: ready to start.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
