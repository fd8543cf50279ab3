"""Per-DP-rank streaming of TransferQueue data into torch training loops
(upstream's ``transfer_queue.dataloader``)."""

from .streaming_dataloader import StreamingDataLoader
from .streaming_dataset import StreamingDataset

__all__ = ["StreamingDataset", "StreamingDataLoader"]
