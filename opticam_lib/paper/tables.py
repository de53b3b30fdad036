"""The paper's own numbers, for printing next to ours (never in their place).

``data/paper_tables.json`` holds the tables copied from the paper (1, 2, 3, 5, 6, A7/A8, A9, A10, A12, A13,
A14), keyed by table, then model (``resnet50``, ``vgg16_bn``, ``vit_b_16``, ``deit_b_16``), then method as the
paper names it (``"Opti-CAM"``, ``"Grad-CAM"``...).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from opticam_lib.errors import InputError


@lru_cache(maxsize=1)
def paper_tables() -> dict:
    """All tables: {table id: {"caption": str, "data": {model: {method: {column: value}}}}}."""
    return json.loads(resources.files("opticam_lib").joinpath("data/paper_tables.json").read_text())


def paper_table(table: str, model: str) -> dict[str, dict[str, float | None]]:
    """One model's part of one of the paper's tables, e.g. ``paper_table("1", "resnet50")["Opti-CAM"]["AG"]``."""
    tables = paper_tables()
    if table not in tables or table.startswith("_"):
        known = ", ".join(k for k in tables if not k.startswith("_"))
        raise InputError(f"unknown table {table!r}; the paper's tables here: {known}")
    data = tables[table]["data"]
    if model not in data:
        raise InputError(f"table {table} has no {model!r} part; it has: {', '.join(data)}")
    return data[model]


def paper_value(table: str, model: str, method: str, column: str) -> float | None:
    """One number of the paper (None where the paper has a dash)."""
    rows = paper_table(table, model)
    if method not in rows:
        raise InputError(f"table {table} ({model}) has no row {method!r}; rows: {', '.join(rows)}")
    return rows[method].get(column)
