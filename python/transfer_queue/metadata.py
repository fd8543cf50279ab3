"""BatchMeta and KVBatchMeta with the API of upstream TransferQueue 0.1.11.

``BatchMeta`` describes a batch of samples (no payload): their global
indexes, partitions, a per-field schema, a per-sample production status,
per-sample custom metadata and batch-level ``extra_info``. It is a plain
Python object (picklable, so it travels through Ray); see
docs/upstream_api.md section 1.4 for the contract it reproduces.

Privately, a meta returned by the C++ client also carries that client's
native ``_tqds.BatchMeta`` (``_native``), aligned sample for sample. It
holds what the core needs and upstream's meta has no room for: each
sample's allocation generation (storage keys include it) and each field's
per-sample size. Python operations that select, reorder, split or join
samples apply the same operation to the native, so ``_to_native()`` always
hands the core the samples the user sees. A meta built by the user from
lists has no native; it converts through ``_tqds.BatchMeta.build``.

Derived data (the schema, the production status, the custom metadata) is
read from the native lazily, on first use, and cached: wrapping a 10k-sample
meta costs nothing until someone looks.

Not thread-safe: like a list, a BatchMeta is owned by one thread at a time.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import operator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterator

import numpy as np
import torch
from tensordict import TensorDict

import _tqds

__all__ = ["BatchMeta", "KVBatchMeta", "extract_field_schema"]

logger = logging.getLogger(__name__)

# FieldKind values of the C++ core (include/tq/types.h; wire-stable).
_KIND_TENSOR = 0

_DTYPES = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def _same_value(a: Any, b: Any) -> bool:
    """Equality for extra_info values: tensors and arrays compare by content,
    values of different types never match, a comparison that raises is a
    mismatch."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    try:
        return bool(a == b)
    except Exception:
        return False


def _merge_extra_info(infos: list[dict], owner: str) -> dict:
    """One dict holding every key of `infos`; a key whose values differ
    raises ValueError naming `owner`."""
    merged: dict = {}
    for i, info in enumerate(infos):
        for key, value in info.items():
            if key not in merged:
                merged[key] = value
            elif not _same_value(merged[key], value):
                raise ValueError(
                    f"{owner}.concat: extra_info key '{key}' has conflicting values across chunks "
                    f"(first {merged[key]!r}, chunk[{i}] {value!r})"
                )
    if any(set(info) != set(infos[0]) for info in infos[1:]):
        logger.warning("%s.concat: the chunks' extra_info keys differ; the result holds all of them", owner)
    return merged


_UNSET = object()
_ATOMIC = (int, float, str, bytes, bool, type(None), torch.dtype)


def _copy_shape(shape: Any) -> Any:
    """Shapes are tuples or torch.Size (immutable): shared, not copied."""
    return shape if isinstance(shape, tuple) else copy.deepcopy(shape)


def _copy_dict(d: dict) -> dict:
    """A deep copy of a custom-meta dict; a shallow one suffices (and is far
    cheaper) when every value is immutable."""
    if all(isinstance(v, _ATOMIC) for v in d.values()):
        return dict(d)
    return copy.deepcopy(d)


def _copy_schema(schema: dict, positions: list[int] | None = None) -> dict:
    """A deep copy of a field schema; with `positions`, each nested field's
    per_sample_shapes keeps those samples only. Immutable values (dtypes,
    shapes) are shared."""
    out = {}
    for name, entry in schema.items():
        e = {k: v if isinstance(v, _ATOMIC + (tuple,)) else copy.deepcopy(v) for k, v in entry.items()
             if k != "per_sample_shapes"}
        shapes = entry.get("per_sample_shapes", _UNSET)
        if shapes is not _UNSET:
            if shapes is not None and positions is not None:
                shapes = [shapes[i] for i in positions]
            e["per_sample_shapes"] = None if shapes is None else [_copy_shape(x) for x in shapes]
        out[name] = e
    return out


def _split_sizes(total: int, chunks: int) -> list[int]:
    """`chunks` sizes adding up to `total`; the first `total % chunks` get one more."""
    base, extra = divmod(total, chunks)
    if total < chunks:
        logger.warning("chunk(%d) of a batch of %d samples: some chunks are empty", chunks, total)
    return [base + 1 if i < extra else base for i in range(chunks)]


# --------------------------------------------------------------------------- per-sample views

class _SampleView:
    """Read-only view of one sample of a BatchMeta (mappings are
    MappingProxyType, so writes raise TypeError)."""

    __slots__ = ("_meta", "_pos")

    def __init__(self, meta: "BatchMeta", pos: int) -> None:
        self._meta = meta
        self._pos = pos

    @property
    def global_index(self) -> int:
        return self._meta.global_indexes[self._pos]

    @property
    def partition_id(self) -> str:
        return self._meta.partition_ids[self._pos]

    @property
    def production_status(self) -> int:
        return int(self._meta.production_status[self._pos])

    @property
    def custom_meta(self) -> MappingProxyType:
        return MappingProxyType(self._meta.custom_meta[self._pos])

    @property
    def fields(self) -> MappingProxyType:
        """Each field's schema for this sample: a nested field's
        ``per_sample_shapes`` is replaced by this sample's ``shape``."""
        out = {}
        for name, entry in self._meta.field_schema.items():
            shapes = entry.get("per_sample_shapes")
            if shapes is None:
                view = dict(entry)
            else:
                view = {k: v for k, v in entry.items() if k != "per_sample_shapes"}
                view["shape"] = shapes[self._pos]
            out[name] = MappingProxyType(view)
        return MappingProxyType(out)

    def __repr__(self) -> str:
        return (f"_SampleView(global_index={self.global_index}, partition_id={self.partition_id!r}, "
                f"production_status={self.production_status}, fields={list(self._meta.field_schema)})")


