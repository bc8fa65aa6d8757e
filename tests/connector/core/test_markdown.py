from connector.core.markdown import for_dingtalk, split_markdown


def test_single_newlines_become_hard_breaks() -> None:
    assert for_dingtalk("line one\nline two") == "line one  \nline two"
    assert for_dingtalk("para one\n\npara two") == "para one\n\npara two"


def test_lists_headings_and_code_are_left_alone() -> None:
    text = "# Title\n- a\n- b\n```\nx = 1\ny = 2\n```"
    assert for_dingtalk(text) == text


def test_table_gets_a_blank_line_before_it_and_rows_untouched() -> None:
    out = for_dingtalk("Here:\n| a | b |\n| --- | --- |\n| 1 | 2 |")
    assert out == "Here:\n\n| a | b |\n| --- | --- |\n| 1 | 2 |"


def test_split_respects_limit_and_keeps_all_text() -> None:
    text = "\n\n".join(f"paragraph {i} " + "x" * 50 for i in range(40))
    chunks = split_markdown(text, 300)
    assert all(len(c) <= 300 for c in chunks)
    assert "".join(chunks).replace("\n", "") == text.replace("\n", "")


def test_split_closes_an_open_code_fence() -> None:
    text = "intro\n\n```\n" + "\n".join(f"line {i}" for i in range(100)) + "\n```"
    chunks = split_markdown(text, 200)
    assert all(c.count("```") % 2 == 0 for c in chunks)
