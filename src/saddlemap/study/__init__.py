"""Teacher–student studies: grids of runs, a resumable SQLite store, engines, summaries.

>>> from saddlemap.study import StudyConfig
>>> len(StudyConfig.from_dict({"grid": {"width": [2, 3], "teacher_width": [1]}}).runs())
2
"""

from ..errors import StoreError
from .config import MAX_RUNS, ConfigError, RunSpec, StudyConfig, load_config
from .engines import ProcessEngine, RayEngine, SerialEngine, make_engine
from .execution import Outcome, build_problem, execute, run_one
from .inspect import RunView, export_points, format_run, load_run, plot_run
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
    "RunView",
    "SerialEngine",
    "StoreError",
    "StudyConfig",
    "StudyReport",
    "StudyStore",
    "Summary",
    "SummaryRow",
    "VerdictCount",
    "build_problem",
    "execute",
    "export_csv",
    "export_parquet",
    "export_points",
    "format_run",
    "load_config",
    "load_run",
    "make_engine",
    "plot_run",
    "plot_summary",
    "run_one",
    "run_study",
    "summarize",
    "wilson_interval",
]
