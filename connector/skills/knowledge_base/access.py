"""Who may read which knowledge-base documents: `_access.toml` files in the folders, read into frozen rules.

A folder's ``_access.toml`` applies to the documents in it and in its sub-folders:

    users = ["manager4220"]          # DingTalk staff ids (senderStaffId)
    departments = [10086, 20033]      # DingTalk department ids (the contact API's dept_id_list)
    admins = ["it-lead"]              # staff ids who may read it too (the folder's owners)
    open = false                      # true: everyone, whatever the lists say

The nearest file wins: for ``finance/payroll/2024.xlsx`` the rule is ``finance/payroll/_access.toml`` if there
is one, else ``finance/_access.toml``, else the root's; rules are not merged, so the file a reader opens is the
whole rule for everything below it (a sub-folder can be narrower or wider than its parent). A document under no
file is readable by everyone when the skill's ``open_without_access_file`` is true (the default), by nobody when
it is false. A file that cannot be read or does not validate closes its folder (and everything that inherits
it) and is logged as an error naming it, until it is fixed. An empty file closes the folder too.

"Open to all" (``open = true``, or no file with ``open_without_access_file``) is what a group chat may use.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("connector.skills.knowledge_base")

ACCESS_FILE = "_access.toml"


class AccessFile(BaseModel):
    """The wire shape of an ``_access.toml``."""

    model_config = ConfigDict(extra="forbid")

    users: list[str] = Field(default_factory=list, description="staff ids")
    departments: list[int | str] = Field(default_factory=list, description="department ids")
    admins: list[str] = Field(default_factory=list, description="staff ids who may read it too")
    open: bool = Field(False, description="readable by everyone")


@dataclass(frozen=True, slots=True)
class Rule:
    """The access rule of one folder (and what inherits it)."""

    source: str  # the _access.toml it came from (relative to the root), or "" for the default
    open: bool = False
    users: frozenset[str] = frozenset()
    departments: frozenset[str] = frozenset()
    admins: frozenset[str] = frozenset()
    broken: bool = False  # the file could not be read: closed

    def allows(self, user_id: str, departments: Iterable[str]) -> bool:
        if self.broken:
            return False
        if self.open or user_id in self.users or user_id in self.admins:
            return True
        return not self.departments.isdisjoint(str(d) for d in departments)


OPEN = Rule("", open=True)
CLOSED = Rule("")


def parse(text: str, source: str) -> Rule:
    """One ``_access.toml``'s rule; a file that does not parse or validate is a closed, broken rule (logged)."""
    try:
        spec = AccessFile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        log.error("knowledge base: %s is not valid TOML (%s): its folder is closed until it is fixed", source, exc)
        return Rule(source, broken=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        log.error("knowledge base: %s is not a valid access file (%s): its folder is closed until it is fixed",
                  source, problems)
        return Rule(source, broken=True)
    return Rule(source, open=spec.open, users=frozenset(spec.users),
                departments=frozenset(str(d) for d in spec.departments), admins=frozenset(spec.admins))


@dataclass(frozen=True)
class AccessPolicy:
    """Every folder's rule, found under the knowledge-base root."""

    rules: dict[str, Rule]  # folder (relative, POSIX, "" for the root) -> its own _access.toml's rule
    default: Rule = OPEN

    @classmethod
    def load(cls, root: Path, open_without_access_file: bool = True) -> AccessPolicy:
        """Read every ``_access.toml`` under `root` (hidden folders skipped, as the index skips them)."""
        rules: dict[str, Rule] = {}
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            if ACCESS_FILE not in files:
                continue
            rel = Path(folder).relative_to(root).as_posix()
            rel = "" if rel == "." else rel
            source = f"{rel}/{ACCESS_FILE}" if rel else ACCESS_FILE
            try:
                text = (Path(folder) / ACCESS_FILE).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                log.error("knowledge base: %s cannot be read (%s): its folder is closed until it is fixed", source,
                          type(exc).__name__)
                rules[rel] = Rule(source, broken=True)
                continue
            rules[rel] = parse(text, source)
        return cls(rules, OPEN if open_without_access_file else CLOSED)

    def rule_for(self, document: str) -> Rule:
        """The rule of a document (its path relative to the root): the nearest _access.toml up to the root."""
        folder = PurePosixPath(document).parent
        for candidate in (folder, *folder.parents):
            key = "" if str(candidate) == "." else candidate.as_posix()
            if key in self.rules:
                return self.rules[key]
        return self.default

    def readable(self, document: str, user_id: str, departments: Iterable[str]) -> bool:
        return self.rule_for(document).allows(user_id, departments)

    def open_to_all(self, document: str) -> bool:
        rule = self.rule_for(document)
        return rule.open and not rule.broken

    @property
    def restricts(self) -> bool:
        """False when every document is open to all (no file, open default): nothing to filter."""
        return bool(self.rules) or not self.default.open
