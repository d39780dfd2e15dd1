"""What every reader of :mod:`saddlemap.io` shares: the record, its notes, file checks.

The notes a reader attaches are :class:`~saddlemap.verdicts.Note` objects made here, so that
one finding (a float32 original, an assumed loss) reads the same whichever reader found it.

>>> import numpy as np, torch
>>> str(dtype_note([torch.float32, np.dtype("float64")]))
'parameters converted from float32, float64 to float64'
>>> dtype_note([torch.float64, np.dtype("float64")]) is None
True
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..activations import Activation, get_activation, leaky_relu
from ..errors import ActivationError, ModelError, SaddlemapError
from ..network import TwoLayerNet
from ..verdicts import ModelKind, Note, NoteCode

PathLike = str | os.PathLike[str]

#: Where a reader that does not say puts the original model.
CPU = torch.device("cpu")

#: The note of every reader whose model does not record the loss it was trained with.
NO_LOSS_NOTE = Note(
    NoteCode.LOSS_ASSUMED, "the model does not record its training loss; 'mse' is assumed"
)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model read by :func:`~saddlemap.io.load_model`.

    Attributes:
        net: the network, in float64.
        kind: where it came from: :attr:`ModelKind.TORCH`, :attr:`ModelKind.STATE_DICT`,
            :attr:`ModelKind.SAFETENSORS`, :attr:`ModelKind.SKLEARN` or :attr:`ModelKind.NPZ`.
        loss: the loss the model was trained with (``"mse"``, ``"cross_entropy"`` or
            ``"bce"``); for torch and file models, which do not record it, ``"mse"``.
        source: the original torch module or scikit-learn estimator, when there is one.
        path: the file it was read from, if any.
        notes: differences between the model and ``net`` worth knowing (a regulariser that
            is not part of R, a float32 original, torch's Softplus threshold, ...), each a
            :class:`~saddlemap.verdicts.Note` whose ``str`` is the sentence.
        dtype: the original model's floating dtype (a torch module's or state_dict's
            parameters, the arrays of an ``.npz`` or ``.safetensors`` file); float64 where
            the reader does not say.  :func:`~saddlemap.io.export_model` gives torch
            modules back in it.
        device: the original model's device (its parameters'); cpu for files, which are
            read onto the cpu.
    """

    net: TwoLayerNet
    kind: ModelKind
    loss: str
    source: object | None
    path: str | None
    notes: tuple[Note, ...]
    dtype: torch.dtype = torch.float64
    device: torch.device = CPU


# ------------------------------------------------------------------------------- notes
def dtype_note(dtypes: Iterable[object]) -> Note | None:
    """The note that parameters of these dtypes were converted to float64 (None if all were).

    Torch and NumPy dtypes are named alike (``torch.float32`` and ``float32`` are both
    ``float32``), so the note reads the same for every reader.

    Args:
        dtypes: the dtypes of the original parameters (torch or NumPy dtypes, or names).

    Returns:
        The :attr:`NoteCode.DTYPE_CONVERTED` note, or None when there is nothing but float64.
    """
    names = sorted({str(dtype).removeprefix("torch.") for dtype in dtypes})
    if not names or names == ["float64"]:
        return None
    return Note(
        NoteCode.DTYPE_CONVERTED, f"parameters converted from {', '.join(names)} to float64"
    )


def original_dtype(dtypes: Iterable[object]) -> torch.dtype:
    """The torch dtype of a model's parameters: the first floating one, else float64.

    Torch and NumPy dtypes are both read (``np.dtype("float32")`` → ``torch.float32``).

    >>> original_dtype([np.dtype("float32")]), original_dtype([torch.int64])
    (torch.float32, torch.float64)
    """
    for dtype in dtypes:
        if isinstance(dtype, torch.dtype):
            if dtype.is_floating_point:
                return dtype
            continue
        try:
            as_torch = torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype  # type: ignore[call-overload]
        except TypeError:
            continue
        if as_torch.is_floating_point:
            return as_torch
    return torch.float64


def choose_activation(
    path: Path, given: str | None, stored: str | None, missing: str
) -> tuple[str, tuple[Note, ...]]:
    """The activation of a file model: the one given, else the one the file stores.

    Args:
        path: the file, for the error message.
        given: the activation passed by the caller, if any.
        stored: the activation the file names, if any.
        missing: where the file would name it, for the error when neither is there.

    Returns:
        The chosen name, and an :attr:`NoteCode.ACTIVATION_DIFFERS` note when the given name
        overrides a different stored one.

    Raises:
        ModelError: neither a given nor a stored activation.
    """
    notes: tuple[Note, ...] = ()
    if given is not None and stored is not None and given != stored:
        text = f"activation {given!r} given; the file says {stored!r}"
        notes = (Note(NoteCode.ACTIVATION_DIFFERS, text),)
    chosen = given if given is not None else stored
    if chosen is None:
        raise ModelError(f"{path}: no 'activation' {missing}; pass activation=")
    return chosen, notes


