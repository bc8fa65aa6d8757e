"""The built-in commands, as skills: /help, /reset, /test. Each matches the whole message exactly."""

from __future__ import annotations

import platform

from ..core import messages as catalogue
from .base import Answer, ModelError, Skill, SkillContext, SkillResult


class HelpSkill(Skill):
    name = "help"
    description = "/help lists what the assistant can do (every enabled skill's commands)"
    commands = {"/help": catalogue.HELP_COMMAND(), "帮助": ""}
    default_order = 10
    enabled_by_default = True

    async def handle(self, ctx: SkillContext) -> SkillResult:
        if ctx.text not in self.commands:
            return None
        lines = [f"**{catalogue.HELP_HEADING()}**", "",
                 catalogue.HELP_INTRO(ttl=catalogue.duration(ctx.services.context_ttl_s)), ""]
        for skill in ctx.services.skills():
            shown = [c for c, text in skill.commands.items() if text]
            if not shown:
                continue
            aliases = [c for c, text in skill.commands.items() if not text]
            for command in shown:
                extra = catalogue.HELP_ALIASES.bind(aliases=catalogue.either([f"`{a}`" for a in aliases])) \
                    if aliases and command == shown[0] else ""
                lines.append(catalogue.HELP_LINE(command=command, aliases=extra, text=skill.commands[command]))
        extras = [s.description for s in ctx.services.skills() if not s.commands and s.description]
        if extras:
            lines += ["", f"**{catalogue.HELP_SKILLS()}**"] + [f"- {d}" for d in extras]
        return Answer("\n".join(lines), catalogue.HELP_TITLE())


class ResetSkill(Skill):
    name = "reset"
    description = "/reset clears the conversation's context"
    commands = {"/reset": catalogue.RESET_COMMAND(), "/new": "", "新会话": "", "重置": ""}
    default_order = 20
    enabled_by_default = True

    async def handle(self, ctx: SkillContext) -> SkillResult:
        if ctx.text not in self.commands:
            return None
        await ctx.clear_history()
        return Answer(catalogue.RESET_DONE(), catalogue.RESET_TITLE())


class StatusSkill(Skill):
    name = "status"
    description = "/test answers with the versions and the model's state"
    commands = {"/test": catalogue.STATUS_COMMAND()}
    default_order = 30
    enabled_by_default = True

    async def handle(self, ctx: SkillContext) -> SkillResult:
        if ctx.text not in self.commands:
            return None
        model_client = ctx.services.model
        health = await model_client.health()
        version = health.get("version") or {}
        try:
            model = await model_client.model_id()
        except ModelError as exc:
            model = catalogue.STATUS_MODEL_UNAVAILABLE(error=exc)
        server = catalogue.STATUS_SERVER(health=health.get("health")) + (catalogue.STATUS_SERVER_VERSION(
            version=version.get("version"), engine=version.get("engine"), device=version.get("device"))
            if version else "")
        skills = ctx.services.skills()
        lines = [
            f"**{catalogue.STATUS_HEADING()}**", "",
            "- " + catalogue.STATUS_CONNECTOR(version=ctx.services.version, python=platform.python_version(),
                                              platform=ctx.services.platform_name),
            "- " + catalogue.STATUS_MODEL(model=model),
            "- " + server,
            "- " + catalogue.STATUS_SKILLS(names=", ".join(s.name for s in skills) or catalogue.NONE()),
        ]
        for skill in skills:
            facts = skill.status()
            if facts:
                lines.append(f"- {skill.name}: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
        return Answer("\n".join(lines), catalogue.STATUS_TITLE())


BUILTIN: dict[str, type[Skill]] = {s.name: s for s in (HelpSkill, ResetSkill, StatusSkill)}
