"""Load real models and data: torch modules and files, scikit-learn MLPs, ``.npz`` and CSV.

:func:`load_model` turns a two-layer model (a torch module, a ``.pt``/``.pth``,
``.safetensors`` or ``.npz`` file, or a fitted scikit-learn ``MLPRegressor`` /
``MLPClassifier`` with one hidden layer) into a float64 :class:`~saddlemap.TwoLayerNet`,
together with the loss it was trained with.  :func:`export_model` gives a (reduced) network
back as the same kind of object; :func:`save_model` writes a network to a file that
:func:`load_model` reads back bit for bit (a whole-module ``.pt`` with ``trust_pickle=True``);
:func:`save_estimator` writes a scikit-learn estimator (``.skops``, or a pickle when the
suffix asks for one); :func:`load_data` reads a :class:`~saddlemap.Dataset` from ``.npz``, a
pair of ``.npy`` files or a CSV file.

Loading never runs code from a file unless the caller passes ``trust_pickle=True``: torch
files are read with ``weights_only=True``, ``.skops`` files trusting only what a
scikit-learn MLP is made of, NumPy files without unpickling, and pickles not at all.

Every bad input raises a :class:`~saddlemap.SaddlemapError` subclass with a one-line message
naming the file (when there is one) and the problem.  Where a model came from is a
:class:`~saddlemap.verdicts.ModelKind`, and what is worth knowing about it is a tuple of
:class:`~saddlemap.verdicts.Note` objects.

The package is split by job: ``_models`` (the model readers, by suffix, and
:func:`export_model`), ``_sklearn`` (the scikit-learn adapter, both ways), ``_save``
(the model writers, by suffix), ``_data`` (the data readers, by suffix) and ``_common``
(:class:`LoadedModel`, the notes every reader shares, file checks).

>>> import os, tempfile
>>> from saddlemap import TwoLayerNet
>>> from saddlemap.verdicts import ModelKind
>>> net = TwoLayerNet([1.0, -2.0], [[0.5], [1.5]], b=[0.1, 0.2], activation="tanh")
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "net.npz")
...     save_model(net, path)
...     loaded = load_model(path)
>>> loaded.kind is ModelKind.NPZ, loaded.net.activation.name
(True, 'tanh')
>>> loaded.net.flatten().tolist() == net.flatten().tolist()
True
"""

from __future__ import annotations

from ._common import LoadedModel
from ._data import load_data
from ._models import export_model, load_model
from ._save import save_model
from ._sklearn import save_estimator, sklearn_penalty

__all__ = [
    "LoadedModel", "export_model", "load_data", "load_model", "save_estimator", "save_model",
    "sklearn_penalty",
]
