"""The built-in commands, as skills: /help, /reset, /test. Each matches the whole message exactly."""

from __future__ import annotations

import platform

from .base import Answer, Skill, SkillContext, SkillResult

RESET_DONE = "好的，已开始新的会话。\n\nDone: the conversation starts afresh."


class HelpSkill(Skill):
    name = "help"
    description = "/help lists what the assistant can do (every enabled skill's commands)"
    commands = {"/help": "显示本帮助 / this help", "帮助": ""}
    default_order = 10
    enabled_by_default = True

    async def handle(self, ctx: SkillContext) -> SkillResult:
        if ctx.text not in self.commands:
            return None
        lines = ["**私有助手 / Private assistant**", "",
                 "直接提问即可，我会记住本次会话的上下文（30 分钟）。",
                 "Ask anything; I remember this conversation for 30 minutes.", ""]
        for skill in ctx.services.skills():
            shown = [c for c, text in skill.commands.items() if text]
            if not shown:
                continue
            aliases = [c for c, text in skill.commands.items() if not text]
            for command in shown:
                extra = f"（或 {'、'.join(f'`{a}`' for a in aliases)}）" if aliases and command == shown[0] else ""
                lines.append(f"- `{command}`{extra}：{skill.commands[command]}")
        extras = [s.description for s in ctx.services.skills() if not s.commands and s.description]
        if extras:
            lines += ["", "**技能 / Skills**"] + [f"- {d}" for d in extras]
        return Answer("\n".join(lines), "帮助 / Help")


class ResetSkill(Skill):
    name = "reset"
    description = "/reset clears the conversation's context"
    commands = {"/reset": "清空上下文 / start over", "/new": "", "新会话": "", "重置": ""}
    default_order = 20
    enabled_by_default = True

    async def handle(self, ctx: SkillContext) -> SkillResult:
        if ctx.text not in self.commands:
            return None
        await ctx.clear_history()
        return Answer(RESET_DONE, "新会话")


class StatusSkill(Skill):
    name = "status"
    description = "/test answers with the versions and the model's state"
    commands = {"/test": "版本与模型状态 / version and model status"}
    default_order = 30
    enabled_by_default = True

    async def handle(self, ctx: SkillContext) -> SkillResult:
        if ctx.text not in self.commands:
            return None
        from ..core.model import ModelError

        model_client = ctx.services.model
        health = await model_client.health()
        version = health.get("version") or {}
        try:
            model = await model_client.model_id()
        except ModelError as exc:
            model = f"unavailable ({exc})"
        lines = [
            "**连接正常 / Connector OK**", "",
            f"- connector: {ctx.services.version} (Python {platform.python_version()}, "
            f"{ctx.services.platform_name} Stream mode)",
            f"- model: {model}",
            f"- inference server: {health.get('health')}" + (
                f", version {version.get('version')}, engine {version.get('engine')}, device {version.get('device')}"
                if version else ""),
        ]
        skills = ctx.services.skills()
        lines.append(f"- skills: {', '.join(s.name for s in skills) or 'none'}")
        for skill in skills:
            facts = skill.status()
            if facts:
                lines.append(f"- {skill.name}: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
        return Answer("\n".join(lines), "状态 / Status")


BUILTIN: dict[str, type[Skill]] = {s.name: s for s in (HelpSkill, ResetSkill, StatusSkill)}
