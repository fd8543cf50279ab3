"""StreamingDataLoader: a torch DataLoader over a StreamingDataset that yields its
``(TensorDict, BatchMeta)`` pieces unchanged (upstream's ``transfer_queue.dataloader``)."""

from __future__ import annotations

from typing import Any

import torch

from .streaming_dataset import StreamingDataset


def _identity_collate_fn(item: Any) -> Any:
    """Passes a dataset item through: the dataset's pieces are already batches."""
    return item


class StreamingDataLoader(torch.utils.data.DataLoader):
    """A DataLoader with ``batch_size=None`` and an identity collate over a
    StreamingDataset; ``reset``, ``step`` and ``get_buffer`` reach the dataset.

    With ``num_workers > 0`` each worker process iterates its own copy of the
    dataset (its own client and buffer); ``reset``/``step``/``get_buffer``
    act on this process's copy.
    """

    def __init__(
        self,
        dataset: StreamingDataset,
        num_workers: int = 0,
        collate_fn=None,
        pin_memory: bool = False,
        worker_init_fn=None,
        multiprocessing_context=None,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
    ):
        self.dataset: StreamingDataset = dataset
        super().__init__(
            dataset=dataset,
            batch_size=None,  # the dataset batches
            shuffle=None,
            sampler=None,
            batch_sampler=None,
            num_workers=num_workers,
            collate_fn=collate_fn or _identity_collate_fn,
            pin_memory=pin_memory,
            drop_last=False,
            timeout=0,
            worker_init_fn=worker_init_fn,
            multiprocessing_context=multiprocessing_context,
            generator=None,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            pin_memory_device=pin_memory_device,
        )

    def reset(self) -> None:
        """The dataset's next iteration replays its buffer from step 0."""
        self.dataset.reset()

    def step(self, partition_id: str) -> None:
        """The dataset drops its buffer and reads ``partition_id`` from step 0."""
        self.dataset.step(partition_id)

    def get_buffer(self) -> list:
        """The dataset's fetched ``(TensorDict, BatchMeta)`` batches, in step order."""
        return self.dataset.buffer
