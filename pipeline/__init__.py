"""The pipeline layer: the stage registry (data), the plan and renderer behind the Snakefile and dvc.yaml, params
validation, code dependencies, and the stage CLIs in pipeline/stages/. It imports eval/ and var/, never the reverse
(docs/architecture.md)."""
