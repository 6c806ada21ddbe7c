"""Imputation, one step per module; ``vcfbert_fast.impute`` is the subcommand that runs them in order.

| module | step |
|---|---|
| ``prephase.py`` | unphased heterozygotes; pre-phasing with Beagle |
| ``calls.py`` | the target's calls laid over the panel's sites (:class:`TargetCalls`), and the final calls
  (typed sites keep the input, imputed sites take the model's dosages) |
| ``model_io.py`` | the checkpoint -> model, frequencies, windows, population AF of the targets (the vote's tables) |
| ``inference.py`` | windows x target batches -> haplotype ALT dosages (retrieval, references, forward; or the donors' vote) |
| ``chunks.py`` | ``--region`` / ``--chunk-mb``: cores with buffers, and the run's inputs cut to one chunk |
| ``parts.py`` | a chunked, resumed or sharded run's chunk outputs: written, resumed, joined |
| ``qc.py`` | allele QC: every target record recoded or excluded at a panel site's position, ``OUT.qc.tsv`` |
| ``output.py`` | target records passed through, the imputed VCF, the QC file |
"""

from .calls import FinalCalls, TargetCalls, final_calls
from .inference import infer_dosages, vote_dosages
from .model_io import ModelTables, load_model, model_tables, vote_tables
from .output import passthrough_records, write_output
from .prephase import BEAGLE_JAR, phase_target, prephase_with_beagle, unphased_hets
from .qc import qc_line, qc_path

__all__ = [
    "BEAGLE_JAR",
    "FinalCalls",
    "ModelTables",
    "TargetCalls",
    "final_calls",
    "infer_dosages",
    "load_model",
    "model_tables",
    "passthrough_records",
    "phase_target",
    "prephase_with_beagle",
    "qc_line",
    "qc_path",
    "unphased_hets",
    "vote_dosages",
    "vote_tables",
    "write_output",
]
