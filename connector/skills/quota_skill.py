"""The /quota command (or 额度): the asker's messages and completion tokens used today, their department's when
department quotas are set, the limits, and when they reset (connector/core/quota.py counts them). It is never
refused nor charged by the quota itself, so a user over the limit can still see why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..core import messages as catalogue
from ..core.quota import COMMANDS, Allowance
from .base import Answer, Skill, SkillContext, SkillResult


def _used(used: int, limit: int) -> str:
    return f"{used} / {limit}" if limit else f"{used} ({catalogue.QUOTA_NO_LIMIT()})"


def _lines(allowance: Allowance) -> list[str]:
    who = catalogue.QUOTA_YOU() if allowance.scope == "user" else \
        catalogue.QUOTA_DEPARTMENT(department=allowance.ident)
    return [f"**{who}**",
            f"- {catalogue.QUOTA_MESSAGES_LABEL()}: {_used(allowance.messages, allowance.message_limit)}",
            f"- {catalogue.QUOTA_TOKENS_LABEL()}: {_used(allowance.tokens, allowance.token_limit)}"]


class QuotaSkill(Skill):
    name = "quota"
    description = "/quota shows today's usage, the daily limits and when they reset"
    commands: ClassVar[Mapping[str, str]] = {COMMANDS[0]: catalogue.QUOTA_COMMAND(), **{c: "" for c in COMMANDS[1:]}}
    default_order = 35
    enabled_by_default = True

    async def handle(self, ctx: SkillContext) -> SkillResult:
        if ctx.text not in self.commands:
            return None
        quota = ctx.services.quota
        if quota is None:
            return Answer(catalogue.QUOTA_OFF(), catalogue.QUOTA_TITLE())
        report = await quota.report(ctx.message, ctx.departments)
        lines = [f"**{catalogue.QUOTA_HEADING()}** ({report.day})", ""]
        for allowance in report.allowances:
            lines += _lines(allowance) + [""]
        lines.append(catalogue.QUOTA_EXEMPT() if report.exempt else catalogue.QUOTA_RESETS(reset=report.reset_text))
        return Answer("\n".join(lines), catalogue.QUOTA_TITLE())
