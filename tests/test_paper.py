"""eval/paper.py (the repository's one copy of the paper's numbers) against the tables as printed
(tests/data/paper_tables.md, a verbatim copy of the reference; see tests/data/README.md): every cell of every row,
the release README's FIDs, the Table 3 numbering note and the scaling-law fits."""
from __future__ import annotations

import re
from dataclasses import fields

import paper_md
import pytest

from eval import paper
from eval.released import FID_TOLERANCE


def test_the_copy_is_the_reference_file():
    # the committed copy is byte-identical to what tests/data/README.md records (sha256 of shared/PAPER_TABLES.md)
    import hashlib
    readme = (paper_md.PAPER_MD.parent / "README.md").read_text()
    digest = hashlib.sha256(paper_md.PAPER_MD.read_bytes()).hexdigest()
    assert f"sha256 `{digest}`" in readme


@pytest.mark.parametrize("title, rows, headers, cells, row_fields", [
    ("Table 1", paper.TABLE1, paper.TABLE1_HEADERS, paper.table1_cells,
     ("type", "model", "FID", "IS", "Pre", "Rec", "params", "steps", "time")),
    ("Table 2", paper.TABLE2, paper.TABLE2_HEADERS, paper.table2_cells, ("type", "model", "FID", "IS", "time")),
    ("Table 3", paper.TABLE3, paper.TABLE3_HEADERS, paper.table3_cells,
     ("number", "description", "params", "model", "adaln", "top_k", "cfg", "cost", "FID", "delta")),
])
def test_every_cell_is_as_printed(title, rows, headers, cells, row_fields):
    header, printed_rows = paper_md.table(title)
    assert header == [headers[f] for f in row_fields]
    assert len(rows) == len(printed_rows)
    for row, printed in zip(rows, printed_rows):
        ours = cells(row)
        assert [ours[f] for f in row_fields] == printed, f"{title}: {row}"


@pytest.mark.parametrize("title, rows, numeric", [
    ("Table 1", paper.TABLE1, ("FID", "IS", "Pre", "Rec", "steps", "time")),
    ("Table 2", paper.TABLE2, ("FID", "IS", "time")),
    ("Table 3", paper.TABLE3, ("number", "cost", "FID", "delta")),
])
def test_numbers_are_the_printed_numbers(title, rows, numeric):
    """The numeric fields themselves (what the CSVs carry), read independently of the printing code: a printed
    "~45" / ">45" / "0.5†" holds 45 / 45 / 0.5, "—" and blank hold None."""
    header, printed_rows = paper_md.table(title)
    names = {"Table 1": paper.TABLE1_HEADERS, "Table 2": paper.TABLE2_HEADERS, "Table 3": paper.TABLE3_HEADERS}[title]
    for row, printed in zip(rows, printed_rows):
        for f in numeric:
            assert getattr(row, f) == paper_md.number(printed[header.index(names[f])]), f"{title}: {row.model} {f}"


def test_marked_cells_and_their_notes():
    marked = {r.model: dict(r.printed) for r in (*paper.TABLE1, *paper.TABLE2) if r.printed}
    assert marked == {"L-DiT-3B": {"time": ">45"}, "L-DiT-7B": {"time": ">45"}, "VQVAE-2†": {"IS": "~45"},
                      "ViTVQ": {"time": ">24"}, "ViTVQ-re": {"time": ">24"}, "MaskGIT": {"time": "0.5†"},
                      "VQGAN": {"time": "25†"}}
    vqvae2 = paper.table1_row("VQVAE-2†")
    assert paper.note(vqvae2, paper.TABLE1_HEADERS) == "IS ~45 (approximate); †: quoted by the paper from MaskGIT"
    assert paper.note(paper.table1_row("L-DiT-7B"), paper.TABLE1_HEADERS) == "Time >45 (lower bound)"
    assert paper.note(paper.TABLE2[3], paper.TABLE2_HEADERS) == "Time 0.5† (quoted by the paper from MaskGIT)"
    assert paper.note(paper.table1_row("VAR-d16"), paper.TABLE1_HEADERS) == ""
    # exactly one blank-not-dash row: the validation data
    assert [r.model for r in paper.TABLE1 if r.reference] == ["(validation data)"]


