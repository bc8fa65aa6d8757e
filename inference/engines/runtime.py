"""What the installed torch was built for, read without initialising CUDA (used by the doctor).

torch is imported only under inference/engines/. The build's CUDA version (`torch.version.cuda`) is
read from torch/version.py as written by torch's build, found with importlib.util.find_spec, so the
doctor learns it in milliseconds without loading torch's shared libraries (which fail to load, or
load slowly, on exactly the machines the doctor is diagnosing). Only if that file cannot be parsed is
torch imported. None when torch is not installed.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TorchBuild:
    version: str  # "2.9.0+cu128"
    cuda: str | None  # "12.8"; None for CPU and ROCm builds

    @property
    def cuda_tuple(self) -> tuple[int, int] | None:
        if not self.cuda:
            return None
        major, _, minor = self.cuda.partition(".")
        try:
            return int(major), int(minor.split(".")[0] or 0)
        except ValueError:
            return None


def _from_version_file(path: Path) -> TorchBuild | None:
    values: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and node.value is not None:
            try:
                values[target.id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    version, cuda = values.get("__version__"), values.get("cuda")
    if not isinstance(version, str) or not (cuda is None or isinstance(cuda, str)):
        return None
    return TorchBuild(version, cuda)


def torch_build() -> TorchBuild | None:
    """The installed torch's version and the CUDA it was compiled against, or None without torch."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for location in spec.submodule_search_locations or ():
        path = Path(location) / "version.py"
        try:
            build = _from_version_file(path) if path.is_file() else None
        except (OSError, SyntaxError, UnicodeDecodeError):
            build = None
        if build is not None:
            return build
    try:
        import torch
    except Exception:  # a broken install: the doctor reports what it can
        return None
    return TorchBuild(str(torch.__version__), torch.version.cuda)
