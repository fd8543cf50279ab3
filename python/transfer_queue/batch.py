"""Batch: a TensorDict-like container, and the conversions between user data
(TensorDict, dict of tensors/arrays/lists) and the C++ core's field tuples."""

from __future__ import annotations

import pickle
import warnings
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from _tqds import DTypeError, InvalidArgumentError

try:  # tensordict is optional; Debian does not ship it
    from tensordict import TensorDict as _RealTensorDict  # type: ignore
except Exception:  # pragma: no cover - depends on the environment
    _RealTensorDict = None

KIND_BYTES, KIND_STRING, KIND_PICKLE = 1, 2, 3

_TORCH_TO_NAME = {
    torch.bool: "bool",
    torch.uint8: "uint8",
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
}
_NAME_TO_TORCH = {v: k for k, v in _TORCH_TO_NAME.items()}


class Batch:
    """A columnar batch: ``batch[name]`` is a tensor (dense field), a list of
    tensors (ragged field) or a list of objects; ``batch.batch_size`` is a
    ``torch.Size``. Accepts the same constructor as ``TensorDict``."""

    def __init__(self, source: Mapping[str, Any] | None = None, batch_size: Any = None):
        self._data: dict[str, Any] = dict(source or {})
        if batch_size is None:
            n = None
            for v in self._data.values():
                n = len(v)
                break
            batch_size = [n or 0]
        elif isinstance(batch_size, int):
            batch_size = [batch_size]
        self.batch_size = torch.Size(list(batch_size))
        for k, v in self._data.items():
            if _length(v, f"field '{k}'") != self.batch_size[0]:
                raise InvalidArgumentError(
                    f"field '{k}' has {_length(v)} samples but batch_size is {self.batch_size[0]}"
                )

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if _length(value) != self.batch_size[0]:
            raise InvalidArgumentError(
                f"field '{key}' has {_length(value)} samples but batch_size is {self.batch_size[0]}"
            )
        self._data[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return int(self.batch_size[0]) if len(self.batch_size) else 0

    def __iter__(self):
        return iter(self._data)

    def keys(self):
        return self._data.keys()

    def items(self):
        return self._data.items()

    def values(self):
        return self._data.values()

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def size(self, dim: int | None = None):
        return self.batch_size if dim is None else self.batch_size[dim]

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        parts = []
        for k, v in self._data.items():
            if isinstance(v, torch.Tensor):
                parts.append(f"    {k}: Tensor(shape={tuple(v.shape)}, dtype={v.dtype})")
            elif v and isinstance(v[0], torch.Tensor):
                parts.append(f"    {k}: [ragged {len(v)} x Tensor(dtype={v[0].dtype})]")
            else:
                parts.append(f"    {k}: {v!r}")
        body = ",\n".join(parts)
        return f"Batch(\n  fields={{\n{body}}},\n  batch_size={self.batch_size})"


# Where tensordict is missing, ``TensorDict`` is our Batch (same constructor).
TensorDict = _RealTensorDict if _RealTensorDict is not None else Batch


def _length(v: Any, name: str = "") -> int:
    if isinstance(v, (torch.Tensor, np.ndarray)):
        if v.ndim == 0:
            raise InvalidArgumentError("a field must have a batch dimension; got a 0-d value")
        return int(v.size(0) if isinstance(v, torch.Tensor) else v.shape[0])  # nested tensors have no .shape
    if isinstance(v, (list, tuple)):
        return len(v)
    raise DTypeError(
        f"{name + ': ' if name else ''}unsupported value of type {type(v).__name__} "
        "(expected a tensor, a numpy array or a list with one entry per sample)"
    )


def _dtype_name(t: torch.Tensor) -> str:
    try:
        return _TORCH_TO_NAME[t.dtype]
    except KeyError:
        raise DTypeError(f"unsupported tensor dtype {t.dtype}") from None


def _as_cpu_tensor(v: Any) -> torch.Tensor:
    """A contiguous CPU tensor with v's values; v itself when it already is
    one. The C++ side reads its memory in place (data_ptr), so no detach()
    or numpy view is needed: torch calls that give up the GIL (detach, view)
    cost a GIL handoff per tensor, up to a switch interval each next to a
    busy Python thread."""
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            raise DTypeError("numpy object arrays are not tensors; pass a list")
        v = torch.from_numpy(np.ascontiguousarray(v))
    if v.device.type != "cpu":
        v = v.cpu()  # device tensors are staged through host memory
    if v.layout is not torch.strided:
        raise DTypeError(f"unsupported tensor layout {v.layout} (convert it with .to_dense())")
    return v if v.is_contiguous() else v.contiguous()  # contiguous() copies, only where needed


def _tensor_field(name: str, t: torch.Tensor, n: int):
    if getattr(t, "is_nested", False):
        return _list_field(name, list(t.unbind()), n)
    t = _as_cpu_tensor(t)
    if t.ndim == 0 or t.shape[0] != n:
        raise InvalidArgumentError(
            f"field '{name}' has leading dimension {tuple(t.shape)[:1]} but the batch size is {n}"
        )
    return ("dense", name, t, _dtype_name(t), tuple(t.shape))


def _list_field(name: str, values: list, n: int):
    if len(values) != n:
        raise InvalidArgumentError(f"field '{name}' has {len(values)} samples but the batch size is {n}")
    if values and all(isinstance(v, (torch.Tensor, np.ndarray)) and getattr(v, "dtype", None) != object
                      for v in values):
        ts = [_as_cpu_tensor(v) for v in values]
        names = {_dtype_name(t) for t in ts}
        if len(names) != 1:
            raise DTypeError(f"field '{name}' mixes dtypes {sorted(names)}")
        return ("ragged", name, ts, names.pop(), [tuple(t.shape) for t in ts])
    blobs, kinds = [], []
    for v in values:
        if isinstance(v, str):
            blobs.append(v.encode("utf-8"))
            kinds.append(KIND_STRING)
        elif isinstance(v, (bytes, bytearray, memoryview)):
            blobs.append(bytes(v))
            kinds.append(KIND_BYTES)
        else:
            blobs.append(pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL))
            kinds.append(KIND_PICKLE)
    return ("objects", name, blobs, kinds)


