"""The public API is pinned: a change to it is deliberate and shows up here."""

from __future__ import annotations

import subprocess
import sys

import saddlemap as sm

PUBLIC = {
    "Activation", "ActivationError", "BinaryCrossEntropy", "CrossEntropy", "DataError",
    "Dataset", "HessianOperator", "Inertia", "Loss", "LossError", "ModelError", "ParamLayout",
    "ResidualFunction", "SaddlemapError", "Spectrum", "SquaredLoss", "Symmetry", "TwoLayerNet",
    "__version__", "available_activations", "available_losses", "custom_activation",
    "dense_spectrum", "get_activation", "get_loss", "gradient", "gradient_autodiff", "hessian",
    "hessian_autodiff", "hessian_operator", "hvp", "hvp_autodiff", "jacobian",
    "jacobian_autodiff", "lanczos_spectrum", "leaky_relu", "loss", "loss_and_gradient",
    "loss_autodiff",
    "loss_function", "output_function", "register_activation", "register_loss",
    "residual_function", "residuals", "spectrum",
    # trace and spectral density
    "Trace", "hessian_diagonal", "hessian_trace", "SpectralDensity", "spectral_density",
    # verdicts, tolerances and the analysis context
    "Verdict", "Kind", "BranchVerdict", "SplitRegion", "EdgeKind", "EscapeMethod",
    "PlateauVerdict", "ModelKind", "Note", "NoteCode", "Tolerances", "Analysis",
    "OptionError", "CriticalPointError", "Penalty", "Descent", "negative_curvature_step",
    "BranchPoint", "nearest_branch_point", "sklearn_penalty", "CompressionProfile",
    "ProfilePoint", "compression_profile",
    # problems and training
    "teacher_student", "TeacherStudent", "TeacherStudentSettings", "train", "safe_step_size",
    "TrainResult", "TrainState", "History",
    # minibatch noise
    "EscapeNoise", "escape_noise", "minibatch_noise",
    # critical points
    "CriticalPoint", "certify", "convergence_order", "find_critical_point",
    "grad_tolerance",
    # geometry
    "reduce", "Reduction", "CriticalSet", "Branch", "Decomposition", "HierarchyEdge",
    "count_patterns", "ZeroSet", "ZeroSetPoint",
    "Embedding", "split", "null_copy", "add_null_neuron", "add_zero_sum_group",
    "three_fold_split", "compose",
    # saddles
    "classify", "Classification", "EscapeCurve", "SplitRule", "splitting_rule",
    "saddle_branches", "SaddleBranch",
    "escape", "EscapeResult",
    # applications
    "diagnose", "compress", "Report", "Compressed", "run_demo", "Demo",
    "load_model", "save_model", "save_estimator", "load_data", "export_model", "LoadedModel",
    "PlateauMonitor", "Plateau", "PlateauRules",
    "run_study", "summarize", "load_config", "StudyConfig",
    # plots
    "plot_neuron_map", "plot_spectrum", "plot_escape", "plot_descent", "plot_residual_function",
    "plot_branch_hierarchy", "plot_training", "plot_plateaus", "save_report",
    "plot_spectral_density",
    # deep MLPs
    "MLP", "MLPLayout", "MLPHessianOperator", "mlp_loss", "mlp_loss_and_gradient",
    "mlp_gradient", "mlp_hvp", "mlp_hessian", "mlp_hessian_operator", "mlp_spectrum",
    "mlp_loss_function", "mlp_output_function", "mlp_gradient_autodiff", "mlp_hvp_autodiff",
    "mlp_hessian_autodiff", "MLPReduction", "reduce_mlp", "MLPEmbedding", "split_mlp_neuron",
    "add_mlp_null_neuron", "LayerResidualFunction", "layer_residual_function", "SaddleWitness",
    "null_neuron_witness", "split_witness", "LoadedMLP", "load_mlp",
}


def test_all_is_pinned_and_resolves() -> None:
    assert set(sm.__all__) == PUBLIC
    assert len(sm.__all__) == len(PUBLIC)
    for name in sm.__all__:
        assert getattr(sm, name) is not None


def test_no_public_function_shares_its_name_with_a_submodule() -> None:
    # ``import saddlemap.x as m`` must give the module x, and ``sm.x`` the public name x
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(sm.__path__)}
    assert not modules & set(sm.__all__)
    import saddlemap.spectral as spectral

    assert spectral.__name__ == "saddlemap.spectral" and sm.spectrum.__name__ == "spectrum"


def test_import_is_lazy() -> None:
    code = "import sys, saddlemap; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_attribute() -> None:
    try:
        sm.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
