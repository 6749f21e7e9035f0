"""Stage `table2`: `results/table2.{md,csv}`, the higher-resolution rows (`table2.rows`, setting `hires`: twice the
base resolution with shared AdaLN; for ImageNet the 512 px var-d36-s recipe) beside the paper's Table 2 (512 px)."""
from __future__ import annotations

from pipeline.common import run_stage
from pipeline.table3 import main, parser


def cli(argv=None):
    ap = parser("table2")
    ap.add_argument("--valdata", required=True, help="input: validation-data score JSON of the hires setting")
    run_stage("table2", main, ap, argv)


if __name__ == "__main__":
    cli()