def test_table3_numbering_delta_and_keys():
    s = paper_md.prose("Table 3")
    numbering = re.search(r"The paper numbers its rows ([\d, ]+);", s).group(1)
    assert [r.paper_number for r in paper.TABLE3] == [int(n) for n in numbering.split(", ")]
    assert [r.number for r in paper.TABLE3] == list(range(1, 8))
    assert "1.73" in s and "rejection-sampled d30" in s
    assert paper.TABLE3[-1].FID == paper.table1_row("VAR-d30-re").FID and "rejection-sampled" in paper.TABLE3[-1].note
    ar_fid = paper.TABLE3[0].FID
    for r in paper.TABLE3[:-1]:    # Δ as printed is FID - FID(row 1) ...
        assert r.delta == round(r.FID - ar_fid, 2)
    # ... except in row 7, whose printed Δ belongs to the README's d30-re FID, not to its printed 1.73
    assert paper.TABLE3[-1].delta == round(paper.README_FID_D30_RE - ar_fid, 2) != round(1.73 - ar_fid, 2)
    assert "-16.92" in paper.TABLE3[-1].note
    assert [r.attn_norm for r in paper.TABLE3] == [False] * 5 + [True] * 2
    # the params.yaml `rows.<name>.paper` keys validated by pipeline/rows.py are these rows' keys
    from pipeline.rows import PAPER_ROWS
    assert PAPER_ROWS == ("ar", "ar-to-var", "adaln", "top-k", "cfg", "attn-norm", "scale-up")
    assert [r.description for r in paper.TABLE3[1:]] == ["AR to VAR", "+AdaLN", "+Top-k", "+CFG", "+Attn. Norm.",
                                                           "+Scale up"]


def test_release_readme_rescorings_and_tolerance():
    s = paper_md.prose("Table 1")
    readme = paper_md.pairs(re.search(r"\(arXiv v1\): (.*?)\. ", s).group(1))
    assert readme == {f"d{r.depth}": r.readme_fid for r in paper.RELEASES} | {"d30-re": paper.README_FID_D30_RE}
    one, other = re.search(r"later papers: (.*?) \(one paper\); (.*?) \(another\)", s).groups()
    assert [{f"d{k[len('var_d'):]}": v for k, v in d.items()} for d in paper.RESCORED_FIDS] == \
        [paper_md.pairs(one), {"d30": paper_md.pairs(other)["d30"]}]
    assert paper_md.pairs(other)["IS"] == paper.RESCORED_IS_D30
    lo, hi = re.search(r"spread \(~([\d.]+)\u2013([\d.]+) FID\)", s).groups()
    assert (float(lo), float(hi)) == (0.1, FID_TOLERANCE)
    # each release points at its Table 1 row, and its depth and file name agree
    for r in paper.RELEASES:
        assert r.paper_model == f"VAR-d{r.depth}" and r.name == f"var_d{r.depth}"
        assert paper.table1_row(r.paper_model).type == "VAR"


def test_scaling_fits():
    s = " ".join(paper_md.section("Scaling laws").split())
    found = re.findall(r"(L|Err)_(last|avg) = \(([\d.e+-]+)·(N|C)\)\^(-[\d.]+)", s)
    assert len(found) == 8
    fits = {(x, f"{'L' if q == 'L' else 'err'}_{'mean' if w == 'avg' else 'last'}"): (float(b), float(a))
            for q, w, b, x, a in found}
    assert fits == dict(paper.SCALING_FITS)
    pearson = [float(v.replace("\u2212", "-")) for v in re.findall(r"Pearson ≈ (\u2212\d+\.\d+)", s)]
    assert pearson == [paper.SCALING_PEARSON["N"], paper.SCALING_PEARSON["C"]]
    from eval.scaling import fit_table
    rows = fit_table([{"depth": d, "N": 1e9 * d, "C": 1e15 * d, "fraction": 1.0, "L_last": 1 / d, "L_mean": 1 / d,
                       "err_last": 1 / d, "err_mean": 1 / d} for d in (1, 2, 4)])
    assert {(r["x"], r["target"]): (r["paper_beta"], r["paper_alpha"]) for r in rows} == fits


def test_rows_are_frozen_and_typed():
    assert {f.name for f in fields(paper.Table1Row)} >= {"type", "model", "FID", "printed", "reference"}
    with pytest.raises(Exception):
        paper.TABLE1[0].FID = 1.0        # frozen: the paper's numbers cannot be edited in place
    with pytest.raises(TypeError):
        paper.TABLE1[8].printed["time"] = "45"
