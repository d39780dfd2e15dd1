"""Teacher–student studies: grids of runs, a resumable SQLite store, engines, summaries.

>>> from saddlemap.study import StudyConfig
>>> len(StudyConfig.from_dict({"grid": {"width": [2, 3], "teacher_width": [1]}}).runs())
2
"""

from ..errors import StoreError
from .config import MAX_RUNS, ConfigError, RunSpec, StudyConfig, load_config
from .engines import ProcessEngine, RayEngine, SerialEngine, make_engine
from .execution import Outcome, execute, run_one
from .runner import StudyReport, run_study
from .store import StudyStore
from .summary import (
    VERDICT_COLOURS,
    Summary,
    SummaryRow,
    VerdictCount,
    export_csv,
    export_parquet,
    plot_summary,
    summarize,
    wilson_interval,
)

__all__ = [
    "MAX_RUNS",
    "VERDICT_COLOURS",
    "ConfigError",
    "Outcome",
    "ProcessEngine",
    "RayEngine",
    "RunSpec",
    "SerialEngine",
    "StoreError",
    "StudyConfig",
    "StudyReport",
    "StudyStore",
    "Summary",
    "SummaryRow",
    "VerdictCount",
    "execute",
    "export_csv",
    "export_parquet",
    "load_config",
    "make_engine",
    "plot_summary",
    "run_one",
    "run_study",
    "summarize",
    "wilson_interval",
]
