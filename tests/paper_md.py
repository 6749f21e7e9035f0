"""Reads tests/data/paper_tables.md (the paper's tables as printed; provenance in tests/data/README.md): its
Markdown tables cell by cell, and the numbers its prose states. Independent of eval/paper.py on purpose."""
from __future__ import annotations

import re
from pathlib import Path

PAPER_MD = Path(__file__).resolve().parent / "data" / "paper_tables.md"


def text() -> str:
    return PAPER_MD.read_text(encoding="utf-8")


def section(title_start: str) -> str:
    """The body of the `## <title>` section whose title starts with `title_start`."""
    parts = re.split(r"^## ", text(), flags=re.M)[1:]
    found = [p.split("\n", 1)[1] for p in parts if p.startswith(title_start)]
    if len(found) != 1:
        raise LookupError(f"{PAPER_MD}: expected one section '## {title_start}...', found {len(found)}")
    return found[0]


def prose(title_start: str) -> str:
    """The section's text outside its table, whitespace collapsed (sentences wrap across lines)."""
    lines = [ln for ln in section(title_start).splitlines() if not ln.startswith("|")]
    return " ".join(" ".join(lines).split())


def table(title_start: str) -> tuple[list[str], list[list[str]]]:
    """(header cells, rows of cells) of the section's pipe table; cells stripped, empty cells kept as ''."""
    lines = [ln for ln in section(title_start).splitlines() if ln.startswith("|")]
    header, sep, *rows = ([c.strip() for c in ln.split("|")[1:-1]] for ln in lines)
    assert all(set(c) <= set("-:") for c in sep), f"{PAPER_MD}: no separator row under {header}"
    assert all(len(r) == len(header) for r in rows), f"{PAPER_MD}: ragged table '{title_start}'"
    return header, rows


def number(cell: str) -> float | None:
    """A printed cell as a number: '—' and '' are None; marks (~ > †) dropped; the minus sign read as '-'."""
    if cell in ("—", ""):
        return None
    return float(cell.replace("\u2212", "-").strip("~>†"))


def pairs(s: str) -> dict[str, float]:
    """'d16 3.55, d20 2.95, d30-re 1.80' -> {'d16': 3.55, 'd20': 2.95, 'd30-re': 1.80}."""
    return {k: float(v) for k, v in re.findall(r"([A-Za-z]+\d*(?:-re)?) ([\d.]+)", s)}