class _SampleViewList:
    """``BatchMeta.samples``: indexable, sized and iterable; views are made on demand."""

    __slots__ = ("_meta",)

    def __init__(self, meta: "BatchMeta") -> None:
        self._meta = meta

    def __len__(self) -> int:
        return self._meta.size

    def __getitem__(self, pos: int) -> _SampleView:
        return _SampleView(self._meta, pos)

    def __iter__(self) -> Iterator[_SampleView]:
        return (_SampleView(self._meta, i) for i in range(self._meta.size))


# --------------------------------------------------------------------------- schemas

def extract_field_schema(data: TensorDict) -> dict[str, dict[str, Any]]:
    """The field schema of a TensorDict's batch, as upstream records it on a put.

    Per field: ``dtype`` (a torch.dtype, None for non-tensors), ``shape`` (one
    sample's torch.Size; a 1-D field records ``(1,)``; None for non-tensors),
    ``is_nested``, ``is_non_tensor`` and, for nested tensors,
    ``per_sample_shapes`` (one tuple per sample). A field whose length is not
    the batch size raises ValueError. An empty batch gives ``{}``.
    """
    n = data.batch_size[0]
    if n == 0:
        logger.warning("extract_field_schema: the batch is empty; no schema")
        return {}
    schema: dict[str, dict[str, Any]] = {}
    for name, value in data.items():
        is_tensor = isinstance(value, torch.Tensor)
        nested = is_tensor and value.is_nested
        if nested:
            parts = value.unbind()
            got = len(parts)
        elif is_tensor:
            got = value.shape[0]
        else:
            got = len(value)
        if got != n:
            raise ValueError(f"Inconsistent batch dimension for field '{name}': expected {n} samples, got {got}")
        entry: dict[str, Any]
        if nested:
            entry = {"dtype": parts[0].dtype, "shape": parts[0].shape, "is_nested": True, "is_non_tensor": False,
                     "per_sample_shapes": [tuple(p.shape) for p in parts]}
        elif is_tensor:
            sample_shape = value.shape[1:] if value.dim() > 1 else torch.Size([1])
            entry = {"dtype": value.dtype, "shape": sample_shape, "is_nested": False, "is_non_tensor": False}
        else:
            entry = {"dtype": None, "shape": None, "is_nested": False, "is_non_tensor": True}
        schema[name] = entry
    return schema


def _upstream_shape(shape: tuple) -> tuple:
    """Upstream records a 0-d sample (a 1-D field) as shape (1,)."""
    return tuple(shape) if len(shape) else (1,)


def _native_sample_shapes(native: Any, names: list[str]) -> dict[str, list]:
    """Per field of `names`, each sample's shape, or None where the sample
    has not produced the field. Uses ``native.field_shapes(name)`` where the
    binding has it; otherwise one native call per sample."""
    if hasattr(native, "field_shapes"):
        return {name: [None if s is None else tuple(s) for s in native.field_shapes(name)] for name in names}
    cols: dict[str, list] = {name: [] for name in names}
    for i in range(native.size):
        one = native.select_samples([i]).field_schema
        for name in names:
            entry = one[name]
            cols[name].append(tuple(entry["shape"]) if entry["produced"] else None)
    return cols


def _schema_and_status_from_native(native: Any) -> tuple[dict, np.ndarray]:
    """Upstream's field_schema (plus our keys ``kind``, ``ragged`` and
    ``produced``) and the production status (1 where the sample produced
    every field of the meta; 0 everywhere for a meta without fields)."""
    summary = native.field_schema
    n = native.size
    # Per-sample shapes are needed for ragged tensor fields (per_sample_shapes)
    # and for fields some samples have not produced (the status).
    need = [name for name, s in summary.items()
            if not s["produced"] or (s["ragged"] and s["kind"] == _KIND_TENSOR)]
    shapes = _native_sample_shapes(native, need) if need and n else {}
    schema: dict[str, dict[str, Any]] = {}
    for name, s in summary.items():
        col = shapes.get(name)
        any_produced = s["produced"] or (col is not None and any(x is not None for x in col))
        extra = {"kind": s["kind"], "ragged": s["ragged"], "produced": s["produced"]}
        if not any_produced:
            entry = {"dtype": None, "shape": None, "is_nested": False, "is_non_tensor": False}
        elif s["kind"] != _KIND_TENSOR:
            entry = {"dtype": None, "shape": None, "is_nested": False, "is_non_tensor": True}
        else:
            dtype = _DTYPES.get(s["dtype"])
            distinct = {x for x in col if x is not None} if col is not None else {tuple(s["shape"])}
            if len(distinct) > 1:
                entry = {"dtype": dtype, "shape": None, "is_nested": True, "is_non_tensor": False,
                         "per_sample_shapes": [None if x is None else _upstream_shape(x) for x in col]}
            else:
                entry = {"dtype": dtype, "shape": torch.Size(_upstream_shape(next(iter(distinct)))),
                         "is_nested": False, "is_non_tensor": False}
        entry.update(extra)
        schema[name] = entry
    if not summary:
        status = np.zeros(n, dtype=np.int8)
    elif all(s["produced"] for s in summary.values()):
        status = np.ones(n, dtype=np.int8)
    else:
        ready = np.ones(n, dtype=bool)
        for name, col in shapes.items():
            if not summary[name]["produced"]:
                ready &= np.fromiter((x is not None for x in col), dtype=bool, count=n)
        status = ready.astype(np.int8)
    return schema, status


