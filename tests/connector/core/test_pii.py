"""Personal-data masking: valid numbers masked, near misses (order and part numbers) left alone, and every log
line of a real logger masked, arguments and exception text included."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from connector.core import pii
from connector.core.pii import id_card_valid, luhn_valid, mask


def with_id_check(first17: str) -> str:
    total = sum(int(d) * w for d, w in zip(first17, (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2),
                                           strict=True))
    return first17 + "10X98765432"[total % 11]


def with_luhn(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def without_luhn(body: str) -> str:
    return next(body + d for d in "0123456789" if not luhn_valid(body + d))


ID = "11010519491231002X"  # the standard's own example
ID_DIGIT = with_id_check("44030619850612345")
CARD16 = with_luhn("622202123456789")
CARD19 = with_luhn("621700123456789012")
ORDER16 = without_luhn("202405180000123")  # a Luhn-failing 16-digit order number


def test_the_fixtures_are_what_they_claim() -> None:
    assert id_card_valid(ID) and id_card_valid(ID_DIGIT) and id_card_valid(ID.lower())
    assert luhn_valid(CARD16) and luhn_valid(CARD19) and luhn_valid("4111111111111111")
    assert not luhn_valid(ORDER16)


@pytest.mark.parametrize("text, expected", [
    (f"身份证号{ID}。", "身份证号11************002X。"),
    (f"id {ID_DIGIT}", f"id 44************{ID_DIGIT[-4:]}"),
    ("110105 19491231 002X", "11**** ******** 002X"),
    (f"卡号{CARD16}", f"卡号6222********{CARD16[-4:]}"),
    (f"card {CARD19}!", f"card 6217***********{CARD19[-4:]}!"),
    ("4111 1111 1111 1111", "4111 **** **** 1111"),
    ("4111-1111-1111-1111", "4111-****-****-1111"),
    ("4111 1111 1111 1111 12 件", "4111 **** **** 1111 12 件"),  # the card, then a count
    ("手机13800138000", "手机138****8000"),
    ("call +8613800138000", "call +86138****8000"),
    ("+86 138 0013 8000", "+86 138 **** 8000"),
    ("138-0013-8000", "138-****-8000"),
    ("mail zhang.san@corp.example.com now", "mail z***@corp.example.com now"),
    ("13800138000@139.com", "1***@139.com"),
])
def test_valid_numbers_are_masked(text: str, expected: str) -> None:
    assert mask(text) == expected
    assert mask(expected) == expected  # idempotent


@pytest.mark.parametrize("text", [
    ID[:17],  # 17 characters
    ID[:17] + "1",  # a failing check character
    with_id_check("11010519491331002")[:18],  # a check that passes but month 13
    ORDER16,  # a Luhn-failing 16-digit order number
    f"订单{ORDER16}已发货",
    f"9{ID}",  # digits embedded inside longer digit runs
    f"{CARD16}7",
    f"{CARD16}{CARD16}",
    "213800138000",
    "PN-X13800138000",  # letters right before: a part number
    f"SKU{CARD16}",
    f"{CARD16}A",
    "12800138000",  # not a mobile prefix
    "1380013800",  # 10 digits
    "1234 5678 9012 3456",  # grouped but Luhn-failing
    "version 1.2.3, 2024-05-18, 10:30, ¥12,345.67",
    "",
])
def test_near_misses_are_left_alone(text: str) -> None:
    assert mask(text) == text


def test_the_masked_forms_keep_no_full_number() -> None:
    text = f"{ID} {CARD16} {CARD19} 13800138000 a@b.cn {ORDER16}"
    masked = mask(text)
    for secret in (ID, CARD16, CARD19, "13800138000", "a@b.cn"):
        assert secret not in masked
    assert ORDER16 in masked


@pytest.fixture
def masked_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A real logger with its own stream handler, created after install() as uvicorn's are."""
    pii.install()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.pii")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        pii.uninstall()


def test_log_lines_are_masked_message_args_and_exception(masked_logger) -> None:
    logger, stream = masked_logger
    logger.info(f"literal {ID}")
    logger.debug("card %s, order %s", CARD16, ORDER16)
    logger.warning("%(who)s wrote %(what)s", {"who": "u1", "what": f"mail x@y.com {CARD19}"})
    try:
        raise ValueError(f"bad input {ID_DIGIT}")
    except ValueError:
        logger.exception("failed for %s", "13800138000")
    logger.info("stack", stack_info=True, extra={})
    out = stream.getvalue()
    for secret in (ID, CARD16, CARD19, ID_DIGIT, "13800138000", "x@y.com"):
        assert secret not in out, out
    assert ORDER16 in out and "ValueError: bad input 44****" in out and "Traceback" in out
    assert "6222********" in out and "138****8000" in out


def test_uninstalled_records_are_untouched() -> None:
    record = logging.getLogRecordFactory()("x", logging.INFO, __file__, 1, "card %s", (CARD16,), None)
    assert record.getMessage() == f"card {CARD16}"
