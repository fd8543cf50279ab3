"""TransferQueueClient with the seed's signatures, over the C++ client."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from tensordict import TensorDict

import _tqds
from _tqds import BatchMeta, InvalidArgumentError

from .batch import from_fields, to_fields
from .controller import ZMQServerInfo


def _address_of(controller_info: Any) -> str:
    if isinstance(controller_info, ZMQServerInfo):
        return controller_info.to_addr("request")
    if isinstance(controller_info, str):
        return controller_info
    try:  # a DictConfig holding ip/ports (e.g. a config merged without allow_objects)
        from omegaconf import DictConfig, OmegaConf

        if isinstance(controller_info, DictConfig):
            controller_info = OmegaConf.to_container(controller_info, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(controller_info, dict) and "ip" in controller_info:
        return f"tcp://{controller_info['ip']}:{controller_info['ports']['request']}"
    raise InvalidArgumentError(
        f"controller_info must be a ZMQServerInfo or 'tcp://host:port', got {type(controller_info).__name__}"
    )


def _config_to_json(config: Any) -> str:
    """OmegaConf DictConfig (allow_objects) or dict -> JSON for the C++ side."""
    if config is None:
        return "{}"
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(config, dict):
        raise InvalidArgumentError(f"config must be a dict or DictConfig, got {type(config).__name__}")

    def default(o: Any) -> Any:
        if isinstance(o, ZMQServerInfo):
            return o.to_addr("request")
        return str(o)

    return json.dumps(config, default=default)


class TransferQueueClient:
    """Puts and gets samples. Thread-safe; blocking calls release the GIL."""

    def __init__(self, client_id: str, controller_info: Any):
        self.client_id = client_id
        self.controller_info = controller_info
        self._client = _tqds.Client(client_id, _address_of(controller_info))

    def initialize_storage_manager(self, manager_type: str, config: Any = None) -> None:
        if not isinstance(manager_type, str):
            raise InvalidArgumentError(f"manager_type must be a string, got {type(manager_type).__name__}")
        self._client.initialize_storage_manager(manager_type, _config_to_json(config))

    def put(self, data: Any, partition_id: str | None = None, metadata: BatchMeta | None = None) -> BatchMeta:
        """Writes `data` as new samples of `partition_id`, or as more fields of
        the samples of `metadata`. Returns their BatchMeta.

        `data` is a ``tensordict.TensorDict`` (dense tensors, jagged or
        strided nested tensors, NonTensorData / NonTensorStack leaves) or a
        dict of tensors, numpy arrays and lists, one entry per sample. Tensor
        dtypes: bool, uint8, int8, int16, int32, int64, float16, bfloat16,
        float32, float64 (stored bit-exact). A numpy bytes / str / object
        array stores one value per element. Every field is checked first: a
        field that cannot be stored raises (naming the field and the
        reason) and nothing of the put is written."""
        n, fields = to_fields(data)
        if metadata is not None:
            return self._client.put(n, fields, meta=metadata)
        if not partition_id:
            raise InvalidArgumentError("put needs a partition_id (or the metadata of existing samples)")
        return self._client.put(n, fields, partition_id=partition_id)

    def get_meta(self, data_fields, batch_size: int, partition_id: str, task_name: str | None = None,
                 sampling_config: dict | None = None, mode: str = "fetch", timeout: float = 60.0) -> BatchMeta:
        if isinstance(data_fields, str):
            data_fields = [data_fields]
        if sampling_config is not None and not isinstance(sampling_config, dict):
            try:
                from omegaconf import OmegaConf

                sampling_config = OmegaConf.to_container(sampling_config, resolve=True)
            except Exception:
                raise InvalidArgumentError("sampling_config must be a dict") from None
        return self._client.get_meta(list(data_fields), int(batch_size), partition_id,
                                     task_name or "default", sampling_config, mode, float(timeout))

    def get_data(self, metadata: BatchMeta, writable: bool = False) -> TensorDict:
        """The samples and fields of `metadata` as a ``tensordict.TensorDict``
        with batch_size [len(metadata)]: uniform tensor fields are dense
        tensors; ragged ones (samples of different shapes) jagged nested
        tensors (layout=torch.jagged; strided nested where the samples differ
        in more than one dimension); strings, bytes and other objects (and
        tensors of different ranks or dtypes) a NonTensorStack, which
        ``td[name]`` reads as a list.

        Through the datasystem backend, tensors are zero-copy views of the
        worker's shared memory (a jagged field's values too, where its
        samples lie back to back there). They are copy-on-write: an in-place
        operation (``t.add_(1)``) works and changes only this process's
        pages, never the stored sample; other live views of the same sample
        in this process see the write, a later get_data sees the stored
        bytes. The first write into each 2 MiB of shared memory copies those
        2 MiB, which costs about what ``writable=True`` (private copies up
        front) or ``.clone()`` costs for the whole batch."""
        if not isinstance(metadata, BatchMeta):
            raise InvalidArgumentError(f"get_data expects a BatchMeta, got {type(metadata).__name__}")
        if len(metadata) == 0:
            return TensorDict({}, batch_size=[0])  # as upstream: no samples, no fields
        items = self._client.get_data(metadata)
        return from_fields(items, len(metadata), writable=writable)

    def clear_partition(self, partition_id: str) -> None:
        self._client.clear_partition(partition_id)

    def clear_samples(self, metadata: BatchMeta) -> None:
        self._client.clear_samples(metadata)

    def get_production_status(self, partition_id: str) -> dict:
        return self._client.get_production_status(partition_id)

    def get_consumption_status(self, partition_id: str, task_name: str) -> dict:
        return self._client.get_consumption_status(partition_id, task_name)

    def reset_consumption(self, partition_id: str, task_name: str = "") -> None:
        self._client.reset_consumption(partition_id, task_name)

    def list_partitions(self) -> list:
        return self._client.list_partitions()

    def set_custom_meta(self, metadata: BatchMeta) -> None:
        self._client.set_custom_meta(metadata)

    def get_custom_meta(self, partition_id: str, global_indexes) -> BatchMeta:
        return self._client.get_custom_meta(partition_id, list(global_indexes))

    # asyncio twins: the blocking call runs on the loop's executor (GIL released).
    async def _run(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

    async def async_put(self, *args, **kwargs):
        return await self._run(self.put, *args, **kwargs)

    async def async_get_meta(self, *args, **kwargs):
        return await self._run(self.get_meta, *args, **kwargs)

    async def async_get_data(self, *args, **kwargs):
        return await self._run(self.get_data, *args, **kwargs)

    async def async_clear_partition(self, *args, **kwargs):
        return await self._run(self.clear_partition, *args, **kwargs)

    async def async_clear_samples(self, *args, **kwargs):
        return await self._run(self.clear_samples, *args, **kwargs)

    def __repr__(self) -> str:
        return f"TransferQueueClient(client_id={self.client_id!r}, controller={self._client.controller_address!r})"
