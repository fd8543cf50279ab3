"""Conversions between user data and the C++ core's field tuples.

put: a ``tensordict.TensorDict`` (dense tensors, jagged or strided nested
tensors, NonTensorData / NonTensorStack leaves) or a plain dict of tensors,
numpy arrays and lists -> field tuples. Every field is converted and checked
before the core sees any of them, so a put that fails here writes nothing.

get_data: the core's output -> a ``tensordict.TensorDict``: uniform tensor
fields as dense tensors, ragged ones as jagged nested tensors (strided
nested where the samples differ in more than one dimension), everything
else (strings, bytes, other objects, tensors of different ranks or dtypes)
as a NonTensorStack.
"""

from __future__ import annotations

import itertools
import pickle
import warnings
from typing import Any, Mapping

import numpy as np
import torch
from tensordict import LazyStackedTensorDict, NonTensorData, NonTensorStack, TensorDict, TensorDictBase

from _tqds import DTypeError, InvalidArgumentError

KIND_TENSOR, KIND_BYTES, KIND_STRING, KIND_PICKLE = 0, 1, 2, 3

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
_SUPPORTED = ", ".join(_TORCH_TO_NAME.values())
_NUMERIC_KINDS = "biuf"  # numpy kinds that become tensors (bool, int, uint, float)


# --------------------------------------------------------------------------- put

def _cpu_tensor(name: str, v: Any, where: str = "") -> torch.Tensor:
    """A contiguous CPU tensor of a supported dtype with v's values (v itself
    when it already is one), or DTypeError naming the field. The C++ side
    reads its memory in place (data_ptr), so no detach() is needed."""
    label = f"field '{name}'{where}"
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in _NUMERIC_KINDS:
            raise DTypeError(f"{label}: numpy dtype {v.dtype} is not a tensor dtype")
        if not v.dtype.isnative:
            v = v.astype(v.dtype.newbyteorder("="))  # torch reads native byte order only
        try:
            v = torch.from_numpy(np.ascontiguousarray(v))
        except (TypeError, ValueError) as e:
            raise DTypeError(f"{label}: numpy dtype {v.dtype} cannot become a tensor ({e})") from None
    if v.is_nested:
        raise DTypeError(f"{label}: a nested tensor cannot be one sample (pass it as the whole field)")
    if v.dtype not in _TORCH_TO_NAME:
        raise DTypeError(f"{label}: dtype {v.dtype} cannot be stored (supported: {_SUPPORTED})")
    if v.layout is not torch.strided:
        raise DTypeError(f"{label}: tensor layout {v.layout} cannot be stored (convert it with .to_dense())")
    if v.device.type != "cpu":
        if v.device.type == "meta":
            raise DTypeError(f"{label}: the tensor is on device 'meta', which holds no data to store")
        try:  # device tensors are staged through host memory
            v = v.cpu()
        except Exception as e:
            raise DTypeError(f"{label}: cannot copy the tensor from device '{v.device}' to the CPU ({e})") from None
    return v if v.is_contiguous() else v.contiguous()  # contiguous() copies, only where needed


def _check_length(name: str, got: int, n: int) -> None:
    if got != n:
        raise InvalidArgumentError(f"field '{name}' has {got} samples but the batch size is {n}")


def _dense_field(name: str, t: torch.Tensor, n: int):
    t = _cpu_tensor(name, t)
    if t.ndim == 0:
        raise InvalidArgumentError(f"field '{name}' must have a batch dimension; got a 0-d tensor")
    _check_length(name, t.shape[0], n)
    return ("dense", name, t, _TORCH_TO_NAME[t.dtype], tuple(t.shape))


def _nested_field(name: str, t: torch.Tensor, n: int):
    _check_length(name, t.size(0), n)
    if t.layout is torch.jagged and getattr(t, "_ragged_idx", 1) == 1 and getattr(t, "_lengths", None) is None:
        # The samples lie back to back in values(): one buffer, each sample
        # a view of it on the C++ side (no per-sample tensors here).
        values = _cpu_tensor(name, t.values())
        lengths = t.offsets().diff().tolist()
        rest = tuple(values.shape[1:])
        return ("jagged", name, values, _TORCH_TO_NAME[values.dtype], [(k,) + rest for k in lengths])
    return _list_field(name, list(t.unbind()), n)


