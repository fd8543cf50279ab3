"""RankAwareSampler: every rank of one data-parallel group receives the same samples."""

from __future__ import annotations

from typing import Any

from .base import BaseSampler


class RankAwareSampler(BaseSampler):
    """The first caller of ``(partition_id, task_name, dp_rank, batch_index)`` takes
    ``ready_indexes[:batch_size]``; every later caller with that key gets the same
    list, whatever is ready then, until the partition's cache is cleared.

    ``dp_rank``, ``batch_index``, ``task_name`` and ``partition_id`` are required
    (a missing one is a TypeError). With fewer than ``batch_size`` ready the
    result is ``([], [])`` and nothing is cached.
    """

    def __init__(self) -> None:
        super().__init__()

    def sample(
        self,
        ready_indexes: list[int],
        batch_size: int,
        dp_rank: int,
        batch_index: int,
        task_name: str,
        partition_id: str,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[list[int], list[int]]:
        if dp_rank < 0:
            raise ValueError(f"dp_rank {dp_rank} must be greater than or equal to 0")
        steps = self._states.setdefault(partition_id, {}).setdefault(task_name, {}).setdefault(dp_rank, {})
        if batch_index in steps:
            cached = steps[batch_index]
            return cached, cached
        taken = ready_indexes[:batch_size]
        if len(taken) < batch_size:
            return [], []
        steps[batch_index] = taken
        return taken, taken

    def _tq_sampling_config(self) -> dict[str, Any]:
        return self._builtin_config(RankAwareSampler, {"sampler": "rank_aware"})
