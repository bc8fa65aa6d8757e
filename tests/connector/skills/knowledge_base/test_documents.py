"""Reading txt / md / pdf / docx (the shipped samples and damaged files) and chunking them."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.skills.knowledge_base import SAMPLES
from connector.skills.knowledge_base.chunking import chunk_text, sentences
from connector.skills.knowledge_base.loaders import DocumentError, load


def test_samples_read_in_every_format() -> None:
    pdf = load(SAMPLES / "meridian-maintenance-handbook.pdf")
    assert [s.location for s in pdf] == ["p. 1", "p. 2"]
    assert "recalibrated every 450 operating hours" in " ".join(pdf[1].text.split())
    (docx,) = load(SAMPLES / "华东工厂差旅报销制度.docx")
    assert "出差住宿标准为每晚不超过680元" in docx.text
    assert "Passwords expire every 90 days" in load(SAMPLES / "it-helpdesk-faq.md")[0].text
    assert "早餐时间为7:00至8:30" in load(SAMPLES / "食堂与班车通知.txt")[0].text


def test_gbk_text_and_docx_tables(tmp_path: Path) -> None:
    gbk = tmp_path / "通知.txt"
    gbk.write_bytes("设备点检每周一次。".encode("gb18030"))
    assert load(gbk)[0].text == "设备点检每周一次。"

    import docx

    document = docx.Document()
    document.add_paragraph("Spare parts")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Part", "Stock"
    table.cell(1, 0).text, table.cell(1, 1).text = "Bearing 6204", "37"
    document.save(str(tmp_path / "parts.docx"))
    assert "Bearing 6204 | 37" in load(tmp_path / "parts.docx")[0].text


def test_damaged_and_unsupported_files_raise_document_error(tmp_path: Path) -> None:
    bad_pdf = tmp_path / "broken.pdf"
    bad_pdf.write_bytes(b"%PDF-1.4 this is not really a pdf")
    with pytest.raises(DocumentError, match="broken.pdf"):
        load(bad_pdf)
    bad_docx = tmp_path / "broken.docx"
    bad_docx.write_bytes(b"PK not a zip")
    with pytest.raises(DocumentError, match="broken.docx: cannot be read"):
        load(bad_docx)
    with pytest.raises(DocumentError, match="unsupported"):
        load(tmp_path / "x.xlsx")


def test_chunks_follow_sentences_and_respect_the_size() -> None:
    english = " ".join(f"Sentence number {n} is here." for n in range(60))
    chunks = chunk_text(english, size=200, overlap=1)
    assert len(chunks) > 5 and all(len(c) <= 200 for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert chunks[1].startswith(chunks[0].split(". ")[-1].rstrip(".") )  # one sentence repeated
    chinese = "".join(f"第{n}条：设备每周点检一次，记录在点检表中。" for n in range(40))
    chunks = chunk_text(chinese, size=120, overlap=0)
    assert all(len(c) <= 120 for c in chunks) and all(c.endswith("。") for c in chunks)
    assert "".join(chunks) == chinese
    assert chunk_text("x" * 950, size=400) == ["x" * 400, "x" * 400, "x" * 150]
    assert chunk_text("\n\n  \n") == []


def test_paragraphs_of_a_line_broken_chinese_text_are_joined_without_spaces() -> None:
    assert chunk_text("出差住宿标准为\n每晚不超过680元。") == ["出差住宿标准为每晚不超过680元。"]


def test_titles_are_sentences_of_their_own_and_never_quoted() -> None:
    """A title line (markdown, or a short unpunctuated line of a PDF / Word / text file) keeps its line break in
    the chunk, so the model sees it on its line and quotes skip it; wrapped lines of a sentence stay one."""
    md = "# IT helpdesk FAQ\n\n## Passwords\nPasswords expire every 90 days. Reset yours at the portal."
    chunk = chunk_text(md)[0]
    assert chunk.startswith("# IT helpdesk FAQ\n## Passwords\nPasswords expire every 90 days.")
    assert sentences(chunk)[:3] == ["# IT helpdesk FAQ", "## Passwords", "Passwords expire every 90 days."]
    assert sentences(chunk, titles=False)[0] == "Passwords expire every 90 days."
    two = chunk_text(md + "\n\n## Printers\nThe printers are PRN-2A and PRN-2B.")[0]
    assert sentences(two, titles=False) == ["Passwords expire every 90 days.", "Reset yours at the portal.",
                                            "The printers are PRN-2A and PRN-2B."]
    pdf = ("Section 4: Hydraulic press HP-400\nThe HP-400 hydraulic press must be recalibrated every 450 operating "
           "hours by two\ntechnicians of the day shift, who record it on form MX-12 and sign it.")
    assert sentences(chunk_text(pdf)[0], titles=False) == [
        "The HP-400 hydraulic press must be recalibrated every 450 operating hours by two technicians of the day "
        "shift, who record it on form MX-12 and sign it."]
    zh = "华东工厂差旅报销制度\n\n第三条：出差住宿标准为每晚不超过680元。"
    assert chunk_text(zh) == ["华东工厂差旅报销制度\n第三条：出差住宿标准为每晚不超过680元。"]
    assert sentences(chunk_text(zh)[0], titles=False) == ["第三条：出差住宿标准为每晚不超过680元。"]
