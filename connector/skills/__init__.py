"""Skills: what the assistant can do besides chatting (commands, the knowledge base, third-party plugins)."""

from .base import Answer, Augment, Passage, Skill, SkillConfig, SkillContext, SkillResult, SkillServices

__all__ = ["Answer", "Augment", "Passage", "Skill", "SkillConfig", "SkillContext", "SkillResult", "SkillServices"]
