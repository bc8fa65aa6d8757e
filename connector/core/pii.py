"""Personal-data masking for log lines and audit records: mainland ID-card, mobile and bank-card numbers and
e-mail addresses are replaced by a masked form that support staff can still match against (`mask`).

The model still sees the original text (it runs on the premises); only what is written down is masked.

What is masked, and how (the non-masked characters are kept so that "the card ending 7890" stays findable):

| what | recognised when | masked form |
| --- | --- | --- |
| ID card (居民身份证号) | 18 characters, 17 digits and a digit or X, a valid ISO 7064 MOD 11-2 check character and a plausible birth date (1900-2099) | first 2 and last 4 kept: `11************123X` |
| bank card | 16-19 digits passing the Luhn check, contiguous or in groups of 4 separated by spaces or hyphens | first 4 and last 4 kept, separators kept: `6222 **** **** 7890`, `6222***********7890` |
| mobile | 11 digits `1[3-9]x xxxx xxxx`, contiguous, as 3-4-4 with spaces or hyphens, or after `+86`/`86` | first 3 and last 4 kept: `138****8000`, `+86138****8000` |
| e-mail | `local@domain.tld` | first character of the local part kept, domain kept: `z***@example.com` |

A number is only ever taken whole: digits (or ASCII letters, `_`) right before or after it mean it is part of
something longer (an order number, a part number) and it is left alone, as is any candidate whose check fails
(a 17-digit string, a wrong check character, a Luhn-failing 16-digit order number). An ID number is tried
before a bank card, a bank card before a mobile. `mask` is idempotent.

`install()` makes every log record of the process mask itself: the record factory returns records whose
formatted message (message and arguments) and exception and stack text are masked, whichever handler or
formatter writes them, also handlers added later (uvicorn's, the DingTalk SDK's). A copy of this module lives
in each of connector/core/ and inference/ (the connector imports nothing of inference and the other way round);
tests/test_pii_copies.py keeps the code below the docstrings equal.
"""

from __future__ import annotations

import logging
import re

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_EDGE_BEFORE = r"(?<![0-9A-Za-z_])"
_EDGE_AFTER = r"(?![0-9A-Za-z_])"
# Grouped forms first (a bank card 4-4-4-4[-1..3], an ID card 6-8-4, a mobile 3-4-4), then a contiguous run.
_NUMBER = re.compile(
    _EDGE_BEFORE + r"(?:"
    r"(?P<card>\d{4}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{4})(?P<tail>(?P=sep)\d{1,3})?"
    r"|(?P<idg>\d{6}(?P<isep>[ -])\d{8}(?P=isep)\d{3}[\dXx])"
    r"|(?P<mob>1[3-9]\d(?P<msep>[ -])\d{4}(?P=msep)\d{4})"
    r"|(?P<run>\d{11,19}[Xx]?)"
    r")" + _EDGE_AFTER
)
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                    r"\.[A-Za-z]{2,})")
_MOBILE = re.compile(r"1[3-9]\d{9}")


def id_card_valid(number: str) -> bool:
    """18 characters: 17 digits, the ISO 7064 MOD 11-2 check character (0-9 or X), a plausible birth date."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    if _ID_CHECK[total % 11] != number[17].upper():
        return False
    year, month, day = int(number[6:10]), int(number[10:12]), int(number[12:14])
    return 1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _keep(text: str, first: int, last: int) -> str:
    """Star every digit (and X) except the first `first` and last `last` of them; separators stay."""
    positions = [i for i, c in enumerate(text) if c.isdigit() or c in "Xx"]
    hidden = set(positions[first:len(positions) - last])
    return "".join("*" if i in hidden else c for i, c in enumerate(text))


def _bank(text: str) -> str | None:
    digits = re.sub(r"[ -]", "", text)
    if 16 <= len(digits) <= 19 and digits.isdigit() and luhn_valid(digits):
        return _keep(text, 4, 4)
    return None


def _number(match: re.Match[str]) -> str:
    text = match.group(0)
    if match.group("card"):
        masked = _bank(text)
        if masked is None and match.group("tail"):  # "6222 0212 3456 7890 12 pcs": the card without the tail
            head = _bank(match.group("card"))
            masked = head + match.group("tail") if head else None
        return masked or text
    if match.group("idg"):
        return _keep(text, 2, 4) if id_card_valid(re.sub(r"[ -]", "", text)) else text
    if match.group("mob"):
        return _keep(text, 3, 4)
    if id_card_valid(text):
        return _keep(text, 2, 4)
    if not text.isdigit():
        return text
    if 16 <= len(text) <= 19:
        return _bank(text) or text
    if len(text) == 11 and _MOBILE.fullmatch(text):
        return _keep(text, 3, 4)
    if len(text) == 13 and text.startswith("86") and _MOBILE.fullmatch(text[2:]):
        return _keep(text, 5, 4)
    return text


def _email(match: re.Match[str]) -> str:
    return f"{match.group(1)}***@{match.group(2)}"


def mask(text: str) -> str:
    """`text` with every ID-card, bank-card and mobile number and e-mail address masked (see the table above)."""
    if not text:
        return text
    if "@" in text:
        text = _EMAIL.sub(_email, text)
    if sum(c.isdigit() for c in text) < 11:
        return text
    return _NUMBER.sub(_number, text)


class MaskedLogRecord(logging.LogRecord):
    """A log record whose formatted message, exception text and stack text come out masked."""

    def getMessage(self) -> str:
        return mask(super().getMessage())

    @property
    def exc_text(self) -> str | None:
        return self.__dict__.get("_exc_text")

    @exc_text.setter
    def exc_text(self, value: str | None) -> None:
        self.__dict__["_exc_text"] = mask(value) if value else value

    @property
    def stack_info(self) -> str | None:
        return self.__dict__.get("_stack_info")

    @stack_info.setter
    def stack_info(self, value: str | None) -> None:
        self.__dict__["_stack_info"] = mask(value) if value else value


def install() -> None:
    """Mask every log record this process creates from now on (idempotent)."""
    logging.setLogRecordFactory(MaskedLogRecord)


def uninstall() -> None:
    """Back to plain records (tests)."""
    logging.setLogRecordFactory(logging.LogRecord)
