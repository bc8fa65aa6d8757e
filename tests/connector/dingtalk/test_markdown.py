from connector.dingtalk.markdown import for_dingtalk, split_markdown


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


def code(lines: int, fence: str = "```python") -> str:
    """A fenced block of `lines` lines, opened with `fence` (info string included) and closed with its fence."""
    closer = fence.rstrip("abcdefghijklmnopqrstuvwxyz")
    return fence + "\n" + "\n".join(f"line_{i} = {i}" for i in range(lines)) + "\n" + closer


def test_split_closes_an_open_code_fence() -> None:
    text = "intro\n\n```\n" + "\n".join(f"line {i}" for i in range(100)) + "\n```"
    chunks = split_markdown(text, 200)
    assert all(c.count("```") % 2 == 0 for c in chunks)


def test_a_code_block_cut_in_two_is_closed_and_reopened_with_its_info_string() -> None:
    text = "intro\n\n" + code(60) + "\n\nafter the code"
    chunks = split_markdown(text, 200)
    assert len(chunks) > 2 and all(len(c) <= 200 for c in chunks)
    assert chunks[0] == "intro"
    for chunk in chunks[1:-1]:  # every part of the block renders as code: one whole block each
        assert chunk.startswith("```python\n") and chunk.endswith("\n```") and chunk.count("```") == 2
    assert chunks[-1].startswith("```python\n") and chunks[-1].endswith("\n```\n\nafter the code")
    # nothing lost, nothing but fences added
    body = [line for c in chunks for line in c.split("\n") if line and not line.startswith("```")]
    assert body == [line for line in text.split("\n") if line and not line.startswith("```")]


def test_a_cut_right_before_the_closing_fence_does_not_leave_an_empty_block() -> None:
    for limit in range(120, 260, 7):
        chunks = split_markdown(code(30) + "\n\nthe end", limit)
        assert all("```python\n```" not in c for c in chunks), limit
        assert all(c.count("```") % 2 == 0 for c in chunks), limit
        assert all(len(c) <= limit for c in chunks), limit


def test_longer_and_tilde_fences_are_reopened_as_they_were() -> None:
    for fence in ("````md", "~~~js"):
        inner = "```\nnot a fence here\n```\n"
        text = fence + "\n" + inner * 20 + fence.rstrip("mdjs")
        chunks = split_markdown(text, 150)
        assert len(chunks) > 1
        assert all(c.startswith(fence + "\n") for c in chunks)
        assert all(c.endswith("\n" + fence.rstrip("mdjs")) for c in chunks)


def test_text_without_code_is_split_as_before() -> None:
    paras = [f"p{i} " + "y" * 80 for i in range(20)]
    assert split_markdown("\n\n".join(paras), 250) == ["\n\n".join(paras[i:i + 2]) for i in range(0, 20, 2)]
