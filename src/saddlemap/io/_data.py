"""Data readers: :func:`load_data` and its suffix → reader registry (npz, npy, csv)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data import Dataset
from ..errors import DataError, LossError
from ..losses import get_loss
from ._common import (
    NPY_MAGIC,
    ZIP_MAGIC,
    PathLike,
    check_file,
    file_starts_with,
    numpy_reason,
    one_line,
    read_npz,
)

__all__ = ["DATA_READERS", "load_data"]

#: A data file reader: the file, the targets file (``.npy`` only) and the CSV target column.
DataReader = Callable[[Path, Path | None, str | int | None], tuple[np.ndarray, np.ndarray]]


def load_data(
    path: PathLike,
    y_path: PathLike | None = None,
    *,
    target: str | int | None = None,
    loss: str = "mse",
) -> Dataset:
    r"""Read a :class:`~saddlemap.Dataset` from a file.

    * ``.npz``: arrays ``X`` and ``y``;
    * ``.npy``: the inputs X, with the targets in the ``.npy`` file ``y_path``;
    * ``.csv`` (UTF-8, with or without a byte-order mark): a header row naming the columns,
      then numbers; y is the column ``target`` (a column name or index), by default the last
      one, and X is every other column.  A first row of numbers only is refused, not read
      as a header (that would lose a sample silently): add a header row.

    No file is unpickled: NumPy object arrays are refused.

    For ``loss="cross_entropy"`` whole-number float labels (as CSV gives them) become
    integer class labels.

    Args:
        path: the data file.
        y_path: the targets, for a ``.npy`` X file only.
        target: the CSV column holding y (name or index); CSV only.
        loss: the loss the data is for (``"mse"``, ``"cross_entropy"``, ``"bce"``).

    Returns:
        The validated :class:`~saddlemap.Dataset`.

    Raises:
        DataError: a missing, empty, corrupt or unsupported file, missing arrays or columns,
            a CSV without a header row, non-numeric CSV cells, NaN or Inf, X and y of
            different lengths, object arrays.
        LossError: an unknown loss, or targets that do not fit it.

    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "data.csv")
    ...     with open(path, "w") as f:
    ...         _ = f.write("x1,x2,label\n0.5,1.0,0\n-1.0,2.0,2\n0.0,0.0,1\n")
    ...     data = load_data(path, loss="cross_entropy")
    >>> data.n, data.input_dim, data.output_dim
    (3, 2, 3)
    """
    path = Path(path)
    check_file(path, DataError)
    suffix = path.suffix.lower()
    if y_path is not None and suffix != ".npy":
        raise DataError(f"{path}: y_path is only used with a .npy X file")
    if target is not None and suffix != ".csv":
        raise DataError(f"{path}: target is only used with CSV files")
    reader = DATA_READERS.get(suffix)
    if reader is None:
        raise DataError(
            f"{path}: unsupported data file suffix {path.suffix!r}; expected .npz, .npy or .csv"
        )
    X, y = reader(path, None if y_path is None else Path(y_path), target)
    try:
        loss_obj = get_loss(loss)
        if loss_obj.name == "cross_entropy":
            y = _as_labels(y)
        return Dataset(X, y, loss=loss_obj)
    except (DataError, LossError) as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def _as_labels(y: np.ndarray) -> np.ndarray:
    """Whole-number float labels (n,) → int64; anything else unchanged."""
    y = np.asarray(y)
    if y.ndim == 1 and y.dtype.kind == "f" and bool(np.isfinite(y).all()):
        if bool((y == np.round(y)).all()):
            return y.astype(np.int64)
    return y


# ------------------------------------------------------------------------------ readers
def _read_npz_data(
    path: Path, y_path: Path | None, target: str | int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``X`` and ``y`` of an ``.npz`` archive."""
    arrays = read_npz(path, DataError)
    for key in ("X", "y"):
        if key not in arrays:
            found = ", ".join(sorted(arrays)) or "nothing"
            raise DataError(f"{path}: missing array {key!r} (found: {found})")
    return arrays["X"], arrays["y"]


def _read_npy(path: Path) -> np.ndarray:
    """One array of a ``.npy`` file, read without unpickling.

    The rule: only a file that starts as a ``.npy`` file does is handed to NumPy (NumPy
    would take anything else for a pickle), and object arrays are refused.
    """
    if file_starts_with(path, ZIP_MAGIC):
        raise DataError(f"{path}: cannot read as a .npy file: it is an .npz archive")
    if not file_starts_with(path, (NPY_MAGIC,)):
        raise DataError(f"{path}: cannot read as a .npy file: no .npy header")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as a .npy file: {numpy_reason(exc)}") from exc
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: cannot read as a .npy file: not a single array")
    return array


def _read_npy_pair(
    path: Path, y_path: Path | None, target: str | int | None
) -> tuple[np.ndarray, np.ndarray]:
    """X from ``path``, y from the ``.npy`` file ``y_path``."""
    if y_path is None:
        raise DataError(f"{path}: a .npy X file needs y_path, the .npy file of targets")
    check_file(y_path, DataError)
    if y_path.suffix.lower() != ".npy":
        raise DataError(f"{y_path}: y_path must be a .npy file")
    return _read_npy(path), _read_npy(y_path)


def _target_column(path: Path, header: list[str], target: str | int | None) -> int:
    """The index of the CSV column holding y."""
    if isinstance(target, str):
        if target not in header:
            raise DataError(f"{path}: no column named {target!r} (columns: {', '.join(header)})")
        return header.index(target)
    if target is None:
        return len(header) - 1
    if not -len(header) <= target < len(header):
        raise DataError(
            f"{path}: target column {target} is out of range for {len(header)} columns"
        )
    return target % len(header)


def _is_number(cell: str) -> bool:
    """Whether a CSV cell reads as a number."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(
    path: Path, y_path: Path | None, target: str | int | None
) -> tuple[np.ndarray, np.ndarray]:
    """A header row, then numbers; y is the ``target`` column, X every other column.

    The contract is a header row: a first row of numbers only is refused with a message
    (reading it as names would drop a sample).  A UTF-8 byte-order mark is not part of the
    first name.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as a CSV file: {one_line(exc)}") from exc
    rows = [row for row in rows if row]
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header = [name.strip() for name in rows[0]]
    if all(_is_number(name) for name in header):
        raise DataError(
            f"{path}: the first row ({', '.join(header[:4])}{', ...' if len(header) > 4 else ''}"
            ") is numbers, not a header; add a header row naming the columns (e.g. x1,x2,y)"
        )
    body = rows[1:]
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    if len(header) < 2:
        raise DataError(f"{path}: needs at least 2 columns (inputs and a target), found 1")
    column = _target_column(path, header, target)
    values = np.empty((len(body), len(header)), dtype=np.float64)
    for i, row in enumerate(body):
        line = i + 2
        if len(row) != len(header):
            raise DataError(
                f"{path}: line {line} has {len(row)} cells, the header has {len(header)}"
            )
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise DataError(
                    f"{path}: line {line}, column {header[j]!r}: {cell!r} is not a number"
                ) from None
    # NaN or Inf cells parse; Dataset reports them with their row.
    return np.delete(values, column, axis=1), values[:, column]


#: The data file readers, by lower-case suffix.
DATA_READERS: dict[str, DataReader] = {
    ".npz": _read_npz_data,
    ".npy": _read_npy_pair,
    ".csv": _read_csv,
}
