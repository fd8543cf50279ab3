"""The key-value API of upstream TransferQueue (0.1.10+): samples named by
keys the caller chooses, per partition.

    import transfer_queue as tq
    tq.init()
    tq.kv_batch_put(keys=["a", "b"], partition_id="train", fields=td, tags=[{"score": 1}, {"score": 2}])
    td = tq.kv_batch_get(keys=["b"], partition_id="train", select_fields="input_ids")
    tq.kv_clear(keys="a", partition_id="train")

The key map lives in the controller, so every process of the job sees the
same keys. A key's sample is an ordinary sample: ``get_meta`` returns it and
production / consumption status cover it. Tags are the sample's custom
metadata (any picklable values). Clearing a key frees its sample at once;
clearing twice is a no-op, and a key put again gets a fresh sample.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable

import torch
from tensordict import NonTensorStack, TensorDict, TensorDictBase

from _tqds import InvalidArgumentError

from .client import ArgumentTypeError, _check_keys
from .interface import get_client
from .metadata import KVBatchMeta


def _single_row(fields: Any) -> Any:
    """kv_put's ``fields``: a TensorDict as given, or a dict whose tensors
    gain a batch dimension of 1 and whose other values become one-row
    NonTensorStacks."""
    if isinstance(fields, TensorDictBase):
        return fields
    if not isinstance(fields, dict):
        raise InvalidArgumentError(f"kv_put: fields must be a dict or TensorDict, got {type(fields).__name__}")
    row = {}
    for name, value in fields.items():
        if isinstance(value, torch.Tensor):
            if value.is_nested:
                raise InvalidArgumentError(
                    f"kv_put: field '{name}' is a nested tensor, which holds a batch; use kv_batch_put")
            row[name] = value.unsqueeze(0)
        else:
            row[name] = NonTensorStack(value)
    return TensorDict(row, batch_size=[1])


def _batch_size(fields: Any) -> int:
    if isinstance(fields, TensorDictBase):
        return int(fields.batch_size[0]) if len(fields.batch_size) else 0
    from .batch import to_fields

    return to_fields(fields)[0]


def kv_put(key: str, partition_id: str, fields: Any = None, tag: dict | None = None,
           data_parser: Callable[[Any], Any] | None = None) -> KVBatchMeta:
    """Writes one sample named ``key``: its ``fields`` (added to the ones it
    has; a field of the same name is overwritten) and/or its ``tag``
    (merged into its tags). Returns the key's KVBatchMeta."""
    if fields is None and tag is None:
        raise InvalidArgumentError("kv_put: give fields, tag or both")
    if not isinstance(key, str):
        raise ArgumentTypeError(f"kv_put: key must be a str, got {type(key).__name__}")
    return kv_batch_put([key], partition_id, None if fields is None else _single_row(fields),
                        None if tag is None else [tag], data_parser)


def kv_batch_put(keys: list, partition_id: str, fields: Any = None, tags: list | None = None,
                 data_parser: Callable[[Any], Any] | None = None) -> KVBatchMeta:
    """Writes one sample per key: row i of ``fields`` (a TensorDict, or a
    dict of columns) and ``tags[i]`` (merged into key i's tags)."""
    if fields is None and tags is None:
        raise InvalidArgumentError("kv_batch_put: give fields, tags or both")
    keys = _check_keys(keys, allow_str=False, items=False)  # each key's type: in the native call
    if fields is not None and _batch_size(fields) != len(keys):
        raise InvalidArgumentError(
            f"kv_batch_put: {len(keys)} keys but fields hold {_batch_size(fields)} rows")
    if tags is not None and len(tags) != len(keys):  # before any key is created
        raise InvalidArgumentError(f"kv_batch_put: {len(keys)} keys but {len(tags)} tags")
    client = get_client()
    if fields is not None and tags is None:
        if data_parser is not None:
            fields = _parsed(fields, data_parser)
        names, stored_tags = client.kv_put_fields(keys, partition_id, fields)
        return _fresh_kv_meta(list(keys), stored_tags, partition_id, names)
    meta = client.kv_retrieve_meta(keys, partition_id, create=True)
    if len(meta) != len(keys):
        raise InvalidArgumentError(f"kv_batch_put: the controller returned {len(meta)} samples for {len(keys)} keys")
    if tags is not None:
        meta.update_custom_meta(tags)
    if fields is not None:
        if data_parser is not None:
            fields = _parsed(fields, data_parser)
        client.put(fields, meta)
    else:
        client.set_custom_meta(meta)
    if tags is not None:  # the caller's tag objects: KVBatchMeta deep-copies them, as upstream
        return KVBatchMeta(keys=list(keys), tags=meta.custom_meta, partition_id=partition_id,
                           fields=list(meta.field_names), extra_info=dict(meta.extra_info or {}))
    return _fresh_kv_meta(list(keys), meta.custom_meta, partition_id, list(meta.field_names))


