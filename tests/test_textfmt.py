"""Markdown splitting and fence balancing."""

from __future__ import annotations

import random
import re

from bridge.answers.markdown import (
    balance_fences,
    normalise_markdown,
    plain_text,
    split_markdown,
    status_line,
)

FENCE = re.compile(r"^ {0,3}(```|~~~)", re.M)


def _unsplit(parts: list[str]) -> str:
    text = parts[0]
    for part in parts[1:]:
        match = re.match(r"( {0,3}(`{3,}|~{3,})[^\n]*)\n", part)
        if match and text.endswith(match.group(2)):
            text = text[: -len(match.group(2))]  # the closing fence the splitter added
            part = part[len(match.group(0)):]
        text += part
    return text


def test_plain_text_splits_with_no_character_lost():
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta\n", "epsilon.", "\n\n", "ζήτα", "🙂"]
    for _ in range(50):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(50, 3000)))
        limit = rng.randint(40, 900)
        parts = split_markdown(text, limit)
        assert all(len(p) <= limit for p in parts)
        assert "".join(parts) == text


def test_fenced_code_is_closed_and_reopened_across_parts():
    code = "```sql\n" + "\n".join(f"SELECT {i} FROM t;" for i in range(200)) + "\n```\n"
    text = "Run this:\n\n" + code + "\nThen done."
    parts = split_markdown(text, 500)
    assert len(parts) > 5
    for part in parts:
        assert len(part) <= 500
        assert len(FENCE.findall(part)) % 2 == 0
    assert all(p.startswith("```sql\n") for p in parts[2:-1])
    assert _unsplit(parts) == text


def test_unbroken_text_is_cut_hard_but_kept():
    text = "x" * 10_000
    parts = split_markdown(text, 1000)
    assert "".join(parts) == text and max(map(len, parts)) <= 1000


def test_balance_fences_only_touches_open_blocks():
    assert balance_fences("a\n```py\nprint(1)") == "a\n```py\nprint(1)\n```"
    assert balance_fences("a\n```\nx\n```\n") == "a\n```\nx\n```\n"


def test_status_line_and_link_normalisation():
    assert status_line("✓ Looking up John\n→ Finding manager") == "Finding manager"
    assert status_line("") is None
    assert normalise_markdown("see <https://x.io/a|the doc>") == "see [the doc](https://x.io/a)"


def test_moveworks_markup_becomes_commonmark_outside_code():
    assert normalise_markdown("<https://x.io/a|the [v2] doc> and <https://x.io/b>") == (
        "[the \\[v2\\] doc](https://x.io/a) and [https://x.io/b](https://x.io/b)"
    )
    assert normalise_markdown("<mailto:it@example.com|IT> or <mailto:hr@example.com>") == (
        "[IT](mailto:it@example.com) or [hr@example.com](mailto:hr@example.com)"
    )
    assert normalise_markdown("<https://en.wikipedia.org/wiki/401(k)|401(k)>") == (
        "[401(k)](https://en.wikipedia.org/wiki/401%28k%29)"
    )
    assert normalise_markdown(":tada: :+1::skin-tone-3: :-1: :made_up: 10:30:45 a:smile:") == (
        "🎉 👍 👎 :made_up: 10:30:45 a:smile:"
    )
    assert normalise_markdown("[kept](https://x.io/:smile:) <@U123> <#C1|general>") == (
        "[kept](https://x.io/:smile:) <@U123> <#C1|general>"
    )
    code = "`<https://x.io|x> :smile:`\n```\n<https://x.io|x> :smile:\n```\n:smile:"
    assert normalise_markdown(code) == "`<https://x.io|x> :smile:`\n```\n<https://x.io|x> :smile:\n```\n😄"
    stray = "a ` b <https://x.io|y>\n\nc ` :smile:"  # a code span never crosses a paragraph break
    assert normalise_markdown(stray) == "a ` b [y](https://x.io)\n\nc ` 😄"
    partial = "Use :key:\n```sh\n<https://x.io|x> :smile:"  # an unfinished fence stays code
    assert normalise_markdown(partial) == "Use 🔑\n```sh\n<https://x.io|x> :smile:"


def test_plain_text_of_a_markdown_title():
    assert plain_text("**<https://f.example.com/sp?id=1&x=2|401(k) Plan Enrollment>**") == (
        "401(k) Plan Enrollment", "https://f.example.com/sp?id=1&x=2"
    )
    assert plain_text("  *How to* `reset`\n your _password_ :key: ") == ("How to reset your password 🔑", None)
    assert plain_text("snake_case_name") == ("snake_case_name", None)
