"""Audit records from trails: every field the issue lists, the content modes, masking, the canonical form."""

from __future__ import annotations

import json

import pytest

from connector.audit.records import AuditRecord, Recorder, canonical, sha256
from connector.audit.writer import recorder_for
from connector.settings import ConnectorSettings

from .helpers import trail


def test_full_record_from_a_trail() -> None:
    done = trail()
    record = Recorder().record(done)
    assert record.ts == round(done.started_at, 3) and record.time.endswith("Z")
    assert (record.platform, record.conversation_id, record.conversation_kind) == ("dingtalk", "cid1", "dm")
    assert (record.sender_id, record.sender_name, record.message_id) == ("staff1", "Alice", "msg1")
    assert record.departments == ("Finance", "Board")
    assert (record.question, record.answer, record.content) == ("What is the budget?", "It is 5 million.", "full")
    assert (record.model, record.prompt_tokens, record.completion_tokens) == ("SmolLM2", 12, 7)
    assert record.latency_ms == 1250 and record.delivery == "card" and record.outcome == "answered"
    assert record.skill == "kb" and record.cited == (("finance/budget.md (p. 2)", 0.8125),)
    assert record.denied == ("hr/salaries.md",)
    done.answer = "changed later"  # the record is a copy, frozen
    assert record.answer == "It is 5 million."
    with pytest.raises(AttributeError):
        record.answer = "x"  # type: ignore[misc]


def test_fields_round_trip_and_canonical_form() -> None:
    record = Recorder().record(trail("预算是多少？", "五百万。"))
    fields = record.fields()
    assert fields["cited"] == [{"source": "finance/budget.md (p. 2)", "score": 0.8125}]
    assert "purged_through" not in fields  # anchor fields only on anchors
    assert AuditRecord.from_fields(json.loads(json.dumps(fields))) == record
    text = canonical(fields)
    assert "预算是多少" in text and ": " not in text and list(json.loads(text)) == sorted(fields)


def test_hash_mode_keeps_digests_only() -> None:
    record = Recorder(content="hash").record(trail())
    assert record.question == "sha256:" + sha256("What is the budget?")
    assert record.answer == "sha256:" + sha256("It is 5 million.")
    assert record.content == "hash" and record.completion_tokens == 7  # the rest is kept


def test_none_mode_keeps_no_text() -> None:
    record = Recorder(content="none").record(trail())
    assert record.question == record.answer == "" and record.content == "none"
    assert record.sender_id == "staff1" and record.cited  # who, when and what was cited still are


def test_masking_applies_to_the_texts_when_asked() -> None:
    def mask(text: str) -> str:  # a stand-in for connector.core.pii.mask (a seam, this is a unit test)
        return text.replace("110101199003071234", "1101**********1234")

    done = trail("My ID is 110101199003071234", "Noted: 110101199003071234")
    masked = Recorder(mask_pii=True, masker=mask).record(done)
    assert "110101199003071234" not in masked.question + masked.answer
    plain = Recorder(mask_pii=False, masker=mask).record(done)
    assert "110101199003071234" in plain.question
    hashed = Recorder(content="hash", mask_pii=True, masker=mask).record(done)  # the digest is of the original
    assert hashed.question == "sha256:" + sha256("My ID is 110101199003071234")


def test_recorder_from_settings() -> None:
    recorder = recorder_for(ConnectorSettings(audit_content="hash"))
    assert recorder.content == "hash" and not recorder.mask_pii


def test_refused_trail_has_no_answer() -> None:
    done = trail(answer="")
    done.refuse("rate_limited", "too_fast")
    record = Recorder().record(done)
    assert (record.outcome, record.reason, record.answer) == ("rate_limited", "too_fast", "")


def test_the_real_masker_from_settings() -> None:
    recorder = recorder_for(ConnectorSettings(audit_mask_pii=True))
    record = recorder.record(trail("My ID is 11010519491231002X, call 13812345678", "Noted, a.b@example.com"))
    assert record.question == "My ID is 11************002X, call 138****5678"
    assert record.answer == "Noted, a***@example.com"
