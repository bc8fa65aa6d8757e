"""The inference server's command line, generated from InferenceSettings, in `vllm serve`'s words.

Every setting is a flag (`max_num_seqs` -> `--max-num-seqs`) with the field's description, its default and
its choices as help; a field may name more flags in ``json_schema_extra={"flags": [...]}`` for vLLM's names of
a concept we share (`--model` for `model_path`, `--max-num-batched-tokens` for `max_prefill_tokens`). The
model may also come first, as `vllm serve MODEL` takes it. Values are passed through as strings and validated
by the settings class, so the command line, the environment (``INFERENCE_*``) and the config file share one
set of rules and one set of error messages.

Written here rather than with pydantic-settings' CLI source because that source derives flag names from field
aliases, and aliases would rename the ``INFERENCE_*`` environment variables that deployments already use.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from .settings import InferenceSettings


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def _help(name: str, field: FieldInfo) -> str:
    text = field.description or name.replace("_", " ")
    if field.default is not None and not isinstance(field.default, SecretStr) and field.default != "":
        default = field.default.name if isinstance(field.default, Path) and name == "model_path" else field.default
        text += f" (default: {default})"
    return text + f" [INFERENCE_{name.upper()}]"


def flags_of(name: str, field: FieldInfo) -> list[str]:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    own = "--" + name.replace("_", "-")
    return [own, *[f for f in extra.get("flags", []) if f != own]]  # type: ignore[union-attr]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference",
        description="OpenAI-compatible inference server. Every flag can also be set as an INFERENCE_* "
                    "environment variable or in the [inference] table of the config file; flags win.",
        epilog="Like `vllm serve`: python -m inference MODEL --served-model-name NAME --port 8000")
    parser.add_argument("model", nargs="?", help="the model folder or GGUF file (same as --model)")
    for name, field in InferenceSettings.model_fields.items():
        kind, _ = _unwrap(field.annotation)
        options: dict[str, Any] = {"dest": name, "help": _help(name, field), "default": argparse.SUPPRESS}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            if typing.get_origin(kind) is Literal:
                options["choices"] = [str(c) for c in typing.get_args(kind)]
            options["metavar"] = name.upper() if "choices" not in options else None
        parser.add_argument(*flags_of(name, field), **options)
    return parser


def parse_args(argv: list[str] | None = None) -> dict[str, object]:
    """The settings given on the command line (only those), as keyword arguments for InferenceSettings."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    model = given.pop("model", None)
    if model is not None:
        if "model_path" in given and str(given["model_path"]) != model:
            parser.error("the model is given twice (positional and --model) with different values")
        given["model_path"] = model
    return {k: v for k, v in given.items() if v is not None}
