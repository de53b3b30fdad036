"""The paper's own numbers, for printing next to ours (never in their place).

``data/paper_tables.json`` holds the tables copied from the paper (1, 2, 3, 4, 5, 6, A7/A8, A9, A10, A11, A12,
A13, A14), keyed by table, then model (``resnet50``, ``vgg16_bn``, ``vit_b_16``, ``deit_b_16``; the medical
tables A10/A11 ``chest-xray/resnet50``...), then method as the paper prints it.

The paper spells one method three ways (ExPerturbation in most tables, "Experturbation" in Table A12,
"ExpPerturbation" in Table A14). ``SPELLINGS`` is the one place where a row name is normalised: ``paper_tables``
returns every row under the library's display name (``opticam_lib.methods.registry.display_name``), and
``row_method`` maps every row of every table to the library's method (or names the rows that are no method).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

from opticam_lib.errors import InputError
from opticam_lib.methods.registry import METHODS

#: the paper's spellings that differ from the library's display names (the data file keeps the paper's text)
SPELLINGS: dict[str, str] = {"Experturbation": "ExPerturbation", "ExpPerturbation": "ExPerturbation"}
#: rows of the transformers' tables whose methods live in ``opticam_lib.methods.attention`` (not in the registry;
#: ``python -m opticam_lib reproduce`` runs them by these names)
ATTENTION_ROWS: dict[str, str] = {"RawAtt": "rawatt", "Rollout": "rollout"}
#: rows that are no saliency method: Table 5's ground-truth box and its complement used as maps
#: tables the data file keeps inside another (Table A8's transformers are stored under A7): {table: (stored
#: under, its models)}
STORED_WITH: dict[str, tuple[str, tuple[str, ...]]] = {"A8": ("A7", ("vit_b_16", "deit_b_16"))}
NON_METHOD_ROWS: dict[str, str] = {"$S := B$": "box", "$S := I \\setminus B$": "complement"}
_VARIANT = re.compile(r"^(?P<name>.+?) \((?P<variant>[^()]*)\)$")  # "Opti-CAM (mask, range)" (Tables 6, A12)
_LAYER = re.compile(r"^features\.\d+$")  # Table A13's rows: Opti-CAM at one layer of VGG16


def canonical_row(name: str) -> str:
    """A row name as the library displays it: ``"ExpPerturbation"`` -> ``"ExPerturbation"``; a variant keeps its
    suffix (``"Experturbation (x)"`` -> ``"ExPerturbation (x)"``); any other name is returned unchanged."""
    m = _VARIANT.match(name)
    if m and m["name"] in SPELLINGS:
        return f"{SPELLINGS[m['name']]} ({m['variant']})"
    return SPELLINGS.get(name, name)


def row_method(name: str) -> str | None:
    """The library's method key of a row of the paper's tables, None for ``NON_METHOD_ROWS``.

    ``"Grad-CAM"`` -> ``"gradcam"``, ``"ExpPerturbation"`` -> ``"experturbation"``, ``"RawAtt"`` -> ``"rawatt"``,
    ``"Opti-CAM (diff, max)"`` -> ``"opticam"`` (a variant of an ablation table), ``"features.42"`` ->
    ``"opticam"`` (Table A13: Opti-CAM at that layer).

    Raises:
        InputError: a row that maps to nothing the library knows.
    """
    if name in NON_METHOD_ROWS:
        return None
    name = canonical_row(name)
    if name in ATTENTION_ROWS:
        return ATTENTION_ROWS[name]
    if _LAYER.match(name):
        return "opticam"
    by_display = {info.display: key for key, info in METHODS.items()}
    m = _VARIANT.match(name)
    base = m["name"] if m and name not in by_display else name
    if base in by_display:
        return by_display[base]
    raise InputError(
        f"the paper's row {name!r} maps to no method of the library; known: {', '.join(by_display)}"
    )


@lru_cache(maxsize=1)
def paper_tables() -> dict:
    """All tables: {table id: {"caption": str, "data": {model: {method: {column: value}}}}}, every method row
    under its canonical name (``canonical_row``)."""
    raw = json.loads(resources.files("opticam_lib").joinpath("data/paper_tables.json").read_text())
    out: dict = {}
    for key, table in raw.items():
        if key.startswith("_"):
            out[key] = table
            continue
        data = {
            model: {canonical_row(row): cols for row, cols in rows.items()}
            for model, rows in table["data"].items()
        }
        out[key] = {**table, "data": data}
    return out


def paper_table(table: str, model: str) -> dict[str, dict[str, float | None]]:
    """One model's part of one of the paper's tables, e.g. ``paper_table("1", "resnet50")["Opti-CAM"]["AG"]``."""
    tables = paper_tables()
    stored, models = STORED_WITH.get(table, (table, None))
    if stored not in tables or table.startswith("_"):
        known = ", ".join([k for k in tables if not k.startswith("_")] + list(STORED_WITH))
        raise InputError(f"unknown table {table!r}; the paper's tables here: {known}")
    data = tables[stored]["data"]
    if models is not None:
        data = {m: rows for m, rows in data.items() if m in models}
    if model not in data:
        raise InputError(f"table {table} has no {model!r} part; it has: {', '.join(data)}")
    return data[model]


def paper_value(table: str, model: str, method: str, column: str) -> float | None:
    """One number of the paper (None where the paper has a dash); ``method`` as the paper or the library spells
    it (``"ExpPerturbation"`` and ``"ExPerturbation"`` are the same row)."""
    rows = paper_table(table, model)
    method = canonical_row(method)
    if method not in rows:
        raise InputError(f"table {table} ({model}) has no row {method!r}; rows: {', '.join(rows)}")
    return rows[method].get(column)
