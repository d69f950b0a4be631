"""Regenerate the table contracts of docs/architecture.md from ``risk_pipeline/contracts.py``.

    .venv/bin/python docs/update_contracts.py           # rewrite the section between the markers
    .venv/bin/python docs/update_contracts.py --check   # exit 1 if the section is out of date

Only the text between ``<!-- contracts:begin -->`` and ``<!-- contracts:end -->`` is replaced.
"""

from __future__ import annotations

import sys
from pathlib import Path

from risk_pipeline.contracts import contracts_markdown

ARCHITECTURE = Path(__file__).resolve().parent / "architecture.md"
BEGIN = "<!-- contracts:begin -->"
END = "<!-- contracts:end -->"


def generated_section(text: str) -> str:
    """The text between the markers (exactly one pair, in order); ValueError otherwise."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected one {BEGIN} followed by one {END}")
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def expected_section() -> str:
    """What belongs between the markers: the generated markdown with a blank line on each side."""
    return "\n\n" + contracts_markdown() + "\n"


def updated(text: str) -> str:
    """``text`` with the generated section replaced by the current contracts."""
    head, rest = text.split(BEGIN, 1)
    generated_section(text)  # validates the markers
    return head + BEGIN + expected_section() + END + rest.split(END, 1)[1]


def main(argv: list[str]) -> int:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    if "--check" in argv:
        if generated_section(text) == expected_section():
            return 0
        print(f"{ARCHITECTURE} is out of date: run .venv/bin/python docs/update_contracts.py", file=sys.stderr)
        return 1
    new = updated(text)
    if new != text:
        ARCHITECTURE.write_text(new, encoding="utf-8")
        print(f"updated {ARCHITECTURE}")
    else:
        print(f"{ARCHITECTURE} already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