def _list_field(name: str, values: list, n: int):
    _check_length(name, len(values), n)
    if values and all(isinstance(v, torch.Tensor) or (isinstance(v, np.ndarray) and v.dtype.kind in _NUMERIC_KINDS)
                      for v in values):
        ts = [_cpu_tensor(name, v, f" sample {i}") for i, v in enumerate(values)]
        dtypes = {t.dtype for t in ts}
        if len(dtypes) != 1:
            raise DTypeError(f"field '{name}' mixes dtypes {sorted(_TORCH_TO_NAME[d] for d in dtypes)}")
        return ("ragged", name, ts, _TORCH_TO_NAME[ts[0].dtype], [tuple(t.shape) for t in ts])
    blobs, kinds = [], []
    for i, v in enumerate(values):
        if isinstance(v, str):
            blobs.append(v)  # the C++ core stores its UTF-8 bytes, read in place
            kinds.append(KIND_STRING)
        elif isinstance(v, (bytes, bytearray, memoryview)):  # np.bytes_ too
            blobs.append(bytes(v))
            kinds.append(KIND_BYTES)
        else:
            try:
                blobs.append(pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL))
            except Exception as e:
                raise DTypeError(f"field '{name}' sample {i}: a {type(v).__name__} cannot be pickled ({e})") from None
            kinds.append(KIND_PICKLE)
    return ("objects", name, blobs, kinds)


def _array_field(name: str, a: np.ndarray, n: int):
    if a.ndim == 0:
        raise InvalidArgumentError(f"field '{name}' must have a batch dimension; got a 0-d array")
    if a.dtype.kind in _NUMERIC_KINDS:
        return _dense_field(name, _cpu_tensor(name, a), n)
    if a.dtype.kind in "SUO":
        # bytes (S), str (U) and object arrays: one value per element of the
        # batch dimension: bytes, str or the object (a row array for 2-d
        # and up, stored pickled).
        _check_length(name, a.shape[0], n)
        return _list_field(name, a.tolist() if a.ndim == 1 else list(a), n)
    raise DTypeError(f"field '{name}': numpy dtype {a.dtype} cannot be stored "
                     f"(supported: {_SUPPORTED}, bytes, str and object arrays)")


def _field(name: Any, v: Any, n: int):
    if not isinstance(name, str):
        raise InvalidArgumentError(f"field names must be strings, got {name!r}")
    if isinstance(v, torch.Tensor):
        return _nested_field(name, v, n) if v.is_nested else _dense_field(name, v, n)
    if isinstance(v, np.ndarray):
        return _array_field(name, v, n)
    if isinstance(v, NonTensorData):
        data = v.data
        # tensordict wraps a bytes / str / object array as one NonTensorData;
        # its elements are the samples (as upstream TransferQueue stores them).
        if isinstance(data, np.ndarray) and data.ndim >= 1 and data.shape[0] == n:
            return _array_field(name, data, n)
        return _list_field(name, [data] * n, n)  # one value for every sample
    if isinstance(v, NonTensorStack):
        return _list_field(name, v.tolist(), n)
    if isinstance(v, TensorDictBase):
        raise DTypeError(f"field '{name}' is a nested TensorDict; flatten it first (td.flatten_keys())")
    if isinstance(v, (list, tuple)):
        return _list_field(name, list(v), n)
    raise DTypeError(f"field '{name}': unsupported value of type {type(v).__name__} "
                     "(expected a tensor, a numpy array or a list with one entry per sample)")


def _batch_length(name: Any, v: Any) -> int:
    if isinstance(v, torch.Tensor):
        if v.dim() == 0:
            raise InvalidArgumentError(f"field '{name}' must have a batch dimension; got a 0-d tensor")
        return v.size(0)
    if isinstance(v, np.ndarray):
        if v.ndim == 0:
            raise InvalidArgumentError(f"field '{name}' must have a batch dimension; got a 0-d array")
        return v.shape[0]
    if isinstance(v, (list, tuple)):
        return len(v)
    raise DTypeError(f"field '{name}': unsupported value of type {type(v).__name__} "
                     "(expected a tensor, a numpy array or a list with one entry per sample)")


