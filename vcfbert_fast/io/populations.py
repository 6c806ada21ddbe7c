"""The sample -> population (-> super population) table that labels a panel's samples.

Population labels are metadata (population AF, per-population metrics), never model input;
they come from a separate whitespace table, as 1000 Genomes ships them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, shown_names

_HEADER_NAMES = ("sample", "samples", "sample_id", "id", "iid")


def read_panel_file(
    path: str | os.PathLike,
    samples: list[str],
    population_column: int = 1,
    super_population_column: int | None = 2,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a whitespace table mapping sample -> population (-> super population).

    Column 0 is the sample name; ``population_column`` and ``super_population_column``
    (0-based; ``None`` or a column absent from the file: no super population) pick the
    labels, as in 1000 Genomes' ``integrated_call_samples_v3.20130502.ALL.panel``
    (``sample pop super_pop gender``). A first line whose first field is ``sample``
    (any case, optionally starting with ``#``) is a header. Samples of ``samples`` absent
    from the file raise InputError; extra rows are ignored. Returns object arrays [S].
    """
    p = Path(path)
    if not p.exists():
        raise InputError(path, "no such panel file", "check the path of the sample -> population table")
    table: dict[str, tuple[str, str | None]] = {}
    has_super = super_population_column is not None
    with open(p, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if not fields or fields[0].startswith("##"):
                continue
            if lineno == 1 and fields[0].lstrip("#").lower() in _HEADER_NAMES:
                continue
            if len(fields) <= population_column:
                raise InputError(
                    path,
                    f"{len(fields)} columns, population column {population_column} missing",
                    "use 'sample population super_population' columns or set population_column",
                    record=f"line {lineno}",
                )
            sup = None
            if has_super:
                if len(fields) > super_population_column:
                    sup = fields[super_population_column]
                else:
                    has_super = False
            if fields[0] in table and table[fields[0]][0] != fields[population_column]:
                raise InputError(
                    path,
                    f"sample {fields[0]} listed twice with different populations",
                    "keep one row per sample",
                    record=f"line {lineno}",
                )
            table[fields[0]] = (fields[population_column], sup)
    missing = [s for s in samples if s not in table]
    if missing:
        raise InputError(
            path,
            f"{len(missing)} VCF samples have no population: {shown_names(missing)}",
            "add a row 'sample population super_population' for each, or drop them with bcftools view -S",
        )
    pops = np.array([table[s][0] for s in samples], dtype=object)
    sups = None
    if has_super and all(table[s][1] is not None for s in samples):
        sups = np.array([table[s][1] for s in samples], dtype=object)
    return pops, sups
