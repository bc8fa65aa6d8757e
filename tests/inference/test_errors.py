"""The error tables: the most specific class wins whatever the row order; every engine error becomes an
HTTP error in the OpenAI envelope; route advice is serving's, never the engine's."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from inference import errors
from inference.engines import errors as engine_errors
from inference.errors import (ERROR_TABLE, ContextLengthExceeded, InferenceError, InvalidRequest, ModelNotFound,
                              NotFound, error_body, most_specific, status_and_type)
from inference.serving.errors import ENGINE_ERRORS, http_error

from .fakes import FakeEngine, started_app

ENGINES = Path(errors.__file__).parent / "engines"


def _subclasses(cls: type) -> list[type]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def _instance(cls: type[engine_errors.EngineError]) -> engine_errors.EngineError:
    try:
        return cls()  # type: ignore[call-arg]
    except TypeError:
        return cls(f"{cls.__name__} happened")


def test_a_subclass_listed_after_its_parent_still_wins() -> None:
    class Parent(Exception):
        pass

    class Child(Parent):
        pass

    class GrandChild(Child):
        pass

    table = {Parent: "parent", Child: "child"}
    assert most_specific(table, Child()) == "child"
    assert most_specific(table, GrandChild()) == "child"  # nearest listed ancestor
    assert most_specific(table, Parent()) == "parent"
    assert most_specific(table, ValueError()) is None


def test_http_table_does_not_depend_on_row_order(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = list(ERROR_TABLE.items())
    assert rows.index((ContextLengthExceeded, ERROR_TABLE[ContextLengthExceeded])) > rows.index(
        (InvalidRequest, ERROR_TABLE[InvalidRequest]))  # a subclass after its parent, on purpose
    before = {cls: status_and_type(cls("x")) for cls in ERROR_TABLE if cls not in (errors.Overloaded, errors.NotReady)}
    monkeypatch.setattr(errors, "ERROR_TABLE", dict(reversed(rows)))
    after = {cls: status_and_type(cls("x")) for cls in before}
    assert before == after
    assert status_and_type(ModelNotFound("x")) == (404, "invalid_request_error")
    assert status_and_type(NotFound("x")) == (404, "not_found_error")


@pytest.mark.parametrize("cls", _subclasses(engine_errors.EngineError), ids=lambda c: c.__name__)
def test_every_engine_error_maps_to_a_status_and_an_openai_envelope(cls: type) -> None:
    assert cls in ENGINE_ERRORS, f"{cls.__name__} has no row of its own in serving/errors.py"
    error = http_error(_instance(cls))
    assert isinstance(error, InferenceError)
    status, kind = status_and_type(error)
    assert 400 <= status < 600 and kind
    body = error_body(error)
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
    json.dumps(body)


def test_request_errors_keep_their_param_and_are_400() -> None:
    error = http_error(engine_errors.RequestInvalidForModel("token 99 is not in the vocabulary", param="prompt"))
    assert status_and_type(error)[0] == 400 and error.param == "prompt"
    assert http_error(engine_errors.PromptEmpty()).param == "prompt"
    assert status_and_type(http_error(engine_errors.GenerationFailed("boom"))) == (500, "server_error")


def test_chat_without_template_gets_the_route_advice_from_serving() -> None:
    raw = engine_errors.ModelHasNoChatTemplate()
    assert "/v1" not in raw.message  # the engine names no route
    error = http_error(raw)
    assert status_and_type(error) == (400, "invalid_request_error")
    assert error.param == "messages" and "use /v1/completions" in error.message


def test_engines_import_no_http_errors() -> None:
    for path in ENGINES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                assert module not in ("..errors", "inference.errors"), f"{path.name} imports the HTTP errors"
                assert not module.startswith(("..serving", "inference.serving")), path.name


class _NoTemplate(FakeEngine):
    def tokenize_chat(self, turns, add_generation_prompt: bool = True) -> list[int]:
        raise engine_errors.ModelHasNoChatTemplate()


async def test_chat_and_tokenize_without_template_are_400_with_advice() -> None:
    async with started_app(_NoTemplate()) as (_, client):
        for path in ("/v1/chat/completions", "/tokenize"):
            r = await client.post(path, json={"messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["param"] == "messages" and "use /v1/completions" in error["message"]
        assert (await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 1})).status_code == 200
