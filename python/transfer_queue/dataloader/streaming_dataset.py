"""StreamingDataset: a torch IterableDataset that streams one data-parallel rank's
batches out of TransferQueue, in micro-batches (upstream's ``transfer_queue.dataloader``).

Each rank's dataset asks the controller for step ``batch_index`` of its
``dp_rank`` (the controller's rank-aware sampler gives every dataset of one
dp_rank the same samples), keeps what it fetched in ``buffer`` and yields it cut
into micro-batches. ``reset()`` replays the buffer; ``step(partition_id)`` drops
it and moves to another partition.

The client is built on first iteration from the config alone (no Ray calls),
so the dataset can be iterated in forked DataLoader workers. One dataset object
is iterated by one thread at a time.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from tensordict import TensorDictBase
from torch.utils.data import IterableDataset

if TYPE_CHECKING:  # pragma: no cover
    from tensordict import TensorDict

    from transfer_queue.client import TransferQueueClient

logger = logging.getLogger(__name__)

# Seconds to wait before asking again after the controller had no batch ready.
EMPTY_BATCH_SLEEP_ENV = "TQ_STREAMING_DATASET_EMPTY_BATCH_SLEEP_INTERVAL"


def _empty_batch_sleep_s() -> float:
    raw = os.environ.get(EMPTY_BATCH_SLEEP_ENV, "1")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"{EMPTY_BATCH_SLEEP_ENV} must be a number of seconds, got {raw!r}") from None


class StreamingDataset(IterableDataset):
    """Streams ``(TensorDict, BatchMeta)`` micro-batches of one DP rank from TransferQueue.

    Args:
        config: upstream's config (DictConfig or dict), as ``transfer_queue.init``
            returns it: ``controller.zmq_info``, ``backend.storage_backend`` and
            that backend's block are read.
        batch_size: samples per get_meta call (one step of this rank).
        micro_batch_size: samples per yielded piece (>= 1).
        data_fields: fields to read (at least one).
        partition_id: partition to read from.
        task_name: consumer task; consumption is tracked per task.
        dp_rank: data-parallel rank (>= 0); datasets of one dp_rank get the
            same samples.
        should_check_consumption_status: False streams forever; True stops
            once the controller reports the partition consumed by the task
            and the buffer is exhausted.
        fetch_batch_fn: replaces ``default_fetch_batch_fn`` (same keyword
            arguments; returns ``(TensorDict | None, BatchMeta)``).
        process_batch_fn: replaces ``chunk_batch_fn``; called as
            ``process_batch_fn(td, meta, micro_batch_size=m)`` and returns
            an iterable of ``(TensorDict, BatchMeta)``.

    Raises ValueError for ``micro_batch_size < 1``, empty ``data_fields`` or
    ``dp_rank < 0``.
    """

    def __init__(
        self,
        config: Any,
        batch_size: int,
        micro_batch_size: int,
        data_fields: list[str],
        partition_id: str,
        task_name: str,
        dp_rank: int,
        should_check_consumption_status: bool = False,
        fetch_batch_fn: Callable | None = None,
        process_batch_fn: Callable | None = None,
    ):
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        if len(data_fields) < 1:
            raise ValueError(f"data_fields must name at least one field, got {data_fields}")
        if dp_rank < 0:
            raise ValueError(f"dp_rank {dp_rank} must be greater than or equal to 0")
        super().__init__()
        self.config = config
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.data_fields = data_fields
        self.partition_id = partition_id
        self.task_name = task_name
        self.dp_rank = dp_rank
        self.should_check_consumption_status = should_check_consumption_status
        self.fetch_batch_fn = fetch_batch_fn or default_fetch_batch_fn
        self.process_batch_fn = process_batch_fn or chunk_batch_fn
        # What every get_meta of this dataset tells the controller's sampler;
        # the fetch adds batch_index and partition_id.
        self.sampling_config: dict[str, Any] = {"dp_rank": dp_rank, "task_name": task_name}
        # Fetched batches, in step order: reset() replays them without fetching again.
        self.buffer: list[tuple[TensorDict, Any]] = []
        self.batch_index = 0
        self._tq_client: TransferQueueClient | None = None

    def __getstate__(self) -> dict:
        # A DataLoader worker builds its own client; a live one does not travel.
        state = self.__dict__.copy()
        state["_tq_client"] = None
        return state

    def _create_client(self) -> None:
        """Builds this dataset's client from the config, without Ray (fork-safe)."""
        from transfer_queue.client import TransferQueueClient

        backend = self.config["backend"]["storage_backend"]
        client = TransferQueueClient(f"StreamingDataset_{uuid.uuid4().hex[:8]}", self.config["controller"]["zmq_info"])
        try:
            client.initialize_storage_manager(manager_type=backend, config=self.config["backend"][backend])
        except BaseException:
            close = getattr(client, "close", None)
            if close is not None:
                close()
            raise
        self._tq_client = client

    def _has_buffered(self) -> bool:
        return self.batch_index < len(self.buffer)

    def _keep_going(self) -> bool:
        if self._has_buffered() or not self.should_check_consumption_status:
            return True
        return not self._tq_client.check_consumption_status(self.task_name, self.partition_id)

    def __iter__(self) -> Iterator[tuple[TensorDict, Any]]:
        """Yields micro-batches: first the buffered steps from ``batch_index``
        on, then newly fetched ones (each appended to the buffer). When the
        controller has no batch ready, sleeps (TQ_STREAMING_DATASET_EMPTY_BATCH_SLEEP_INTERVAL,
        default 1 s) and asks again. An error of the client or of a hook ends
        the iteration by propagating."""
        if self._tq_client is None:
            self._create_client()
        while self._keep_going():
            if self._has_buffered():
                td, meta = self.buffer[self.batch_index]
                self.batch_index += 1
                yield from self.process_batch_fn(td, meta, micro_batch_size=self.micro_batch_size)
                continue
            td, meta = self.fetch_batch_fn(
                tq_client=self._tq_client,
                data_fields=self.data_fields,
                batch_size=self.batch_size,
                partition_id=self.partition_id,
                task_name=self.task_name,
                sampling_config=self.sampling_config,
                batch_index=self.batch_index,
            )
            if td is None:
                time.sleep(_empty_batch_sleep_s())
            else:
                self.buffer.append((td, meta))

    def reset(self) -> None:
        """Starts the next iteration at the first buffered step (replays the buffer)."""
        self.batch_index = 0

    def step(self, partition_id: str) -> None:
        """Drops the buffer and reads ``partition_id`` from step 0 on."""
        self.buffer = []
        self.batch_index = 0
        self.partition_id = partition_id