def _fresh_kv_meta(keys: list, tags: list | None, partition_id: str, fields: list) -> KVBatchMeta:
    """A KVBatchMeta of values made for it alone (read from the controller
    just now; the keys were checked): the checks and deep copies of its
    constructor would only cost time, about 4 ms per 1024 keys. Tags None:
    no key has any (the meta makes its empty tag dicts when they are read)."""
    meta = object.__new__(KVBatchMeta)
    meta.keys, meta.partition_id, meta.fields, meta.extra_info = keys, partition_id, fields, {}
    if tags is not None:
        meta.tags = tags
    return meta


def _parsed(fields: Any, data_parser: Callable[[Any], Any]) -> dict:
    """upstream's data_parser contract: it gets the columns as a plain dict
    (tensor columns batched, nested and non-tensor columns as lists) and
    edits the values in place."""
    columns = {}
    for name in fields.keys():
        v = fields[name]
        if isinstance(v, torch.Tensor) and v.is_nested:
            v = list(v.unbind(0))
        elif isinstance(v, NonTensorStack):
            v = v.tolist()
        columns[name] = v
    data_parser(columns)
    return columns


def kv_batch_get(keys: Any, partition_id: str, select_fields: Any = None) -> TensorDict:
    """The samples of ``keys`` (rows in the order of the keys found; keys not
    found are left out), with ``select_fields`` or else every field all of
    them have. No key found -> ValueError."""
    wanted = None
    if select_fields is not None:
        wanted = [select_fields] if isinstance(select_fields, str) else list(dict.fromkeys(select_fields))
        not_names = [f for f in wanted if not isinstance(f, str)]
        if not_names:  # no key has such a field
            raise InvalidArgumentError(
                f"kv_batch_get: not every selected sample of partition '{partition_id}' has the fields {not_names}")
    # One call: the controller's answer lists the fields every found key
    # has, and only those are read.
    names, found, data = get_client().kv_get(keys, partition_id, wanted)
    if found == 0:
        raise InvalidArgumentError(f"kv_batch_get: keys or partition were not found! (partition '{partition_id}')")
    if data is None:
        # A selected field outside them is missing for some key. Upstream
        # 0.1.11 drops it without an error; we name it.
        missing = [f for f in wanted if f not in names]
        raise InvalidArgumentError(
            f"kv_batch_get: not every selected sample of partition '{partition_id}' has the fields {missing}")
    if not names:  # the found keys share no field (whatever was selected)
        raise InvalidArgumentError(
            f"kv_batch_get: not every selected sample of partition '{partition_id}' has the selected fields ([])")
    return data


def kv_batch_get_by_meta(meta: KVBatchMeta, select_fields: Any = None) -> TensorDict:
    """kv_batch_get of the keys and partition of ``meta``; ``select_fields``
    must be among ``meta.fields``."""
    if meta.partition_id is None:
        raise InvalidArgumentError("kv_batch_get_by_meta: meta.partition_id is None")
    if select_fields is None:
        fields = meta.fields
    else:
        fields = [select_fields] if isinstance(select_fields, str) else list(select_fields)
        missing = [f for f in fields if f not in (meta.fields or [])]
        if missing:
            raise InvalidArgumentError(f"kv_batch_get_by_meta: fields {missing} are not in the meta ({meta.fields})")
    return kv_batch_get(meta.keys, meta.partition_id, fields)


def kv_list(partition_id: str | None = None) -> dict:
    """``{partition: {key: tags}}`` of one partition, or of all with None."""
    return get_client().kv_list(partition_id)


def kv_clear(keys: Any, partition_id: str) -> None:
    """Frees the samples of ``keys`` (keys not found: nothing to do)."""
    get_client().kv_clear_keys(keys, partition_id)


def _async(fn):
    @functools.wraps(fn)
    async def twin(*args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

    twin.__name__ = twin.__qualname__ = f"async_{fn.__name__}"
    return twin


async_kv_put = _async(kv_put)
async_kv_batch_put = _async(kv_batch_put)
async_kv_batch_get = _async(kv_batch_get)
async_kv_batch_get_by_meta = _async(kv_batch_get_by_meta)
async_kv_list = _async(kv_list)
async_kv_clear = _async(kv_clear)
