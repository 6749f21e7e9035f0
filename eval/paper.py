"""The paper's numbers as printed: Tables 1-3, the release README's FIDs, and the scaling-law fits (eq. 11-16).

Source: Tian et al., "Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction",
NeurIPS 2024 (Tables 1-3, Sec. 5.2), and the README of the official release (FIDs of the released checkpoints).
This module is the repository's one copy of them: every `source = paper` row of a results table and the paper
column of the scaling fits are read from here. tests/test_paper.py compares it cell by cell with a verbatim copy
of the printed tables (tests/data/paper_tables.md).

How cells that are not plain numbers are held (and written to results/*.csv):
- "—" (not reported) is None, an empty cell in a CSV.
- A number with a mark keeps its number in the field and the cell as printed in `printed` ((field, cell) pairs):
  "~45" (approximate) is IS=45 with printed (("IS", "~45"),); ">45" (a lower bound) is time=45 with
  (("time", ">45"),); Table 2's "0.5†" (quoted from MaskGIT) is time=0.5 with (("time", "0.5†"),). The results
  tables write these, with their meaning, in a `note` column (`note()`).
- A "†" after a model name is part of the name: Table 1 has both "VQGAN†" (quoted from MaskGIT) and "VQGAN".
- The validation-data row is real images, not a model: its type is printed "—" (None here) and its #Para, #Step
  and Time cells are blank (not applicable), not "—"; `Table1Row.reference` marks it.
- #Para is kept as printed ("310M", "3.0B"): the paper rounds it, so a parameter count would be invented.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

# Meaning of the marks a printed number can carry (the paper's Table 1/2 legends).
MARKS = {"~": "approximate", ">": "lower bound", "†": "quoted by the paper from MaskGIT"}


def _printed(**cells: str) -> tuple[tuple[str, str], ...]:
    return tuple(cells.items())


def mark_of(cell: str) -> str:
    """The mark of a printed cell ("~45" -> "~", "0.5†" -> "†", "3.30" -> "")."""
    return "".join(m for m in MARKS if m in cell)


def number_in(cell: str) -> float:
    """The number of a printed cell without its mark ("~45" -> 45.0, ">24" -> 24.0, "0.5†" -> 0.5)."""
    return float(cell.strip("".join(MARKS)))


# ------------------------------------------------------------------------------------------------ Table 1
@dataclass(frozen=True)
class Table1Row:
    """One row of Table 1 (class-conditional ImageNet 256x256; Inception FID/IS/precision/recall, 50k samples).
    `time`: generation wall-clock relative to VAR-d30."""
    type: str | None              # GAN / Diff. / Mask. / AR / VAR; None: the validation-data row ("—")
    model: str
    FID: float
    IS: float | None
    Pre: float | None
    Rec: float | None
    params: str | None            # "#Para" as printed
    steps: int | None             # "#Step"
    time: float | None            # "Time"
    printed: tuple[tuple[str, str], ...] = ()   # (field, cell as printed) of the cells that carry a mark
    reference: bool = False       # the validation-data row: #Para/#Step/Time blank, not "—"


_T1 = Table1Row
TABLE1: tuple[Table1Row, ...] = (
    _T1("GAN", "BigGAN", 6.95, 224.5, 0.89, 0.38, "112M", 1, None),
    _T1("GAN", "GigaGAN", 3.45, 225.5, 0.84, 0.61, "569M", 1, None),
    _T1("GAN", "StyleGAN-XL", 2.30, 265.1, 0.78, 0.53, "166M", 1, 0.3),
    _T1("Diff.", "ADM", 10.94, 101.0, 0.69, 0.63, "554M", 250, 168),
    _T1("Diff.", "CDM", 4.88, 158.7, None, None, None, 8100, None),
    _T1("Diff.", "LDM-4-G", 3.60, 247.7, None, None, "400M", 250, None),
    _T1("Diff.", "DiT-L/2", 5.02, 167.2, 0.75, 0.57, "458M", 250, 31),
    _T1("Diff.", "DiT-XL/2", 2.27, 278.2, 0.83, 0.57, "675M", 250, 45),
    _T1("Diff.", "L-DiT-3B", 2.10, 304.4, 0.82, 0.60, "3.0B", 250, 45, _printed(time=">45")),
    _T1("Diff.", "L-DiT-7B", 2.28, 316.2, 0.83, 0.58, "7.0B", 250, 45, _printed(time=">45")),
    _T1("Mask.", "MaskGIT", 6.18, 182.1, 0.80, 0.51, "227M", 8, 0.5),
    _T1("Mask.", "RCG (cond.)", 3.49, 215.5, None, None, "502M", 20, 1.9),
    _T1("AR", "VQVAE-2†", 31.11, 45, 0.36, 0.57, "13.5B", 5120, None, _printed(IS="~45")),
    _T1("AR", "VQGAN†", 18.65, 80.4, 0.78, 0.26, "227M", 256, 19),
    _T1("AR", "VQGAN", 15.78, 74.3, None, None, "1.4B", 256, 24),
    _T1("AR", "VQGAN-re", 5.20, 280.3, None, None, "1.4B", 256, 24),
    _T1("AR", "ViTVQ", 4.17, 175.1, None, None, "1.7B", 1024, 24, _printed(time=">24")),
    _T1("AR", "ViTVQ-re", 3.04, 227.4, None, None, "1.7B", 1024, 24, _printed(time=">24")),
    _T1("AR", "RQTran.", 7.55, 134.0, None, None, "3.8B", 68, 21),
    _T1("AR", "RQTran.-re", 3.80, 323.7, None, None, "3.8B", 68, 21),
    _T1("VAR", "VAR-d16", 3.30, 274.4, 0.84, 0.51, "310M", 10, 0.4),
    _T1("VAR", "VAR-d20", 2.57, 302.6, 0.83, 0.56, "600M", 10, 0.5),
    _T1("VAR", "VAR-d24", 2.09, 312.9, 0.82, 0.59, "1.0B", 10, 0.6),
    _T1("VAR", "VAR-d30", 1.92, 323.1, 0.82, 0.59, "2.0B", 10, 1),
    _T1("VAR", "VAR-d30-re", 1.73, 350.2, 0.82, 0.60, "2.0B", 10, 1),
    _T1(None, "(validation data)", 1.78, 236.9, 0.75, 0.67, None, None, None, reference=True),
)
TABLE1_HEADERS = {"type": "type", "model": "model", "FID": "FID", "IS": "IS", "Pre": "Pre", "Rec": "Rec",
                  "params": "#Para", "steps": "#Step", "time": "Time"}


# ------------------------------------------------------------------------------------------------ Table 2
@dataclass(frozen=True)
class Table2Row:
    """One row of Table 2 (ImageNet 512x512; Inception FID/IS). `time` is relative to VAR-d36-s."""
    type: str
    model: str
    FID: float
    IS: float
    time: float | None
    printed: tuple[tuple[str, str], ...] = ()


TABLE2: tuple[Table2Row, ...] = (
    Table2Row("GAN", "BigGAN", 8.43, 177.9, None),
    Table2Row("Diff.", "ADM", 23.24, 101.0, None),
    Table2Row("Diff.", "DiT-XL/2", 3.04, 240.8, 81),
    Table2Row("Mask.", "MaskGIT", 7.32, 156.0, 0.5, _printed(time="0.5†")),
    Table2Row("AR", "VQGAN", 26.52, 66.8, 25, _printed(time="25†")),
    Table2Row("VAR", "VAR-d36-s (single shared AdaLN)", 2.63, 303.2, 1),
)
TABLE2_HEADERS = {"type": "type", "model": "model", "FID": "FID", "IS": "IS", "time": "Time"}


# ------------------------------------------------------------------------------------------------ Table 3
@dataclass(frozen=True)
class Table3Row:
    """One row of Table 3 (ablation from the AR baseline to VAR; ImageNet 256x256, Inception FID).
    `cost`: inference wall-clock relative to row 1; `delta`: the printed Δ, FID - FID(row 1) except in row 7."""
    number: int              # 1..7 in table order
    paper_number: int        # the paper's own numbering: 1, 2, 3, 4, 5, 5, 6 (two rows are "5")
    key: str                 # what params.yaml `rows.<name>.paper` calls this row
    description: str
    params: str              # "Para." as printed
    model: str
    adaln: bool
    top_k: int | None        # None: "no"
    cfg: float | None        # None: "no"
    cost: float
    FID: float
    delta: float
    note: str = ""

    @property
    def attn_norm(self) -> bool:
        """The rows are cumulative: attention normalisation is on from the "+Attn. Norm." row down."""
        return self.number >= 6


_T3 = Table3Row
TABLE3: tuple[Table3Row, ...] = (
    _T3(1, 1, "ar", "AR", "227M", "AR", False, None, None, 1, 18.65, 0.00),
    _T3(2, 2, "ar-to-var", "AR to VAR", "207M", "VAR-d16", False, None, None, 0.013, 5.22, -13.43),
    _T3(3, 3, "adaln", "+AdaLN", "310M", "VAR-d16", True, None, None, 0.016, 4.95, -13.70),
    _T3(4, 4, "top-k", "+Top-k", "310M", "VAR-d16", True, 600, None, 0.016, 4.64, -14.01),
    _T3(5, 5, "cfg", "+CFG", "310M", "VAR-d16", True, 600, 2.0, 0.022, 3.60, -15.05),
    _T3(6, 5, "attn-norm", "+Attn. Norm.", "310M", "VAR-d16", True, 600, 2.0, 0.022, 3.30, -15.35),
    _T3(7, 6, "scale-up", "+Scale up", "2.0B", "VAR-d30", True, 600, 2.0, 0.052, 1.73, -16.85,
        "FID of the rejection-sampled VAR-d30 (Table 1's VAR-d30-re); the printed Δ -16.85 is 1.80 - 18.65 (1.80: "
        "the release README's d30-re), not 1.73 - 18.65 = -16.92"),
)
TABLE3_BY_KEY = MappingProxyType({r.key: r for r in TABLE3})
TABLE3_HEADERS = {"number": "#", "description": "description", "params": "Para.", "model": "model",
                  "adaln": "AdaLN", "top_k": "top-k", "cfg": "CFG", "cost": "cost", "FID": "FID", "delta": "Δ"}
TABLE3_NOTE = ("The paper numbers its rows 1, 2, 3, 4, 5, 5, 6; `#` here counts 1-7 (rows 6-7 are its second "
               "\"5\" and its \"6\"). Row 7's FID 1.73 is the rejection-sampled VAR-d30 (Table 1's VAR-d30-re).")


# ------------------------------------------------------------------------------------------------ released weights
@dataclass(frozen=True)
class Release:
    """A released 256 px checkpoint: its file, its exact parameter count and the FIDs published for it."""
    name: str              # file name of the release, without `.pth`
    depth: int
    num_params: int        # parameters of the checkpoint (the release's state dict, loaded strictly)
    paper_model: str       # its Table 1 row
    readme_fid: float      # FID the release README lists (arXiv v1 numbers; 50k samples, reference batch)


# Parameter counts: the released state dicts (their manifests, shared/fixtures/manifest_var_d*.json
# `num_parameters`), equal to VAR(VAR_PRESETS[...]) (tests/test_checkpoints.py).
RELEASES: tuple[Release, ...] = (
    Release("var_d16", 16, 310_283_520, "VAR-d16", 3.55),
    Release("var_d20", 20, 600_917_136, "VAR-d20", 2.95),
    Release("var_d24", 24, 1_033_399_360, "VAR-d24", 2.33),
    Release("var_d30", 30, 2_010_020_356, "VAR-d30", 1.97),
)
# The README's rejection-sampled d30 (Table 1's VAR-d30-re is 1.73); our sampler does not rejection-sample.
README_FID_D30_RE = 1.80
# Independent re-scorings of the released checkpoints reported in later papers (one dict per paper).
RESCORED_FIDS: tuple[Mapping[str, float], ...] = (
    MappingProxyType({"var_d16": 3.42, "var_d20": 2.67, "var_d24": 2.39, "var_d30": 2.02}),
    MappingProxyType({"var_d30": 1.97}),
)
RESCORED_IS_D30 = 304.6    # the second re-scoring's IS of var_d30


def table1_row(model: str) -> Table1Row:
    for r in TABLE1:
        if r.model == model:
            return r
    raise KeyError(f"no Table 1 row {model!r}")


# ------------------------------------------------------------------------------------------------ scaling laws
# Sec. 5.2, eq. 11-16: X = N (parameters) or C (optimal training compute C_min, PFlops); target -> (beta, alpha) of
# target = (beta * X)^alpha. The paper's L_avg / Err_avg are our L_mean / err_mean. 12 models, d = 6..30.
SCALING_FITS = MappingProxyType({
    ("N", "L_last"): (2.0, -0.23), ("N", "L_mean"): (2.5, -0.20),
    ("N", "err_last"): (4.9e2, -0.016), ("N", "err_mean"): (6.5e2, -0.010),
    ("C", "L_last"): (2.2e-5, -0.13), ("C", "L_mean"): (1.5e-5, -0.16),
    ("C", "err_last"): (8.1e-2, -0.0067), ("C", "err_mean"): (4.4e-2, -0.011),
})
SCALING_PEARSON = MappingProxyType({"N": -0.998, "C": -0.99})   # "≈" in the paper


# ------------------------------------------------------------------------------------------------ printing
def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table1_cells(row: Table1Row) -> dict[str, str]:
    """The row's cells as the paper prints them (keys: Table1Row field names)."""
    cells = {"type": row.type or "—", "model": row.model, "FID": f"{row.FID:.2f}", "IS": _fmt(row.IS, ".1f"),
             "Pre": _fmt(row.Pre, ".2f"), "Rec": _fmt(row.Rec, ".2f"), "params": row.params or "—",
             "steps": _fmt(row.steps, "d"), "time": _fmt(row.time, "g")}
    if row.reference:
        cells.update(params="", steps="", time="")
    return {**cells, **dict(row.printed)}


