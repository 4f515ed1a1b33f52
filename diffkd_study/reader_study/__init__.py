"""Reader studies: validated read tables, reader operating points, model vs readers, ORH MRMC, a simulator.

Submodules:

* ``reads``: the read and truth tables, their validation (``RULES``) and the ``ReaderStudy`` they make;
* ``operating_points``: each reader's sensitivity, specificity and AUC, the model at the readers'
  operating points, and per-group summaries;
* ``orh``: the AUC case covariance (jackknife or DeLong) and the Obuchowski-Rockette-Hillis MRMC analysis;
* ``compare``: a stand-alone model against the readers' mean AUC (1T-RRRC);
* ``simulate``: simulated readers (correlated binormal ratings) for the phantom cohort.

The public names of every submodule are re-exported here (``from diffkd_study import reader_study as rs``).
"""

from diffkd_study.reader_study.compare import ModelVsReaders, model_vs_readers, model_vs_readers_analysis
from diffkd_study.reader_study.operating_points import (
    model_at_reader_operating_points,
    reader_group_summary,
    reader_operating_points,
)
from diffkd_study.reader_study.orh import (
    Covariance,
    ORHResult,
    ORHTest,
    SingleTreatmentORH,
    auc_covariance,
    orh_analysis,
    orh_mrmc,
    single_treatment_orh,
)
from diffkd_study.reader_study.reads import (
    CONDITION_COLUMNS,
    DEFAULT_CONDITION,
    READ_COLUMNS,
    RULES,
    ReaderStudy,
    ReaderStudyError,
    ReadProblem,
    read_reader_study,
    read_truth,
    validate_reads,
)
from diffkd_study.reader_study.simulate import (
    CALL_FROM_RATING,
    DEFAULT_CUTPOINTS,
    DEFAULT_READER_GROUPS,
    LatentCorrelation,
    ReaderGroupSpec,
    simulate_ratings,
    simulate_reader_study,
)

__all__ = [
    "CALL_FROM_RATING",
    "CONDITION_COLUMNS",
    "DEFAULT_CONDITION",
    "DEFAULT_CUTPOINTS",
    "DEFAULT_READER_GROUPS",
    "READ_COLUMNS",
    "RULES",
    "Covariance",
    "LatentCorrelation",
    "ModelVsReaders",
    "ORHResult",
    "ORHTest",
    "ReadProblem",
    "ReaderGroupSpec",
    "ReaderStudy",
    "ReaderStudyError",
    "SingleTreatmentORH",
    "auc_covariance",
    "model_at_reader_operating_points",
    "model_vs_readers",
    "model_vs_readers_analysis",
    "orh_analysis",
    "orh_mrmc",
    "read_reader_study",
    "read_truth",
    "reader_group_summary",
    "reader_operating_points",
    "simulate_ratings",
    "simulate_reader_study",
    "single_treatment_orh",
    "validate_reads",
]
