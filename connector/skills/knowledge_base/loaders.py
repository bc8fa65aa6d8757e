"""Text out of the administrator's documents: txt, md, pdf (pypdf), docx (python-docx)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SUPPORTED = (".txt", ".md", ".markdown", ".pdf", ".docx")


class DocumentError(Exception):
    """A document that cannot be read; it is skipped (and retried at the next scan)."""


@dataclass(frozen=True, slots=True)
class Section:
    text: str
    location: str = ""  # "p. 3" for a PDF page


def read_text_file(path: Path) -> str:
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):  # Chinese Windows editors still save GBK
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def load(path: Path) -> list[Section]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".txt", ".md", ".markdown"):
            return [Section(read_text_file(path))]
        if suffix == ".pdf":
            return _pdf(path)
        if suffix == ".docx":
            return _docx(path)
    except DocumentError:
        raise
    except Exception as exc:  # parsers raise many kinds on damaged files
        raise DocumentError(f"{path.name}: cannot be read ({type(exc).__name__}: {exc})") from exc
    raise DocumentError(f"{path.name}: unsupported type (supported: {', '.join(SUPPORTED)})")


def _pdf(path: Path) -> list[Section]:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    if reader.is_encrypted:
        try:
            reader.decrypt("")
        except Exception as exc:
            raise DocumentError(f"{path.name}: encrypted PDF") from exc
    sections = [Section(page.extract_text() or "", f"p. {number}") for number, page in enumerate(reader.pages, 1)]
    if not any(s.text.strip() for s in sections):
        raise DocumentError(f"{path.name}: no text layer (a scanned PDF needs OCR first)")
    return sections


def _docx(path: Path) -> list[Section]:
    import docx

    document = docx.Document(str(path))
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            cells = []
            for cell in row.cells:
                if cell.text not in cells:  # merged cells repeat
                    cells.append(cell.text)
            lines.append(" | ".join(cells))
    return [Section("\n\n".join(lines))]
