"""Write the knowledge-base sample documents shipped in connector/skills/knowledge_base/samples/.

The PDF and DOCX files are committed; this script is how they were made (fpdf2 and python-docx), so they
can be regenerated. The facts in them are invented: a model cannot know them without reading the documents.
"""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "connector" / "skills" / "knowledge_base" / "samples"

HANDBOOK = [
    ("Meridian Precision Parts - Maintenance Handbook", [
        "This handbook is for the maintenance team of the Meridian Precision Parts plant in Ravenfield. "
        "It covers scheduled maintenance, lock-out procedures and the logs that must be kept.",
        "Every machine has an owner on the day shift. Faults found on the night shift are written in the "
        "shift log and handed over at 06:30.",
    ]),
    ("Section 4: Hydraulic press HP-400", [
        "The HP-400 hydraulic press must be recalibrated every 450 operating hours. Recalibration is done by "
        "two technicians and recorded on form MX-12.",
        "If the pressure gauge reads more than 5 percent off the reference, stop the press and call the "
        "maintenance supervisor on extension 4471.",
    ]),
]

TRAVEL = [
    "华东工厂差旅报销制度",
    "第一条：本制度适用于华东工厂全体员工的国内出差。",
    "第二条：出差需提前在 OA 系统提交申请，经部门经理批准后方可预订交通和住宿。",
    "第三条：出差住宿标准为每晚不超过680元，北京、上海、深圳可上浮20%。",
    "第四条：交通费凭票据实报销，高铁限二等座，飞机限经济舱。",
    "第五条：报销单须在出差结束后10个工作日内提交财务部。",
]

FAQ = """# IT helpdesk FAQ

## Passwords
Passwords expire every 90 days. Reset yours at the self-service portal or call the helpdesk.

## Printers
The printers on the second floor are named PRN-2A and PRN-2B. Scans are sent to your mailbox.

## VPN
Staff working from home connect with the company VPN client. Do not share your token with anyone.
"""

CANTEEN = """食堂与班车通知

一、职工食堂早餐时间为7:00至8:30，午餐时间为11:30至13:00。
二、周末食堂只供应午餐。
三、厂区班车每天早上7:10从地铁站出发，下午17:40从厂区返回。
"""


def main(argv: list[str] | None = None) -> None:
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Needs the `samples` extra (fpdf2, "
                            "python-docx).").parse_args(argv)
    from docx import Document
    from fpdf import FPDF

    OUT.mkdir(parents=True, exist_ok=True)
    pdf = FPDF()
    pdf.set_creation_date(__import__("datetime").datetime(2026, 11, 1))  # reproducible bytes
    for title, paragraphs in HANDBOOK:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 10, title)
        pdf.set_font("Helvetica", size=12)
        for paragraph in paragraphs:
            pdf.ln(4)
            pdf.multi_cell(0, 7, paragraph)
    pdf.output(str(OUT / "meridian-maintenance-handbook.pdf"))

    document = Document()
    document.core_properties.created = __import__("datetime").datetime(2026, 11, 1)
    document.add_heading(TRAVEL[0], level=1)
    for line in TRAVEL[1:]:
        document.add_paragraph(line)
    document.save(str(OUT / "华东工厂差旅报销制度.docx"))

    (OUT / "it-helpdesk-faq.md").write_text(FAQ, encoding="utf-8")
    (OUT / "食堂与班车通知.txt").write_text(CANTEEN, encoding="utf-8")
    print(f"samples written to {OUT}")


if __name__ == "__main__":
    main()
