"""saddlemap: map the loss landscape of two-layer neural networks.

Critical points, their reduction to minimal width, their embedding into wider networks, the
branches of the critical set and which of them are saddles (Zhang, Zhang & Luo,
arXiv:2405.17501).  Submodules are imported on first use, so ``import saddlemap`` (and the
command line's ``--version``) stays fast.
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .activations import (
        Activation,
        Symmetry,
        available_activations,
        custom_activation,
        get_activation,
        leaky_relu,
        register_activation,
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
    from .critical_points import (
        CriticalPoint,
        Verdict,
        certify,
        convergence_order,
        find_critical_point,
        grad_tolerance,
    )
    from .critical_set import Branch, CriticalSet, Decomposition, count_patterns
    from .data import Dataset
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
    from .diagnose import Compressed, Report, compress, diagnose
    from .embedding import (
        Embedding,
        add_null_neuron,
        add_zero_sum_group,
        compose,
        null_copy,
        split,
        three_fold_split,
    )
    from .errors import ActivationError, DataError, LossError, ModelError, SaddlemapError
    from .escape import EscapeResult, escape
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
    from .plots import (
        plot_branch_hierarchy,
        plot_escape,
        plot_neuron_map,
        plot_residual_function,
        plot_spectrum,
        plot_training,
    )
    from .problems import TeacherStudent, TeacherStudentSettings, teacher_student
    from .reduction import Reduction, reduce
    from .saddles import (
        Classification,
        EscapeCurve,
        Kind,
        SaddleBranch,
        SplitRule,
        classify,
        saddle_branches,
        splitting_rule,
    )
    from .spectrum import Inertia, Spectrum, dense_spectrum, lanczos_spectrum, spectrum
    from .study import StudyConfig, load_config, run_study, summarize
    from .training import History, TrainResult, TrainState, safe_step_size, train
    from .zero_set import ZeroSetPoint, project_to_zero_set, zero_set_points, zeros_1d

# The public API, grouped; each name maps to the submodule that defines it.
_GROUPS: dict[str, dict[str, list[str]]] = {
    "networks and data": {
        "network": ["TwoLayerNet", "ParamLayout"],
        "data": ["Dataset"],
    },
    "activations": {
        "activations": [
            "Activation", "Symmetry", "get_activation", "custom_activation",
            "register_activation", "available_activations", "leaky_relu",
        ],
    },
    "losses": {
        "losses": [
            "Loss", "SquaredLoss", "CrossEntropy", "BinaryCrossEntropy", "get_loss",
            "register_loss", "available_losses",
        ],
    },
    "derivatives": {
        "derivatives": [
            "loss", "loss_and_gradient", "residuals", "gradient", "jacobian", "hvp", "hessian",
            "hessian_operator", "HessianOperator", "residual_function", "ResidualFunction",
        ],
    },
    "autodiff reference": {
        "autodiff": [
            "loss_function", "output_function", "loss_autodiff", "gradient_autodiff",
            "jacobian_autodiff", "hvp_autodiff", "hessian_autodiff",
        ],
    },
    "spectrum": {
        "spectrum": ["spectrum", "Spectrum", "Inertia", "dense_spectrum", "lanczos_spectrum"],
    },
    "problems and training": {
        "problems": ["teacher_student", "TeacherStudent", "TeacherStudentSettings"],
        "training": ["train", "safe_step_size", "TrainResult", "TrainState", "History"],
    },
    "critical points": {
        "critical_points": [
            "find_critical_point", "certify", "CriticalPoint", "Verdict", "convergence_order",
            "grad_tolerance",
        ],
    },
    "geometry": {
        "reduction": ["reduce", "Reduction"],
        "critical_set": ["CriticalSet", "Branch", "Decomposition", "count_patterns"],
        "embedding": [
            "Embedding", "split", "null_copy", "add_null_neuron", "add_zero_sum_group",
            "three_fold_split", "compose",
        ],
    },
    "saddles": {
        "saddles": ["classify", "Classification", "Kind", "EscapeCurve", "SplitRule",
                    "splitting_rule", "saddle_branches", "SaddleBranch"],
        "escape": ["escape", "EscapeResult"],
        "zero_set": ["zeros_1d", "zero_set_points", "project_to_zero_set", "ZeroSetPoint"],
    },
    "applications": {
        "diagnose": ["diagnose", "compress", "Report", "Compressed"],
        "demo": ["run_demo"],
        "io": ["load_model", "save_model", "load_data", "export_model", "LoadedModel"],
        "monitor": ["PlateauMonitor", "Plateau"],
        "study": ["run_study", "summarize", "load_config", "StudyConfig"],
    },
    "plots": {
        "plots": [
            "plot_neuron_map", "plot_spectrum", "plot_escape", "plot_residual_function",
            "plot_branch_hierarchy", "plot_training",
        ],
    },
    "errors": {
        "errors": ["SaddlemapError", "DataError", "ActivationError", "LossError", "ModelError"],
    },
}

_WHERE = {name: mod for group in _GROUPS.values() for mod, names in group.items() for name in names}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'saddlemap' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this hook (it costs an import_module call)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    # Importing a submodule sets it as an attribute of the package; where a submodule shares
    # its name with a public function (``spectrum``), keep the function reachable instead.
    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _WHERE:
            return
        super().__setattr__(name, value)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _Package
