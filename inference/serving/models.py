"""GET /v1/models: the one model this server serves, with its context window."""

from __future__ import annotations

import time

from ..engines.base import Engine
from ..protocol import ModelCard, ModelList
from ..settings import InferenceSettings


class ServingModels:
    def __init__(self, engine: Engine, settings: InferenceSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.created = int(time.time())

    def list(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.settings.model_name, created=self.created,
                                         max_model_len=self.engine.info().max_model_len)])
