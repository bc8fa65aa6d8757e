"""The handler and the skills chain, with fakes at the model and card seams."""

from __future__ import annotations

from collections.abc import AsyncIterator

from connector.core.handler import ChatHandler
from connector.core.store import MemoryContextStore
from connector.skills import Answer, Augment, Passage, Skill, SkillConfig, SkillContext, SkillServices
from connector.skills.registry import load_enabled
from connector.types import IncomingMessage, Turn


class FakeModel:
    def __init__(self, window: int = 2048, reply: str = "The answer.", chars_per_token: float = 4) -> None:
        self.window, self.reply, self.chars_per_token = window, reply, chars_per_token
        self.calls: list[tuple[list[dict[str, str]], int | None]] = []

    async def context_window(self) -> int:
        return self.window

    async def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return int(sum(len(m["content"]) for m in messages) / self.chars_per_token) + 4 * len(messages)

    async def stream_chat(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> AsyncIterator[str]:
        self.calls.append((messages, max_tokens))
        for word in self.reply.split(" "):
            yield word + " "

    async def health(self) -> dict:
        return {"health": "ok", "version": {"version": "1.2.3", "engine": "fake", "device": "cpu"}}

    async def model_id(self) -> str:
        return "fake-model"


class FakeReply:
    def __init__(self) -> None:
        self.final: str | None = None
        self.cancelled = False

    async def start(self) -> None: ...

    def update(self, text: str) -> None: ...

    async def finish(self, text: str) -> None:
        self.final = text

    async def fail(self, message: str, partial: str = "") -> None:
        self.final = "FAILED " + message


class FakeSink:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.replies: list[FakeReply] = []

    def stream_reply(self, message: IncomingMessage) -> FakeReply:
        self.replies.append(FakeReply())
        return self.replies[-1]

    async def send_text(self, message: IncomingMessage, markdown: str, title: str = "") -> None:
        self.texts.append(markdown)


def msg(text: str, n: int = 1) -> IncomingMessage:
    return IncomingMessage(platform="test", message_id=f"m{n}", delivery_id=f"d{n}", conversation_id="c1",
                           conversation_kind="dm", sender_id="u1", sender_name="u1", text=text, msgtype="text")


class Lookup(Skill):
    name = "lookup"
    commands = {"/lookup": "look something up"}

    async def handle(self, ctx: SkillContext):
        if ctx.text == "/lookup":
            return Answer("looked up")
        return Augment("Use the passages.", (Passage("Press HP-400: every 450 hours.", "handbook.pdf (p. 2)"),
                                             Passage("Form MX-12 records it.", "handbook.pdf (p. 2)"),
                                             Passage("Canteen opens at 7.", "canteen.txt")), max_tokens=99)


class Quoting(Skill):
    name = "quoting"

    async def handle(self, ctx: SkillContext):
        return Augment("", (Passage("Canteen opens at 7. Closes at 9.", "canteen.txt", quote="Canteen opens at 7."),
                            Passage("Soup on Mondays.", "menu.txt"),
                            Passage("Closes at 9.", "canteen.txt")))


class Broken(Skill):
    name = "broken"

    async def handle(self, ctx: SkillContext):
        raise RuntimeError("boom")


def make(skills: list[Skill], model: FakeModel | None = None, system_prompt: str = "") -> tuple:
    model = model or FakeModel()
    store, sink = MemoryContextStore(1800, 40), FakeSink()
    holder: list[Skill] = []
    services = SkillServices(model=model, skills=lambda: holder, version="9.9.9")
    holder += skills
    handler = ChatHandler(services=services, store=store, sink=sink, skills=skills, system_prompt=system_prompt,
                          max_tokens=64, context_window=None, group_context_per_sender=True)
    return handler, model, store, sink


async def test_builtin_commands_are_skills() -> None:
    handler, model, store, sink = make(load_enabled({}))
    await store.append("test:c1", [Turn("user", "hi"), Turn("assistant", "hello")])
    await handler(msg("/help"))
    assert "`/reset`（或 `/new`、`新会话`、`重置`）" in sink.texts[-1] and "`/test`" in sink.texts[-1]
    await handler(msg("/test"))
    assert "connector: 9.9.9" in sink.texts[-1] and "fake-model" in sink.texts[-1]
    assert "skills: help, files, reset, status" in sink.texts[-1]
    await handler(msg("重置"))
    assert "新的会话" in sink.texts[-1] and await store.load("test:c1") == []
    assert model.calls == []  # none of them reached the model


async def test_help_lists_enabled_skills_commands() -> None:
    handler, _, _, sink = make([*load_enabled({}), Lookup(SkillConfig(enabled=True))])
    await handler(msg("/help"))
    assert "`/lookup`：look something up" in sink.texts[-1]


async def test_augment_reaches_the_model_and_sources_are_cited_once() -> None:
    handler, model, store, sink = make([Broken(SkillConfig()), Lookup(SkillConfig())], system_prompt="Be brief.")
    await handler(msg("How often is the press recalibrated?"))
    messages, max_tokens = model.calls[-1]
    assert max_tokens == 99
    system = messages[0]["content"]
    assert system.startswith("Be brief.\n\nUse the passages.")
    assert "[1] (handbook.pdf (p. 2))\nPress HP-400: every 450 hours." in system and "[3] (canteen.txt)" in system
    assert messages[-1] == {"role": "user", "content": "How often is the press recalibrated?"}
    final = sink.replies[-1].final
    assert final.startswith("The answer.")
    assert final.endswith("\n\n**来源 / Sources**: `handbook.pdf (p. 2)`; `canteen.txt`")
    # history keeps the question and the answer, not the passages or the citation line
    assert [t.content.strip() for t in await store.load("test:c1")] == ["How often is the press recalibrated?",
                                                                        "The answer."]
    handler.skills = [Quoting(SkillConfig())]
    await handler(msg("When does the canteen open?", n=2))
    assert sink.replies[-1].final.endswith("**来源 / Sources**\n\n1. `canteen.txt`：“Canteen opens at 7.”\n"
                                           "2. `menu.txt`")


async def test_a_ready_answer_from_the_documents_is_shown_in_the_card_without_the_model() -> None:
    class Extractive(Skill):
        name = "extractive"

        async def handle(self, ctx: SkillContext):
            return Augment("", (Passage("第三条：住宿每晚不超过680元。", "travel.md"),), answer="第三条：住宿每晚不超过680元。")

    handler, model, store, sink = make([Extractive(SkillConfig())])
    await handler(msg("出差住宿标准是多少？"))
    assert model.calls == [] and sink.texts == []
    assert sink.replies[-1].final == "第三条：住宿每晚不超过680元。\n\n**来源 / Sources**: `travel.md`"
    assert [t.content for t in await store.load("test:c1")] == ["出差住宿标准是多少？", "第三条：住宿每晚不超过680元。"]


async def test_an_answering_skill_stops_the_chain() -> None:
    handler, model, _, sink = make([Lookup(SkillConfig())])
    await handler(msg("/lookup"))
    assert sink.texts == ["looked up"] and model.calls == []


async def test_passages_are_dropped_last_first_when_the_window_is_short() -> None:
    handler, model, store, sink = make([Lookup(SkillConfig())], model=FakeModel(window=99 + 64, chars_per_token=2))
    await store.append("test:c1", [Turn("user", "x" * 400), Turn("assistant", "y" * 400)])
    await handler(msg("Question?"))
    messages, _ = model.calls[-1]
    assert len(messages) == 2  # the old exchange went first
    assert "Canteen" not in messages[0]["content"] and "MX-12" not in messages[0]["content"]
    assert "Press HP-400" in messages[0]["content"]
    assert sink.replies[-1].final.endswith("Sources**: `handbook.pdf (p. 2)`")


class Restricted(Skill):
    """Left restricted documents out: a note for the card, the documents for the audit."""

    name = "restricted"

    async def handle(self, ctx: SkillContext):
        ctx.denied.append("finance/budget.md")
        return Augment(note="Some restricted documents were left out.")


async def test_a_skills_note_is_shown_after_the_sources_never_given_to_the_model() -> None:
    from connector.core.trail import opened

    handler, model, _, sink = make([Restricted(SkillConfig()), Quoting(SkillConfig())])
    with opened(msg("When does the canteen open?")) as trail:
        await handler(msg("When does the canteen open?"))
    final = sink.replies[-1].final
    assert final.endswith("Canteen opens at 7.”\n2. `menu.txt`\n\nSome restricted documents were left out.")
    assert all("restricted" not in m["content"] for m in model.calls[-1][0])
    assert trail.denied == ["finance/budget.md"]


async def test_history_sent_with_documents_is_limited_by_turns_with_documents() -> None:
    history = [Turn("user", "What should I check?"), Turn("assistant", "Check the gauge."),
               Turn("user", "And then?"), Turn("assistant", "Call 4471.")]
    for limit, kept in ((None, 4), (2, 2), (0, 0)):
        handler, model, store, _ = make([Lookup(SkillConfig())])
        handler.turns_with_documents = limit
        await store.append("test:c1", history)
        await handler(msg("出差住宿标准是多少？"))
        messages, _ = model.calls[-1]
        assert [m["content"] for m in messages[1:-1]] == [t.content for t in history[len(history) - kept:]]
        assert "Press HP-400" in messages[0]["content"] and messages[-1]["content"] == "出差住宿标准是多少？"
    handler, model, store, _ = make([])  # no documents: the whole history, whatever the limit
    handler.turns_with_documents = 0
    await store.append("test:c1", history)
    await handler(msg("Hello"))
    assert len(model.calls[-1][0]) == len(history) + 1
