"""The connector's copy of the appliance's configuration-file reader (the connector never imports inference).

Kept apart on purpose, and kept equal by tests/test_config_file.py: the connector talks to the model
only over the OpenAI API and imports nothing of inference/, and the fixed top-level layout has no third
package for the two to share. Change both files together.

Where it is read from: $APPLIANCE_CONFIG, else ./appliance.toml, else /etc/appliance/appliance.toml
(the first that exists). Shared by both processes; neither imports the other's package for it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

SEARCH = (Path("appliance.toml"), Path("/etc/appliance/appliance.toml"))


def config_path() -> Path | None:
    explicit = os.environ.get("APPLIANCE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise ConfigError(f"APPLIANCE_CONFIG={explicit}: no such file")
        return path
    return next((p for p in SEARCH if p.exists()), None)


class ConfigError(Exception):
    """A configuration problem, worded for the operator: file, section and key."""


def read_section(section: str) -> tuple[dict[str, Any], Path | None]:
    path = config_path()
    if path is None:
        return {}, None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    return table, path


class TomlSection(PydanticBaseSettingsSource):
    """A pydantic-settings source reading one [section] of the appliance's TOML file."""

    def __init__(self, settings_cls: type[BaseSettings], section: str) -> None:
        super().__init__(settings_cls)
        self.values, self.path = read_section(section)
        self.section = section
        unknown = sorted(set(self.values) - set(settings_cls.model_fields))
        if unknown:
            raise ConfigError(f"{self.path}: unknown key(s) in [{section}]: {', '.join(unknown)}")

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class FileSettings(BaseSettings):
    """Settings from arguments, then environment variables, then the `toml_section` table of the file."""

    toml_section: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, TomlSection(settings_cls, cls.toml_section),
                file_secret_settings)


def explain(error: ValidationError, section: str, env_prefix: str) -> str:
    """A validation error as the operator needs it: which key, where it can be set, what is wrong."""
    path = config_path()
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item.get("loc", ())) or "?"
        where = f"[{section}] {key} in {path}" if path else "the environment"
        lines.append(f"  {key}: {item.get('msg')} (set in {where} or {env_prefix}{key.upper()})")
    return "invalid configuration:\n" + "\n".join(lines)
