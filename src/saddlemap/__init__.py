"""saddlemap: map the loss landscape of two-layer neural networks.

Critical points, their reduction to minimal width, their embedding into wider networks, the
branches of the critical set and which of them are saddles (Zhang, Zhang & Luo,
arXiv:2405.17501).  Submodules are imported on first use, so ``import saddlemap`` (and the
command line's ``--version``) stays fast.

The public API is the import block below, grouped by layer: it is read once at import time
(:mod:`saddlemap._lazy`) to build ``__all__`` and the name → submodule map, so it is the
only list of public names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._lazy import public_names
from ._version import __version__

if TYPE_CHECKING:
    # --- foundation: verdicts, tolerances, errors, activations, losses, networks, data
    from .activations import (
        Activation,
        Symmetry,
        available_activations,
        custom_activation,
        get_activation,
        leaky_relu,
        register_activation,
    )

    # --- derivatives: closed forms, autodiff reference, spectra, the zero set of φ
    from .analysis import Analysis, grad_tolerance
    from .autodiff import (
        gradient_autodiff,
        hessian_autodiff,
        hvp_autodiff,
        jacobian_autodiff,
        loss_autodiff,
        loss_function,
        output_function,
    )

    # --- problems, training and critical points
    from .critical_points import CriticalPoint, certify, convergence_order, find_critical_point

    # --- geometry: reduction, embedding, the critical set
    from .critical_set import Branch, CriticalSet, Decomposition, HierarchyEdge, count_patterns
    from .data import Dataset

    # --- applications: loading, diagnosis, monitoring, studies, the demo
    from .demo import run_demo
    from .derivatives import (
        HessianOperator,
        ResidualFunction,
        gradient,
        hessian,
        hessian_operator,
        hvp,
        jacobian,
        loss,
        loss_and_gradient,
        residual_function,
        residuals,
    )
    from .diagnosis import Compressed, Report, compress, diagnose
    from .embedding import (
        Embedding,
        add_null_neuron,
        add_zero_sum_group,
        compose,
        null_copy,
        split,
        three_fold_split,
    )
    from .errors import (
        ActivationError,
        CriticalPointError,
        DataError,
        LossError,
        ModelError,
        OptionError,
        SaddlemapError,
    )

    # --- saddles and escapes
    from .escapes import EscapeResult, escape
    from .io import LoadedModel, export_model, load_data, load_model, save_model
    from .losses import (
        BinaryCrossEntropy,
        CrossEntropy,
        Loss,
        SquaredLoss,
        available_losses,
        get_loss,
        register_loss,
    )
    from .monitor import Plateau, PlateauMonitor
    from .network import ParamLayout, TwoLayerNet

    # --- presentation: figures and reports
    from .plots import (
        plot_branch_hierarchy,
        plot_escape,
        plot_neuron_map,
        plot_plateaus,
        plot_residual_function,
        plot_spectrum,
        plot_training,
    )
    from .problems import TeacherStudent, TeacherStudentSettings, teacher_student
    from .reduction import Reduction, reduce
    from .report import save_report
    from .saddles import (
        Classification,
        EscapeCurve,
        SaddleBranch,
        SplitRule,
        classify,
        saddle_branches,
        splitting_rule,
    )
    from .spectral import Inertia, Spectrum, dense_spectrum, lanczos_spectrum, spectrum
    from .study import StudyConfig, load_config, run_study, summarize
    from .tolerances import Tolerances
    from .training import History, TrainResult, TrainState, safe_step_size, train
    from .verdicts import (
        BranchVerdict,
        EdgeKind,
        EscapeMethod,
        Kind,
        ModelKind,
        Note,
        NoteCode,
        PlateauVerdict,
        SplitRegion,
        Verdict,
    )
    from .zero_set import ZeroSet, ZeroSetPoint

_WHERE: dict[str, str] = public_names(__file__)

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'saddlemap' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