# ---------------------------------------------------------------------- errors, files
def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type's name)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def with_path(path: Path | None, exc: SaddlemapError) -> SaddlemapError:
    """The same error class with the file name in front of the message."""
    if path is None:
        return exc
    return type(exc)(f"{path}: {exc}")


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or raise an ImportError naming the extra to install.

    Args:
        module: the module to import, e.g. ``"safetensors.torch"``.
        extra: the saddlemap extra that installs it, e.g. ``"safetensors"``.

    Returns:
        The imported module.

    Raises:
        ImportError: the module is not installed; the message says ``pip install
            'saddlemap[extra]'``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is needed for this; install it with: pip install 'saddlemap[{extra}]'"
        ) from exc


def check_file(path: Path, error: type[SaddlemapError]) -> None:
    """Raise ``error`` unless ``path`` is an existing, non-empty file."""
    if not path.exists():
        raise error(f"{path}: no such file")
    if path.is_dir():
        raise error(f"{path}: is a directory, not a file")
    if path.stat().st_size == 0:
        raise error(f"{path}: the file is empty")


def refusal(path: Path, holds: str, safe_format: str) -> ModelError:
    """The error for a file that only unpickling (running its code) could read.

    The rule: a model file is never unpickled unless the caller trusts it.  The message
    names the file, why it was refused, and the two ways forward.

    Args:
        path: the refused file.
        holds: what the file holds, e.g. ``"pickled Python objects (a Sequential)"``.
        safe_format: the safe format to save such a model in instead.

    >>> message = str(refusal(Path("m.pkl"), "a pickle", "skops (.skops)"))
    >>> message.split(";")[0]
    'm.pkl: refused: the file is a pickle, and unpickling runs code from the file'
    """
    return ModelError(
        f"{path}: refused: the file is {holds}, and unpickling runs code from the file; "
        f"if you trust it, pass --trust-pickle (trust_pickle=True), or save the model as "
        f"{safe_format}"
    )


#: The first bytes of a zip archive (an ``.npz`` is one), and of a ``.npy`` file.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
NPY_MAGIC = b"\x93NUMPY"


def file_starts_with(path: Path, magics: tuple[bytes, ...]) -> bool:
    """Whether the file's first bytes are one of ``magics``."""
    with open(path, "rb") as handle:
        head = handle.read(max(len(m) for m in magics))
    return head.startswith(magics)


def numpy_reason(exc: BaseException) -> str:
    """Why NumPy could not read an array, without NumPy's hint to allow pickles.

    NumPy answers an object array, or bytes it takes for a pickle, with advice to pass
    ``allow_pickle=True``: that would run code from the file, so saddlemap never gives it.
    """
    text = one_line(exc)
    if "allow_pickle" in text or "pickled data" in text:
        return "it holds pickled Python objects (object arrays), which are never loaded"
    return text


def read_npz(path: Path, error: type[SaddlemapError]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, read without unpickling.

    The rule: a file that is not a zip archive is refused before NumPy reads it (NumPy would
    take it for a pickle), and an object array is refused, never unpickled.

    Raises:
        SaddlemapError: ``error``, when the file is not a readable ``.npz`` archive.
    """
    if not file_starts_with(path, ZIP_MAGIC):
        raise error(f"{path}: cannot read as an .npz file: not a zip archive of .npy arrays")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise error(f"{path}: not an .npz archive")
            return {key: archive[key] for key in archive.files}
    except SaddlemapError:
        raise
    except Exception as exc:
        raise error(f"{path}: cannot read as an .npz file: {numpy_reason(exc)}") from exc


def check_width(path: Path | None, net: TwoLayerNet) -> None:
    """Raise ModelError for a network without hidden neurons: there is nothing to map."""
    if net.width == 0:
        raise with_path(path, ModelError(
            f"the network has width 0 (W has shape {tuple(net.W.shape)}): no hidden neurons"
        ))


# ------------------------------------------------------------------ activation names
def activation_to_str(activation: Activation) -> str:
    """A name :func:`activation_from_str` reads back to the same activation.

    >>> activation_to_str(leaky_relu(0.2)), activation_to_str(get_activation("tanh"))
    ('leaky_relu(0.2)', 'tanh')

    Raises:
        ModelError: an activation outside the registry, which a name cannot give back.
    """
    if activation.name == "leaky_relu" and activation.params:
        slope = dict(activation.params)["negative_slope"]
        return f"leaky_relu({slope!r})"
    try:
        registered = get_activation(activation.name)
    except ActivationError:
        registered = None
    if registered is None or registered != activation:
        raise ModelError(
            f"activation {activation.name!r} is not in the registry, so a file cannot name it; "
            "register it with register_activation or save to .pt"
        )
    return activation.name


def activation_from_str(name: str) -> Activation:
    """Inverse of :func:`activation_to_str`.

    >>> activation_from_str("leaky_relu(0.2)").params
    (('negative_slope', 0.2),)

    Raises:
        ActivationError: an unknown name or a bad leaky ReLU slope.
    """
    match = re.fullmatch(r"\s*leaky_relu\(\s*([^)]*)\)\s*", name)
    if match:
        try:
            return leaky_relu(float(match.group(1)))
        except ValueError:
            raise ActivationError(f"bad leaky_relu slope in {name!r}") from None
    return get_activation(name)
