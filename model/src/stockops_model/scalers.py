"""Per-feature scalers with paired fit / transform / inverse functions, JSON-serialisable.

Fit a scaler on the training part only (`fit_standard(X[split.train])`), then apply it to
every part and, inside the registered pyfunc, to serving input; `to_dict` / `from_dict`
carry it into the model artifact as plain JSON.

Arrays are (..., F): the last axis is the feature axis and statistics are taken over all
other axes, so (N, window, F) windows and (T, F) rows both work, and a target is scaled
as `y.reshape(-1, 1)`. A feature with zero spread (a one-hot column of a ticker absent
from the training part, a constant price) gets a scale of 1, so it maps to a constant
instead of dividing by zero.

`StandardScaler` (zero mean, unit variance) is the default for the return target.
`MinMaxScaler` maps the training range to [0, 1]; it exists to reproduce the original
system's level target and shows why that target is weak: values outside the training
range map outside [0, 1], where a network trained on [0, 1] targets rarely goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


def _as_2d(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        raise ValueError("cannot fit a scaler on a scalar")
    if arr.shape[0] == 0:
        raise ValueError("cannot fit a scaler on zero rows")
    if not np.isfinite(arr).all():
        raise ValueError("cannot fit a scaler on non-finite values")
    return arr.reshape(-1, arr.shape[-1])


def _safe_scale(
    spread: npt.NDArray[np.float64], center: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    # A spread within rounding noise of the values' magnitude is a constant feature (the
    # mean of n copies of 0.1 is not exactly 0.1): scale 1 keeps it finite.
    constant = spread <= 1e-9 * np.abs(center)
    return np.where(constant | (spread == 0), 1.0, spread)


class _Affine:
    """(x - offset) / scale per feature, and the inverse: what both scalers apply."""

    scale: npt.NDArray[np.float64]

    @property
    def offset(self) -> npt.NDArray[np.float64]:
        raise NotImplementedError

    def transform(self, x: FloatArray) -> npt.NDArray[np.float32]:
        """Scaled copy of `x` (..., F), as float32 (the network's dtype)."""
        self._check(x)
        return ((np.asarray(x, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)

    def inverse_transform(self, z: FloatArray) -> npt.NDArray[np.float64]:
        """Unscaled copy of `z` (..., F), as float64."""
        self._check(z)
        return np.asarray(z, dtype=np.float64) * self.scale + self.offset

    def _check(self, x: FloatArray) -> None:
        if np.shape(x)[-1] != self.offset.shape[0]:
            raise ValueError(f"expected {self.offset.shape[0]} features, got {np.shape(x)[-1]}")


@dataclass(frozen=True)
class StandardScaler(_Affine):
    """(x - mean) / scale per feature; `scale` is the population std (1 where it is 0)."""

    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]

    @property
    def offset(self) -> npt.NDArray[np.float64]:
        return self.mean

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form; `from_dict` restores it exactly (floats round-trip)."""
        return {"kind": "standard", "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StandardScaler:
        if data.get("kind") != "standard":
            raise ValueError(f"not a standard scaler: kind {data.get('kind')!r}")
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["scale"]))


@dataclass(frozen=True)
class MinMaxScaler(_Affine):
    """(x - min) / (max - min) per feature, mapping the fitted range to [0, 1].

    Values outside the fitted range map outside [0, 1].
    """

    minimum: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]

    @property
    def offset(self) -> npt.NDArray[np.float64]:
        return self.minimum

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form; `from_dict` restores it exactly."""
        return {"kind": "minmax", "minimum": self.minimum.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MinMaxScaler:
        if data.get("kind") != "minmax":
            raise ValueError(f"not a min-max scaler: kind {data.get('kind')!r}")
        return cls(np.asarray(data["minimum"], dtype=np.float64), np.asarray(data["scale"]))


Scaler = StandardScaler | MinMaxScaler


def fit_standard(x_train: npt.ArrayLike) -> StandardScaler:
    """Fit a StandardScaler on training values (..., F); raises ValueError if empty/NaN."""
    rows = _as_2d(x_train)
    mean = rows.mean(axis=0)
    return StandardScaler(mean, _safe_scale(rows.std(axis=0), mean))


def fit_minmax(x_train: npt.ArrayLike) -> MinMaxScaler:
    """Fit a MinMaxScaler on training values (..., F); raises ValueError if empty/NaN."""
    rows = _as_2d(x_train)
    low = rows.min(axis=0)
    return MinMaxScaler(low, _safe_scale(rows.max(axis=0) - low, low))


def scaler_from_dict(data: dict[str, Any]) -> Scaler:
    """Restore either scaler from its `to_dict` form."""
    if data.get("kind") == "minmax":
        return MinMaxScaler.from_dict(data)
    return StandardScaler.from_dict(data)
