"""Finding skills (built in, or installed packages' entry points), configuring them, checking their needs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import ValidationError

from .base import Skill, SkillError

log = logging.getLogger("connector.skills")

ENTRY_POINT_GROUP = "appliance.skills"


@dataclass(frozen=True)
class SkillSpec:
    """One skill the connector knows of, loaded or not."""

    name: str
    origin: str  # "built-in" or "<distribution> <version>"
    cls: type[Skill] | None = None
    load_error: str | None = None

    @property
    def description(self) -> str:
        return self.cls.description if self.cls else ""


def builtin_skills() -> dict[str, type[Skill]]:
    from .builtin import BUILTIN
    from .files import FilesSkill
    from .knowledge_base import KnowledgeBaseSkill
    from .quota_skill import QuotaSkill

    return {**BUILTIN, QuotaSkill.name: QuotaSkill, KnowledgeBaseSkill.name: KnowledgeBaseSkill,
            FilesSkill.name: FilesSkill}


def discover() -> dict[str, SkillSpec]:
    """Built-in skills, then every entry point in ``appliance.skills`` (a third party cannot shadow a built-in)."""
    specs = {name: SkillSpec(name, "built-in", cls) for name, cls in builtin_skills().items()}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        origin = f"{dist.name} {dist.version}" if dist is not None else "entry point"
        if ep.name in specs:
            if specs[ep.name].origin != origin:
                log.warning("skill %r from %s ignored: the name is taken by %s", ep.name, origin,
                            specs[ep.name].origin)
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken package must not break the others
            specs[ep.name] = SkillSpec(ep.name, origin, None, f"cannot be loaded: {type(exc).__name__}: {exc}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, Skill)):
            specs[ep.name] = SkillSpec(ep.name, origin, None, f"{ep.value} is not a Skill subclass")
            continue
        if cls.name != ep.name:
            cls = type(cls.__name__, (cls,), {"name": ep.name})  # the entry point's name is the skill's name
        specs[ep.name] = SkillSpec(ep.name, origin, cls)
    return specs


def missing_requirements(cls: type[Skill]) -> list[str]:
    """Each requirement of the skill that is not installed (or at a version outside its range)."""
    problems = []
    for text in cls.requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            problems.append(f"invalid requirement {text!r}")
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement} is not installed")
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement} is required, {installed} is installed")
    return problems


def is_enabled(spec: SkillSpec, table: Mapping[str, Any] | None) -> bool:
    if table is not None and "enabled" in table:
        return bool(table["enabled"])
    return bool(spec.cls and spec.cls.enabled_by_default)


@dataclass
class Verification:
    name: str
    origin: str
    enabled: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def configure(spec: SkillSpec, table: Mapping[str, Any] | None) -> Skill:
    """An instance with its validated configuration, or SkillError naming what is wrong."""
    if spec.cls is None:
        raise SkillError(f"skill {spec.name!r} ({spec.origin}) {spec.load_error}")
    values = dict(table or {})
    values.setdefault("enabled", spec.cls.enabled_by_default)
    try:
        config = spec.cls.config_model(**values)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors())
        raise SkillError(f"[connector.plugins.{spec.name}]: {details}") from None
    return spec.cls(config)


def verify(plugins: Mapping[str, Mapping[str, Any]], names: list[str] | None = None) -> list[Verification]:
    """Load, configure and check every skill (or the named ones): packages, configuration, the skill's own check."""
    specs = discover()
    report = []
    for name in names or sorted(specs):
        if name not in specs:
            report.append(Verification(name, "?", False, [f"no such skill (known: {', '.join(sorted(specs))})"]))
            continue
        spec, table = specs[name], plugins.get(name)
        item = Verification(name, spec.origin, is_enabled(spec, table))
        if spec.cls is None:
            item.problems.append(spec.load_error or "cannot be loaded")
        else:
            item.problems += missing_requirements(spec.cls)
            try:
                skill = configure(spec, table)
            except SkillError as exc:
                item.problems.append(str(exc))
            else:
                if not item.problems:
                    try:
                        item.problems += skill.check()
                    except Exception as exc:
                        item.problems.append(f"check failed: {type(exc).__name__}: {exc}")
        report.append(item)
    return report


def load_enabled(plugins: Mapping[str, Mapping[str, Any]]) -> list[Skill]:
    """The enabled skills, configured and in order; SkillError if one cannot run (the connector will not start)."""
    specs = discover()
    unknown = sorted(set(plugins) - set(specs))
    if unknown:
        raise SkillError(f"[connector.plugins] names unknown skill(s): {', '.join(unknown)} "
                         f"(installed: {', '.join(sorted(specs))})")
    skills = []
    for name, spec in specs.items():
        table = plugins.get(name)
        if not is_enabled(spec, table):
            continue
        if spec.cls is not None:
            missing = missing_requirements(spec.cls)
            if missing and (table is None or "enabled" not in table):  # on by default only: run without it
                log.warning("skill %r is on by default but %s: it stays off (install them to use it)", name,
                            "; ".join(missing))
                continue
            if missing:
                raise SkillError(f"skill {name!r} is enabled but {'; '.join(missing)} "
                                 f"(install them, or disable it: python -m connector.skills disable {name})")
        skills.append(configure(spec, table))
    skills.sort(key=lambda s: (s.config.order if s.config.order is not None else s.default_order, s.name))
    return skills