# --------------------------------------------------------------------------- BatchMeta


class BatchMeta:
    """Metadata of a batch of samples (upstream TransferQueue 0.1.11's BatchMeta).

    Public attributes: ``global_indexes``, ``partition_ids`` (lists),
    ``field_schema`` ({field: {dtype, shape, is_nested, is_non_tensor[,
    per_sample_shapes]}}), ``production_status`` (np.int8 array, 1 = ready),
    ``extra_info`` (batch-level dict) and ``custom_meta`` (one dict per sample).
    """

    __slots__ = (
        "_gidx", "_pids", "_schema", "_status", "extra_info", "_custom", "_custom_backend_meta",
        "_field_names", "_native", "_gens",
    )

    def __init__(
        self,
        global_indexes: list[int] | None = None,
        partition_ids: list[str] | None = None,
        field_schema: dict[str, dict[str, Any]] | None = None,
        production_status: np.ndarray | None = None,
        extra_info: dict[str, Any] | None = None,
        custom_meta: list[dict[str, Any]] | None = None,
        _custom_backend_meta: list[dict[str, Any]] | None = None,
    ) -> None:
        self._gidx = list(global_indexes or [])
        self._pids = list(partition_ids or [])
        self._schema = {k: dict(v) for k, v in (field_schema or {}).items()}
        self.extra_info = dict(extra_info or {})
        self._native = None
        self._gens = None
        n = len(self._gidx)
        if len(self._pids) != n:
            raise ValueError(f"Length mismatch: global_indexes has {n}, partition_ids has {len(self._pids)}")
        if production_status is None:
            self._status = np.zeros(n, dtype=np.int8)
        else:
            self._status = np.array(production_status, dtype=np.int8, copy=True)
            if len(self._status) != n:
                raise ValueError(f"production_status length {len(self._status)} != batch_size {n}")
        for name, entry in self._schema.items():
            shapes = entry.get("per_sample_shapes")
            if shapes is not None and len(shapes) != n:
                raise ValueError(f"Field '{name}' per_sample_shapes length {len(shapes)} != batch_size {n}")
        self._field_names = sorted(self._schema)
        self._custom = self._per_sample_dicts(custom_meta, n, "custom_meta")
        self._custom_backend_meta = self._per_sample_dicts(_custom_backend_meta, n, "_custom_backend_meta")

    @staticmethod
    def _per_sample_dicts(values: list | None, n: int, what: str) -> list[dict]:
        if not values:
            return [{} for _ in range(n)]
        out = [dict(d) for d in values]
        if len(out) != n:
            raise ValueError(f"{what} length {len(out)} != batch_size {n}")
        return out

    @classmethod
    def _assemble(cls, gidx: list, pids: list, schema: dict, status: np.ndarray, extra_info: dict,
                  custom: list, backend: list, native: Any = None, gens: list | None = None) -> "BatchMeta":
        """A meta over these (already private, consistent) values: no copies, no checks."""
        self = cls.__new__(cls)
        self._gidx, self._pids, self._schema, self._status = gidx, pids, schema, status
        self.extra_info, self._custom, self._custom_backend_meta = extra_info, custom, backend
        self._field_names = sorted(schema)
        self._native, self._gens = native, gens
        return self

    # ------------------------------------------------------------ native link (private)

    @classmethod
    def _from_native(cls, native: Any, production_status: Any = None) -> "BatchMeta":
        """Wraps a ``_tqds.BatchMeta`` from the C++ client. Indexes, schema,
        status and custom meta are read from it on first use. Without
        `production_status`, a sample is ready (1) when it produced every
        field of the meta (0 for a meta without fields)."""
        self = cls.__new__(cls)
        self._native = native
        self._gens = None
        self._gidx = self._pids = self._schema = self._custom = self._custom_backend_meta = None
        self._field_names = None
        self.extra_info = {}
        if production_status is None:
            self._status = None
        else:
            self._status = np.array(production_status, dtype=np.int8, copy=True)
            if len(self._status) != native.size:
                raise ValueError(f"production_status length {len(self._status)} != batch_size {native.size}")
        return self

    def _load_from_native(self) -> None:
        schema, status = _schema_and_status_from_native(self._native)
        if self._schema is None:
            self._schema = schema
        if self._status is None:
            self._status = status

    def _to_native(self) -> Any:
        """A ``_tqds.BatchMeta`` of these samples, in this order, holding the
        current custom_meta. Raises NotImplementedError for a user-built meta
        while the extension lacks ``_tqds.BatchMeta.build``."""
        if self._native is not None:
            if self._custom is None:  # never read here: the native's own is current
                return self._native
            native = self._native.select_samples(list(range(self._native.size)))  # a copy; ours stay unchanged
            native.set_custom_meta(self._custom)
            return native
        build = getattr(_tqds.BatchMeta, "build", None)
        if build is None:
            raise NotImplementedError(
                "this BatchMeta was built from lists and the _tqds extension has no BatchMeta.build to convert it; "
                "use a BatchMeta returned by the client (get_meta, put, kv_retrieve_meta)"
            )
        return build(list(self.global_indexes), list(self.partition_ids), self.generations,
                     list(self.field_names), self.custom_meta)

    def _update_from_native(self, native: Any, data: TensorDict | None = None) -> "BatchMeta":
        """After a put into these samples: takes `native` (the put's result,
        same samples in the same order) as this meta's native, sets the
        schemas of its fields (from `data` exactly as upstream's add_fields
        when given, plus our keys) and marks every sample ready. Fields of
        this meta that the put did not write keep their schema. Returns self."""
        same = (self._native.same_indexes(native) if self._gidx is None and self._native is not None
                else list(native.global_indexes) == self.global_indexes)
        if not same:
            raise _tqds.InvalidArgumentError("_update_from_native: the native meta holds other samples")
        new_schema, _ = _schema_and_status_from_native(native)
        if data is not None and data.batch_size[0] > 0:
            for name, entry in extract_field_schema(data).items():
                entry.update({k: v for k, v in new_schema.get(name, {}).items()
                              if k in ("kind", "ragged", "produced")})
                new_schema[name] = entry
        schema = self.field_schema
        schema.update(new_schema)
        self._field_names = sorted(schema)
        self._status = np.ones(self.size, dtype=np.int8)
        self._native = self._native_union(self._native, native, after_put=True)
        self._gens = None
        return self

    @staticmethod
    def _native_union(old: Any, new: Any, after_put: bool = False) -> Any:
        """A native with the fields of both; `new`'s records win for shared
        fields. Two metas of the same samples describe the same stored data,
        so a side holding every field of the other will do, except after a
        put, where `old`'s records of the rewritten fields are stale. Where
        the extension cannot merge two field sets (no
        ``_tqds.BatchMeta.union``), `new` alone."""
        if old is None:
            return new
        old_fields, new_fields = set(old.field_names), set(new.field_names)
        if old_fields <= new_fields:
            return new
        if not new_fields or (new_fields <= old_fields and not after_put):
            return old
        union = getattr(_tqds.BatchMeta, "union", None)
        if union is not None:
            return union(old, new)
        logger.debug("BatchMeta: the native meta cannot hold fields %s next to %s; keeping the newer ones",
                     sorted(old_fields - new_fields), sorted(new_fields))
        return new

    def _take_private(self, positions: list[int]) -> tuple[Any, list | None]:
        """The native and the generations of the samples at `positions`."""
        if self._native is not None:
            return self._native.select_samples(positions), None
        if self._gens is not None:
            return None, [self._gens[i] for i in positions]
        return None, None

    def _with_private(self, native: Any, gens: list | None) -> "BatchMeta":
        self._native = native
        self._gens = gens
        return self

    # ------------------------------------------------------------ attributes

    @property
    def global_indexes(self) -> list[int]:
        if self._gidx is None:
            self._gidx = list(self._native.global_indexes)
        return self._gidx

    @global_indexes.setter
    def global_indexes(self, value: list[int]) -> None:
        self._detach()
        self._gidx = list(value)

    @property
    def partition_ids(self) -> list[str]:
        if self._pids is None:
            self._pids = list(self._native.partition_ids)
        return self._pids

    @partition_ids.setter
    def partition_ids(self, value: list[str]) -> None:
        self._detach()
        self._pids = list(value)

    def _detach(self) -> None:
        """Samples changed by hand: the native no longer matches them. Keep
        what it knew (generations) and drop it."""
        if self._native is not None:
            _ = self.global_indexes, self.partition_ids, self.custom_meta, self.field_schema, self.field_names
            _ = self.production_status
            self._gens = list(self._native.generations)
            self._native = None

    @property
    def field_schema(self) -> dict[str, dict[str, Any]]:
        if self._schema is None:
            self._load_from_native()
        return self._schema

    @field_schema.setter
    def field_schema(self, value: dict[str, dict[str, Any]]) -> None:
        self._schema = value
        self._field_names = sorted(value)

    @property
    def production_status(self) -> np.ndarray:
        if self._status is None:
            self._load_from_native()
        return self._status

    @production_status.setter
    def production_status(self, value: np.ndarray) -> None:
        self._status = value

    @property
    def custom_meta(self) -> list[dict[str, Any]]:
        if self._custom is None:
            self._custom = self._native.get_custom_meta()  # a new list of new dicts
        return self._custom

    @custom_meta.setter
    def custom_meta(self, value: list[dict[str, Any]]) -> None:
        self._custom = value

    @property
    def _backend_meta(self) -> list[dict]:
        if self._custom_backend_meta is None:
            self._custom_backend_meta = [{} for _ in range(self.size)]
        return self._custom_backend_meta

    @property
    def size(self) -> int:
        if self._gidx is None:
            return self._native.size
        return len(self._gidx)

    def __len__(self) -> int:
        return self.size

    @property
    def field_names(self) -> list[str]:
        """Field names, sorted."""
        if self._field_names is None:
            self._field_names = sorted(self._native.field_names) if self._schema is None else sorted(self._schema)
        return self._field_names

    @property
    def generations(self) -> list[int]:
        """Each sample's allocation generation (0 where unknown: a user-built meta)."""
        if self._native is not None:
            return list(self._native.generations)
        if self._gens is not None:
            return list(self._gens)
        return [0] * self.size

    @property
    def samples(self) -> _SampleViewList:
        return _SampleViewList(self)

    @property
    def is_ready(self) -> bool:
        """True when the batch has samples and all of them are ready."""
        return self.size > 0 and bool(np.all(self.production_status == 1))

    def get_dtypes(self, field_name: str) -> list:
        entry = self._entry(field_name)
        return [entry.get("dtype")] * self.size

    def get_shapes(self, field_name: str) -> list:
        entry = self._entry(field_name)
        shapes = entry.get("per_sample_shapes")
        if shapes is not None:
            return list(shapes)
        return [entry.get("shape")] * self.size

    def _entry(self, field_name: str) -> dict:
        try:
            return self.field_schema[field_name]
        except KeyError:
            raise KeyError(f"Field '{field_name}' not found in field_schema") from None

    # ------------------------------------------------------------ extra_info

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return self.extra_info.get(key, default)

    def set_extra_info(self, key: str, value: Any) -> None:
        self.extra_info[key] = value

    def get_all_extra_info(self) -> dict[str, Any]:
        return copy.deepcopy(self.extra_info)

    def update_extra_info(self, info_dict: dict[str, Any]) -> None:
        self.extra_info.update(info_dict)

    def remove_extra_info(self, key: str) -> Any:
        return self.extra_info.pop(key, None)

    def clear_extra_info(self) -> None:
        self.extra_info.clear()

    def has_extra_info(self, key: str) -> bool:
        return key in self.extra_info

    # ------------------------------------------------------------ custom_meta

    def get_all_custom_meta(self) -> list[dict[str, Any]]:
        """A deep copy of every sample's custom metadata."""
        return copy.deepcopy(self.custom_meta)

    def update_custom_meta(self, custom_meta: list[dict[str, Any]] | None) -> None:
        """Merges one dict per sample into that sample's custom metadata."""
        if custom_meta is None:
            return
        if len(custom_meta) != self.size:
            raise ValueError(
                f"The length of custom_meta list {len(custom_meta)} must match the batch size: {self.size}")
        for mine, theirs in zip(self.custom_meta, custom_meta):
            mine.update(theirs)

    def clear_custom_meta(self) -> None:
        self._custom = [{} for _ in range(self.size)]

    def get_custom_meta(self) -> list[dict[str, Any]]:
        """One dict of custom metadata per sample (a copy; the seed's API)."""
        return self.get_all_custom_meta()

    def set_custom_meta(self, values: list[dict[str, Any]]) -> None:
        """Replaces each sample's custom metadata (the seed's API; local until
        the client's set_custom_meta sends it)."""
        values = list(values)
        if len(values) != self.size:
            raise _tqds.InvalidArgumentError(f"set_custom_meta: {len(values)} dicts for {self.size} samples")
        for i, v in enumerate(values):
            if not isinstance(v, dict):
                raise _tqds.DTypeError(f"set_custom_meta: entry {i} is a {type(v).__name__}, not a dict")
        self._custom = [dict(v) for v in values]

    # ------------------------------------------------------------ operations

    def add_fields(self, tensor_dict: TensorDict, set_all_ready: bool = True) -> "BatchMeta":
        """Adds (or replaces) the schemas of `tensor_dict`'s fields, in place;
        with `set_all_ready`, every sample becomes ready. Returns self."""
        n = tensor_dict.batch_size[0]
        if n == 0:
            logger.warning("add_fields: the TensorDict is empty; nothing changes")
            return self
        if n != self.size:
            raise ValueError(f"add_fields batch size mismatch: self.size={self.size} vs tensor_dict={n}")
        schema = self.field_schema
        schema.update(extract_field_schema(tensor_dict))
        if set_all_ready:
            self.production_status[:] = 1
        self._field_names = sorted(schema)
        return self

    def select_samples(self, sample_indices: list[int]) -> "BatchMeta":
        """A new meta of the samples at these positions (ValueError if one is out of range)."""
        n = self.size
        positions = [operator.index(i) for i in sample_indices]
        if any(i < 0 or i >= n for i in positions):
            raise ValueError(f"Sample indices must be in range [0, {n})")
        gidx, pids, custom, backend = self.global_indexes, self.partition_ids, self.custom_meta, self._backend_meta
        return self._assemble(
            [gidx[i] for i in positions], [pids[i] for i in positions],
            _copy_schema(self.field_schema, positions), self.production_status[positions], dict(self.extra_info),
            [_copy_dict(custom[i]) for i in positions], [_copy_dict(backend[i]) for i in positions],
            *self._take_private(positions))

    def select_fields(self, field_names: list[str]) -> "BatchMeta":
        """A new meta with only these fields; names it does not have are ignored."""
        wanted = list(dict.fromkeys(field_names))
        schema = _copy_schema({name: self.field_schema[name] for name in wanted if name in self.field_schema})
        backend = [{f: copy.deepcopy(v) for f, v in m.items() if f.startswith("_") or f in wanted}
                   for m in self._backend_meta]
        native = self._native
        if native is not None:
            have = set(native.field_names)
            native = native.select_fields([name for name in wanted if name in have])
        return self._assemble(
            list(self.global_indexes), list(self.partition_ids), schema, self.production_status.copy(),
            copy.deepcopy(self.extra_info), [_copy_dict(d) for d in self.custom_meta], backend,
            native, None if self._gens is None else list(self._gens))

    def copy(self) -> "BatchMeta":
        """A deep copy (the native is shared: it is never changed in place)."""
        return self._assemble(
            list(self.global_indexes), list(self.partition_ids), _copy_schema(self.field_schema),
            self.production_status.copy(), copy.deepcopy(self.extra_info),
            [_copy_dict(d) for d in self.custom_meta], [_copy_dict(d) for d in self._backend_meta],
            self._native, None if self._gens is None else list(self._gens))

    def __getitem__(self, item: int | slice) -> "BatchMeta":
        if isinstance(item, (int, np.integer)):
            pos = int(item)
            if pos < 0:
                pos += self.size
            if pos < 0 or pos >= self.size:
                raise IndexError("BatchMeta index out of range")
            return self.select_samples([pos])
        if isinstance(item, slice):
            return self.select_samples(list(range(*item.indices(self.size))))
        raise TypeError(f"Indexing with {type(item)} is not supported.")

    def chunk(self, chunks: int) -> list["BatchMeta"]:
        """Exactly `chunks` metas in order; the first ``size % chunks`` hold one more sample."""
        out, start = [], 0
        for k in _split_sizes(self.size, chunks):
            out.append(self.select_samples(list(range(start, start + k))))
            start += k
        return out

    def chunk_by_partition(self) -> list["BatchMeta"]:
        """One meta per partition, in order of first appearance."""
        groups: dict[str, list[int]] = {}
        for pos, pid in enumerate(self.partition_ids):
            groups.setdefault(pid, []).append(pos)
        return [self.select_samples(positions) for positions in groups.values()]

    def union(self, other: "BatchMeta") -> "BatchMeta":
        """A new meta with both metas' fields for the same samples: `other`'s
        schemas and extra_info win, statuses are AND-ed, custom meta merged.
        An empty side gives a copy of the other."""
        if not other or other.size == 0:
            return self.copy()
        if self.size == 0:
            return other.copy()
        if self.global_indexes != other.global_indexes:
            raise ValueError(f"BatchMeta.union: global_indexes do not match. "
                             f"self.global_indexes={self.global_indexes}, other.global_indexes={other.global_indexes}")
        if self.partition_ids != other.partition_ids:
            raise ValueError(f"BatchMeta.union: partition_ids do not match. "
                             f"self.partition_ids={self.partition_ids}, other.partition_ids={other.partition_ids}")
        schema = _copy_schema(self.field_schema)
        schema.update(_copy_schema(other.field_schema))
        custom = [{**_copy_dict(a), **_copy_dict(b)} for a, b in zip(self.custom_meta, other.custom_meta)]
        backend = [{**_copy_dict(a), **_copy_dict(b)} for a, b in zip(self._backend_meta, other._backend_meta)]
        gens = self._gens if self._gens is not None else other._gens
        return self._assemble(
            list(self.global_indexes), list(self.partition_ids), schema,
            np.bitwise_and(self.production_status, other.production_status), {**self.extra_info, **other.extra_info},
            custom, backend, self._native_union(self._native, other._native),
            None if gens is None else list(gens))

    @classmethod
    def concat(cls, data: list["BatchMeta"], validate: bool = True) -> "BatchMeta":
        """One meta of all samples of `data`, in order; empty metas are skipped.
        With `validate`, differing field names or dtypes raise ValueError;
        differing extra_info values always do. A field nested in any part is
        nested in the result."""
        parts = [m for m in data if m and m.size > 0]
        if not parts:
            logger.warning("BatchMeta.concat: nothing to concatenate; returning an empty BatchMeta")
            return cls.empty()
        if validate:
            base = parts[0].field_names
            for i, m in enumerate(parts):
                if m.field_names != base:
                    raise ValueError(
                        f"BatchMeta.concat: field_names mismatch at chunk[{i}]. Expected {base}, got {m.field_names}. "
                        f"Extra in chunk: {set(m.field_names) - set(base)}, "
                        f"Missing from chunk: {set(base) - set(m.field_names)}")
            for name in base:
                dtype = parts[0].field_schema.get(name, {}).get("dtype")
                for i, m in enumerate(parts[1:], start=1):
                    other = m.field_schema.get(name, {}).get("dtype")
                    if other != dtype:
                        raise ValueError(f"Field '{name}' dtype mismatch in concat: chunk[0]={dtype}, "
                                         f"chunk[{i}]={other}")
        schema = {}
        for name, first in parts[0].field_schema.items():
            entries = [m.field_schema.get(name, {}) for m in parts]
            nested = any(e.get("is_nested", False) for e in entries)
            entry = {"dtype": first.get("dtype"), "shape": None if nested else first.get("shape"),
                     "is_nested": nested, "is_non_tensor": first.get("is_non_tensor", False)}
            if nested or any(e.get("per_sample_shapes") for e in entries):
                shapes: list = []
                for m, e in zip(parts, entries):
                    shapes.extend(e.get("per_sample_shapes") or [e.get("shape")] * m.size)
                entry["per_sample_shapes"] = shapes
            if "kind" in first:  # ours, from the native
                entry.update(kind=first["kind"], ragged=nested or any(e.get("ragged", False) for e in entries),
                             produced=all(e.get("produced", False) for e in entries))
            schema[name] = entry
        out = cls._assemble(
            list(itertools.chain.from_iterable(m.global_indexes for m in parts)),
            list(itertools.chain.from_iterable(m.partition_ids for m in parts)),
            schema,
            np.concatenate([m.production_status for m in parts]),
            _merge_extra_info([m.extra_info for m in parts], "BatchMeta"),
            [dict(d) for m in parts for d in m.custom_meta],
            [dict(d) for m in parts for d in m._backend_meta],
        )
        if all(m._native is not None for m in parts):
            return out._with_private(_tqds.BatchMeta.concat([m._native for m in parts]), None)
        if any(m._native is not None for m in parts) and hasattr(_tqds.BatchMeta, "build"):
            return out._with_private(_tqds.BatchMeta.concat([m._to_native() for m in parts]), None)
        if any(m._native is not None or m._gens is not None for m in parts):
            return out._with_private(None, list(itertools.chain.from_iterable(m.generations for m in parts)))
        return out

    def reorder(self, indices: list[int]) -> None:
        """Puts the samples in the order of `indices` (positions), in place."""
        n = self.size
        if len(indices) != n:
            raise ValueError(f"Indices length {len(indices)} mismatch batch size {n}")
        positions = [operator.index(i) for i in indices]
        if len(set(positions)) != n:
            raise ValueError("Indices contain duplicates")
        if any(i < 0 or i >= n for i in positions):
            raise ValueError(f"Reorder indices must be in range [0, {n})")
        gidx, pids, custom, backend = self.global_indexes, self.partition_ids, self.custom_meta, self._backend_meta
        schema, status = self.field_schema, self.production_status
        self._gidx = [gidx[i] for i in positions]
        self._pids = [pids[i] for i in positions]
        self._status = status[positions]
        for entry in schema.values():
            if entry.get("per_sample_shapes") is not None:
                entry["per_sample_shapes"] = [entry["per_sample_shapes"][i] for i in positions]
        self._custom = [custom[i] for i in positions]
        self._custom_backend_meta = [backend[i] for i in positions]
        self._native, self._gens = self._take_private(positions)

    @classmethod
    def empty(cls, extra_info: dict[str, Any] | None = None) -> "BatchMeta":
        return cls(global_indexes=[], partition_ids=[], extra_info=extra_info)

    # ------------------------------------------------------------ protocol

    def __eq__(self, other: object) -> bool:
        """Same samples (indexes, partitions, generations), fields, schemas,
        statuses, custom meta and extra_info."""
        if not isinstance(other, BatchMeta):
            return NotImplemented
        if self is other:
            return True
        return (self.size == other.size
                and self.global_indexes == other.global_indexes
                and self.partition_ids == other.partition_ids
                and self.generations == other.generations
                and self.field_names == other.field_names
                and self.field_schema == other.field_schema
                and np.array_equal(self.production_status, other.production_status)
                and self.custom_meta == other.custom_meta
                and self.extra_info.keys() == other.extra_info.keys()
                and all(_same_value(v, other.extra_info[k]) for k, v in self.extra_info.items()))

    __hash__ = None  # mutable

    def __getstate__(self) -> dict:
        return {slot: getattr(self, slot) for slot in self.__slots__}

    def __setstate__(self, state: dict) -> None:
        for slot in self.__slots__:
            value = state.get(slot)
            if slot == "_status" and isinstance(value, np.ndarray) and not value.flags.writeable:
                value = value.copy()  # Ray's zero-copy arrays are read-only
            setattr(self, slot, value)
        if self.extra_info is None:
            self.extra_info = {}

    def __str__(self) -> str:
        return (f"BatchMeta(size={self.size}, field_names={self.field_names}, is_ready={self.is_ready}, "
                f"global_indexes={self.global_indexes}, extra_info={self.extra_info})")

    def __repr__(self) -> str:
        shown = self.global_indexes[:8]
        more = ", ..." if self.size > 8 else ""
        return (f"BatchMeta(size={self.size}, field_names={self.field_names}, "
                f"global_indexes=[{', '.join(map(str, shown))}{more}])")


