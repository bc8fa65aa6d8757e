"""An example third-party skill: answers `/define TERM` from its configured glossary, and tells the model
the company's name for every other message (so it both answers and adds context)."""

from __future__ import annotations

from pydantic import Field

from connector.skills import Answer, Augment, Skill, SkillConfig, SkillContext, SkillResult


class GlossaryConfig(SkillConfig):
    terms: dict[str, str] = Field(default_factory=dict)
    company: str = ""


class GlossarySkill(Skill):
    name = "glossary"
    description = "company glossary"
    commands = {"/define": "/define TERM: what a company term means"}
    requires = ("numpy>=1.20",)
    config_model = GlossaryConfig
    default_order = 50

    async def handle(self, ctx: SkillContext) -> SkillResult:
        if ctx.text.startswith("/define"):
            term = ctx.text.removeprefix("/define").strip()
            meaning = self.config.terms.get(term.upper())
            return Answer(f"**{term}**: {meaning}" if meaning else f"`{term}` is not in the glossary.", "Glossary")
        if self.config.company:
            return Augment(f"You work for {self.config.company}.")
        return None


class NeedsMissingPackage(Skill):
    name = "needs_missing"
    requires = ("surely-not-installed-package>=1.0",)