def default_fetch_batch_fn(
    tq_client: Any,
    data_fields: list[str],
    batch_size: int,
    partition_id: str,
    task_name: str,
    sampling_config: dict[str, Any],
    batch_index: int,
) -> tuple[TensorDict | None, Any]:
    """One step's batch: ``get_meta`` (mode fetch) with the dataset's sampling
    config plus ``batch_index`` and ``partition_id``, then ``get_data``.

    Returns ``(None, meta)`` when the controller returned no samples (polling
    mode, not enough ready yet), else ``(td, meta)``.
    """
    config = {**sampling_config, "batch_index": batch_index, "partition_id": partition_id}
    meta = tq_client.get_meta(
        data_fields=data_fields,
        batch_size=batch_size,
        partition_id=partition_id,
        task_name=task_name,
        sampling_config=config,
    )
    if meta.size == 0:
        logger.debug("no batch ready for task %s, partition %s, step %d", task_name, partition_id, batch_index)
        return None, meta
    return tq_client.get_data(meta), meta


def chunk_batch_fn(td: Any, batch_meta: Any, micro_batch_size: int = 1) -> list[tuple[TensorDict, Any]]:
    """Cuts a batch into ``ceil(B / micro_batch_size)`` consecutive pieces of
    ``micro_batch_size`` samples (the last may be shorter), each paired with the
    meta of exactly its samples.

    Nested (jagged or strided) fields, which torch cannot slice on the batch
    dimension, are split per sample and rebuilt with their layout.

    Raises TypeError when ``td`` is not a TensorDict; ValueError when
    ``micro_batch_size`` is not a positive int, ``td`` has no batch dimension,
    or ``micro_batch_size`` exceeds the batch.
    """
    if not isinstance(td, TensorDictBase):
        raise TypeError(f"Expected TensorDict, got {type(td).__name__}")
    if not isinstance(micro_batch_size, int) or micro_batch_size <= 0:
        raise ValueError(f"micro_batch_size must be a positive integer, got {micro_batch_size}")
    if len(td.batch_size) == 0:
        raise ValueError("Input TensorDict must have non-empty batch_size")
    total = td.batch_size[0]
    if micro_batch_size > total:
        raise ValueError(f"micro_batch_size ({micro_batch_size}) exceeds total batch size ({total})")

    nested = {
        key: (value.unbind(0), value.layout)
        for key, value in td.items()
        if isinstance(value, torch.Tensor) and value.is_nested
    }
    dense = td.exclude(*nested) if nested else td
    pieces = []
    for start in range(0, total, micro_batch_size):
        end = min(start + micro_batch_size, total)
        piece = dense[start:end]
        for key, (samples, layout) in nested.items():
            piece[key] = torch.nested.as_nested_tensor(list(samples[start:end]), layout=layout)
        pieces.append((piece, batch_meta.select_samples(list(range(start, end)))))
    return pieces
