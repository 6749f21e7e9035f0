"""The stage CLIs: `python -m pipeline.stages.<stage> --params params.yaml --<input> PATH ... --log LOG`.

Each is a thin program over the libraries (var/, eval/) and pipeline/common.py: parse paths and params, call the
library, write the outputs atomically. No stage imports another (tests/test_codedeps.py).
"""
