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
    # The public API, grouped by layer (kept in this order, not sorted).
    # isort: off
    # --- foundation: verdicts, tolerances, errors, activations, losses, networks, data
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
    from .tolerances import Tolerances
    from .errors import (
        ActivationError,
        CriticalPointError,
        DataError,
        LossError,
        ModelError,
        OptionError,
        SaddlemapError,
    )
    from .activations import (
        Activation,
        Symmetry,
        available_activations,
        custom_activation,
        get_activation,
        leaky_relu,
        register_activation,
    )
    from .losses import (
        BinaryCrossEntropy,
        CrossEntropy,
        Loss,
        Penalty,
        SquaredLoss,
        available_losses,
        get_loss,
        register_loss,
    )
    from .network import ParamLayout, TwoLayerNet
    from .data import Dataset
    # --- derivatives: closed forms, autodiff, spectra, the zero set of φ, the analysis context
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
    from .autodiff import (
        gradient_autodiff,
        hessian_autodiff,
        hvp_autodiff,
        jacobian_autodiff,
        loss_autodiff,
        loss_function,
        output_function,
    )
    from .spectral import Inertia, Spectrum, dense_spectrum, lanczos_spectrum, spectrum
    from .trace import Trace, hessian_diagonal, hessian_trace
    from .density import SpectralDensity, spectral_density
    from .zero_set import ZeroSet, ZeroSetPoint
    from .analysis import Analysis, grad_tolerance
    # --- problems, training, critical points and the way down from any point
    from .problems import TeacherStudent, TeacherStudentSettings, teacher_student
    from .training import History, TrainResult, TrainState, safe_step_size, train
    from .noise import EscapeNoise, escape_noise, minibatch_noise
    from .critical_points import CriticalPoint, certify, convergence_order, find_critical_point
    from .descent import Descent, negative_curvature_step
    # --- geometry: reduction, compression, embedding, the critical set
    from .reduction import Reduction, reduce
    from .compression import CompressionProfile, ProfilePoint, compression_profile
    from .embedding import (
        Embedding,
        add_null_neuron,
        add_zero_sum_group,
        compose,
        null_copy,
        split,
        three_fold_split,
    )
    from .critical_set import Branch, CriticalSet, Decomposition, HierarchyEdge, count_patterns
    # --- saddles, escapes and the branch point nearest to a model
    from .saddles import (
        Classification,
        EscapeCurve,
        SaddleBranch,
        SplitRule,
        classify,
        saddle_branches,
        splitting_rule,
    )
    from .escapes import EscapeResult, escape
    from .branch_point import BranchPoint, nearest_branch_point
    # --- applications: loading, diagnosis, monitoring, studies, the demo
    from .io import (
        LoadedModel,
        export_model,
        load_data,
        load_model,
        save_estimator,
        save_model,
        sklearn_penalty,
    )
    from .diagnosis import Compressed, Report, compress, diagnose
    from .monitor import Plateau, PlateauMonitor, PlateauRules
    from .study import StudyConfig, load_config, run_study, summarize
    from .demo import Demo, run_demo
    # --- presentation: figures and reports
    from .plots import (
        plot_branch_hierarchy,
        plot_descent,
        plot_escape,
        plot_neuron_map,
        plot_plateaus,
        plot_residual_function,
        plot_spectral_density,
        plot_spectrum,
        plot_training,
    )
    from .report import save_report
    # --- deep MLPs: any depth (saddlemap.deep)
    from .deep import (
        MLP,
        LayerResidualFunction,
        LoadedMLP,
        MLPEmbedding,
        MLPHessianOperator,
        MLPLayout,
        MLPReduction,
        SaddleWitness,
        add_mlp_null_neuron,
        layer_residual_function,
        load_mlp,
        mlp_gradient,
        mlp_gradient_autodiff,
        mlp_hessian,
        mlp_hessian_autodiff,
        mlp_hessian_operator,
        mlp_hvp,
        mlp_hvp_autodiff,
        mlp_loss,
        mlp_loss_and_gradient,
        mlp_loss_function,
        mlp_output_function,
        mlp_spectrum,
        null_neuron_witness,
        reduce_mlp,
        split_mlp_neuron,
        split_witness,
    )
    # isort: on

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
