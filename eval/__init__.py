"""Evaluation: metrics (FID, IS, precision/recall, KID, density/coverage, bootstrap intervals), the evaluation guard,
feature extractors, the evaluation network, and the tables and figures. It imports var/, never pipeline/
(docs/architecture.md)."""