def _items_of(data: Any) -> tuple[int, Iterable[tuple[str, Any]]]:
    if _RealTensorDict is not None and isinstance(data, _RealTensorDict):
        n = int(data.batch_size[0]) if len(data.batch_size) else None
        items = []
        for k in data.keys():
            v = data.get(k)
            if not isinstance(v, torch.Tensor):  # NonTensorData / NonTensorStack
                v = v.tolist() if hasattr(v, "tolist") else list(v)
            items.append((k, v))
        return n, items
    if isinstance(data, Batch):
        return len(data), list(data.items())
    if isinstance(data, Mapping):
        items = list(data.items())
        n = _length(items[0][1], f"field '{items[0][0]}'") if items else 0
        return n, items
    raise DTypeError(
        f"put expects a TensorDict, a Batch or a dict of tensors/lists, got {type(data).__name__}"
    )


def to_fields(data: Any) -> tuple[int, list]:
    """User data -> (batch_size, field tuples for the C++ core)."""
    n, items = _items_of(data)
    if not items:
        raise InvalidArgumentError("put: the data has no fields")
    fields = []
    for name, v in items:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"field names must be strings, got {name!r}")
        if isinstance(v, (torch.Tensor, np.ndarray)):
            fields.append(_tensor_field(name, v if isinstance(v, torch.Tensor) else _as_cpu_tensor(v), n))
        elif isinstance(v, (list, tuple)):
            fields.append(_list_field(name, list(v), n))
        else:
            raise DTypeError(f"field '{name}': unsupported value of type {type(v).__name__}")
    return n, fields


def _to_tensor(arr: np.ndarray, dtype: str, writable: bool = False) -> torch.Tensor:
    if writable and not arr.flags.writeable:
        arr = arr.copy()  # a private copy instead of a copy-on-write view of shared memory
    with warnings.catch_warnings():
        # Views of shared memory are read-only to numpy, copy-on-write to
        # torch (see ds::EnableCopyOnWriteViews); torch warns needlessly.
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(arr)
    if dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    return t


def from_fields(items: list, batch_size: int, nested: bool = False, writable: bool = False) -> Any:
    """C++ core output -> TensorDict (if installed) or Batch. With writable,
    tensors that would view shared memory are private copies instead."""
    out: dict[str, Any] = {}
    for name, form, payload, extra in items:
        if form == "dense":
            out[name] = _to_tensor(payload, extra, writable)
        elif form == "ragged":
            ts = [_to_tensor(a, extra, writable) for a in payload]
            out[name] = torch.nested.nested_tensor(ts) if nested else ts
        else:
            vals = []
            for blob, kind in zip(payload, extra):
                if kind == KIND_STRING:
                    vals.append(blob.decode("utf-8"))
                elif kind == KIND_PICKLE:
                    vals.append(pickle.loads(blob))
                else:
                    vals.append(blob)
            out[name] = vals
    if _RealTensorDict is not None:
        try:
            return _RealTensorDict(out, batch_size=[batch_size])
        except Exception:  # ragged lists that this tensordict cannot hold
            pass
    return Batch(out, batch_size=[batch_size])
