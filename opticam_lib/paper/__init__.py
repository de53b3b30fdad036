"""The paper's reproduction wing: the numbers the paper reports (``tables``), Table 2's transformer rows
(``transformers``), the reproduction of every table (``reproduce``) and the medical appendix (``medical``). Its
command line is ``python -m opticam_lib reproduce | medical`` (in ``opticam_lib/__main__.py``).
"""

from opticam_lib.paper.tables import paper_table, paper_tables, paper_value

__all__ = ["paper_table", "paper_tables", "paper_value"]
