"""Deep multilayer perceptrons: parameters, derivatives, reduction, embedding, witnesses.

The two-layer modules of saddlemap work on :class:`~saddlemap.TwoLayerNet`; this package
carries the same objects to networks of any depth (:class:`MLP`).
"""

from __future__ import annotations

from .autodiff import (
    mlp_gradient_autodiff,
    mlp_hessian_autodiff,
    mlp_hvp_autodiff,
    mlp_loss_function,
    mlp_output_function,
)
from .derivatives import (
    MLPHessianOperator,
    mlp_gradient,
    mlp_hessian,
    mlp_hessian_operator,
    mlp_hvp,
    mlp_loss,
    mlp_loss_and_gradient,
    mlp_spectrum,
)
from .embedding import MLPEmbedding, add_mlp_null_neuron, split_mlp_neuron
from .loading import LoadedMLP, load_mlp
from .mlp import MLP, MLPLayout, sklearn_loss
from .reduction import MLPReduction, reduce_mlp
from .witnesses import (
    LayerResidualFunction,
    SaddleWitness,
    layer_residual_function,
    null_neuron_witness,
    split_witness,
)

__all__ = [
    "MLP",
    "LayerResidualFunction",
    "LoadedMLP",
    "MLPEmbedding",
    "MLPHessianOperator",
    "MLPLayout",
    "MLPReduction",
    "SaddleWitness",
    "add_mlp_null_neuron",
    "layer_residual_function",
    "load_mlp",
    "mlp_gradient",
    "mlp_gradient_autodiff",
    "mlp_hessian",
    "mlp_hessian_autodiff",
    "mlp_hessian_operator",
    "mlp_hvp",
    "mlp_hvp_autodiff",
    "mlp_loss",
    "mlp_loss_and_gradient",
    "mlp_loss_function",
    "mlp_output_function",
    "mlp_spectrum",
    "null_neuron_witness",
    "reduce_mlp",
    "sklearn_loss",
    "split_mlp_neuron",
    "split_witness",
]