def _leaf(td: TensorDictBase, key: str) -> Any:
    try:
        return td.get(key)
    except RuntimeError:
        # A lazy stack of samples whose tensors differ in shape: one per sample.
        if isinstance(td, LazyStackedTensorDict) and td.stack_dim == 0:
            return td.get(key, as_list=True)
        raise


def to_fields(data: Any) -> tuple[int, list]:
    """User data -> (batch_size, field tuples for the C++ core). Raises
    before returning when any field cannot be stored."""
    if isinstance(data, TensorDictBase):
        if not data.batch_size:
            raise InvalidArgumentError("put: the TensorDict has no batch dimension; "
                                       "create it with batch_size=[n]")
        n = int(data.batch_size[0])
        items = [(k, _leaf(data, k)) for k in data.keys()]
    elif isinstance(data, Mapping):
        items = list(data.items())
        n = _batch_length(*items[0]) if items else 0
    else:
        raise DTypeError(f"put expects a TensorDict or a dict of tensors / arrays / lists, got {type(data).__name__}")
    if not items:
        raise InvalidArgumentError("put: the data has no fields")
    return n, [_field(name, v, n) for name, v in items]


# --------------------------------------------------------------------------- get_data

def _tensor(arr: np.ndarray, dtype: str, writable: bool) -> torch.Tensor:
    """Call with torch's non-writable-array UserWarning silenced (from_fields)."""
    if writable and not arr.flags.writeable:
        arr = arr.copy()  # a private copy instead of a copy-on-write view of shared memory
    t = torch.from_numpy(arr)
    if dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    return t


def _ragged(values: torch.Tensor, shapes: list) -> Any:
    """A ragged field from all its elements in order and the sample shapes."""
    first = shapes[0]
    if first and all(len(s) == len(first) and s[1:] == first[1:] for s in shapes):
        # Samples differ only in their first dimension: a jagged nested
        # tensor whose values are `values` itself (no copy).
        lengths = [s[0] for s in shapes]
        offsets = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int64)
        return torch.nested.nested_tensor_from_jagged(values.view(int(offsets[-1]), *first[1:]), offsets,
                                                      min_seqlen=min(lengths), max_seqlen=max(lengths))
    sizes = [int(np.prod(s)) for s in shapes]
    parts = [p.view(s) for p, s in zip(torch.split(values, sizes), shapes)]
    if all(len(s) == len(first) for s in shapes) and first:
        for layout in (torch.jagged, torch.strided):  # jagged where one dimension other than the first differs
            try:
                return torch.nested.as_nested_tensor(parts, layout=layout)
            except (RuntimeError, TypeError, ValueError):
                pass
    return NonTensorStack(*parts)  # samples of different ranks


def _objects(blobs: list, kinds: list, writable: bool = False) -> list:
    vals = []
    for blob, kind in zip(blobs, kinds):
        if kind == KIND_TENSOR:  # (array, dtype name): a tensor sample among objects
            vals.append(_tensor(blob[0], blob[1], writable))
        elif kind == KIND_PICKLE:
            vals.append(pickle.loads(blob))
        else:  # bytes, or (KIND_STRING) a str the C++ core decoded from storage memory
            vals.append(blob)
    return vals


def from_fields(items: list, batch_size: int, writable: bool = False) -> TensorDict:
    """C++ core output -> TensorDict. With writable, tensors that would view
    shared memory are private copies instead."""
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        # Views of shared memory are read-only to numpy, copy-on-write to
        # torch (see ds::EnableCopyOnWriteViews); torch warns needlessly.
        warnings.simplefilter("ignore", UserWarning)
        for item in items:
            name, form = item[0], item[1]
            if form == "dense":
                out[name] = _tensor(item[2], item[3], writable)
            elif form == "ragged":
                out[name] = _ragged(_tensor(item[2], item[3], writable), item[4])
            elif form == "tensors":  # samples written with different dtypes (by different puts)
                ts = [_tensor(a, d, writable) for a, d in zip(item[2], item[3])]
                if all(t.shape == ts[0].shape for t in ts):
                    out[name] = torch.stack(ts)  # one tensor in the promoted dtype, as upstream returns it
                else:
                    out[name] = NonTensorStack(*ts)
            else:
                out[name] = NonTensorStack(*_objects(item[2], item[3], writable))
    return TensorDict(out, batch_size=[batch_size])