def table2_cells(row: Table2Row) -> dict[str, str]:
    cells = {"type": row.type, "model": row.model, "FID": f"{row.FID:.2f}", "IS": f"{row.IS:.1f}",
             "time": _fmt(row.time, "g")}
    return {**cells, **dict(row.printed)}


def table3_cells(row: Table3Row) -> dict[str, str]:
    return {"number": str(row.number), "description": row.description, "params": row.params, "model": row.model,
            "adaln": "yes" if row.adaln else "no", "top_k": "no" if row.top_k is None else str(row.top_k),
            "cfg": "no" if row.cfg is None else f"{row.cfg:.1f}", "cost": f"{row.cost:g}", "FID": f"{row.FID:.2f}",
            "delta": f"{row.delta:.2f}".replace("-", "\u2212")}    # the paper prints a minus sign, not a hyphen


def note(row: Table1Row | Table2Row, headers: Mapping[str, str]) -> str:
    """The marks of a row in words, for a CSV `note` column ("" when it has none)."""
    parts = [f"{headers[col]} {cell} ({MARKS[mark_of(cell)]})" for col, cell in row.printed]
    if "†" in row.model:
        parts.append(f"†: {MARKS['†']}")
    return "; ".join(parts)


__all__ = ["MARKS", "Table1Row", "Table2Row", "Table3Row", "Release", "TABLE1", "TABLE2", "TABLE3", "TABLE3_BY_KEY",
           "TABLE1_HEADERS", "TABLE2_HEADERS", "TABLE3_HEADERS", "TABLE3_NOTE", "RELEASES", "README_FID_D30_RE",
           "RESCORED_FIDS", "RESCORED_IS_D30", "SCALING_FITS", "SCALING_PEARSON", "table1_row", "table1_cells",
           "table2_cells", "table3_cells", "note", "mark_of", "number_in"]