# --------------------------------------------------------------------------- KVBatchMeta

@dataclass
class KVBatchMeta:
    """Metadata of a batch addressed by keys (upstream's KV interface)."""

    keys: list[str] = dataclasses.field(default_factory=list)
    tags: list[dict] = dataclasses.field(default_factory=list)
    partition_id: str | None = None
    fields: list[str] | None = None
    extra_info: dict[str, Any] | None = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.tags):
            raise ValueError(f"keys and tags must have same length, but got {len(self.keys)} and {len(self.tags)}")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("Got duplicated keys.")
        if self.fields is not None and len(set(self.fields)) != len(self.fields):
            raise ValueError("Got duplicated fields.")
        self.tags = copy.deepcopy(self.tags)  # chunks and concatenations never share tag dicts
        self.extra_info = copy.deepcopy(self.extra_info)

    def __getattr__(self, name: str) -> Any:
        # A meta made by kv_batch_put for keys without tags gets its list of
        # empty tag dicts when first read (16384 keys: 0.45 ms saved a put);
        # setdefault: two threads reading it at once get the same list.
        if name == "tags" and "keys" in self.__dict__:
            return self.__dict__.setdefault("tags", [{} for _ in self.keys])
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __getstate__(self) -> dict:
        # Pickled with its tags, as any other meta (a reader of another
        # build needs no lazy attribute).
        self.tags  # noqa: B018  (made if not yet)
        return self.__dict__

    @property
    def size(self) -> int:
        return len(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __str__(self) -> str:
        return f"KVBatchMeta(size={self.size}, field_names={self.fields}, extra_info={self.extra_info})"

    def select_keys(self, keys_to_select: list[str]) -> "KVBatchMeta":
        """A new meta of these keys, in this order."""
        if len(set(keys_to_select)) != len(keys_to_select):
            raise ValueError("Contain duplicate keys.")
        missing = set(keys_to_select) - set(self.keys)
        if missing:
            raise RuntimeError(f"Keys {missing} not found in current batch.")
        where = {k: i for i, k in enumerate(self.keys)}
        return KVBatchMeta(keys=list(keys_to_select), tags=[self.tags[where[k]] for k in keys_to_select],
                           partition_id=self.partition_id, fields=self.fields, extra_info=self.extra_info)

    def reorder(self, indexes: list[int]) -> None:
        """Puts the keys in the order of `indexes` (positions), in place."""
        if len(indexes) != self.size:
            raise ValueError(f"Attempted to reorder with indexes length {len(indexes)} that does not match "
                             f"the batch size {self.size}.")
        if len(set(indexes)) != len(indexes):
            raise ValueError("Contain duplicate indexes.")
        self.keys = [self.keys[i] for i in indexes]
        self.tags = [self.tags[i] for i in indexes]

    def chunk(self, chunks: int) -> list["KVBatchMeta"]:
        """Exactly `chunks` metas in order; the first ``size % chunks`` hold one more key."""
        out, start = [], 0
        for k in _split_sizes(self.size, chunks):
            out.append(KVBatchMeta(keys=self.keys[start:start + k], tags=self.tags[start:start + k],
                                   partition_id=self.partition_id, fields=self.fields, extra_info=self.extra_info))
            start += k
        return out

    @classmethod
    def concat(cls, data: list["KVBatchMeta"]) -> "KVBatchMeta":
        """One meta of all keys of `data`, in order; empty metas are skipped.
        Differing fields, partitions or extra_info values raise ValueError."""
        parts = [m for m in (data or []) if m and m.size > 0]
        if not parts:
            logger.warning("KVBatchMeta.concat: nothing to concatenate; returning an empty KVBatchMeta")
            return cls()
        fields, partition = parts[0].fields, parts[0].partition_id
        base = set(fields) if fields is not None else set()
        for m in parts:
            if m.fields is not None and set(m.fields) != base:
                raise ValueError("Field names do not match for concatenation.")
            if m.partition_id != partition:
                raise ValueError("Partition do not match for concatenation.")
        infos = [m.extra_info or {} for m in parts]
        extra = _merge_extra_info(infos, "KVBatchMeta") if any(infos) else {}
        return cls(keys=list(itertools.chain.from_iterable(m.keys for m in parts)),
                   tags=list(itertools.chain.from_iterable(m.tags for m in parts)),
                   partition_id=partition, fields=fields, extra_info=extra or None)
