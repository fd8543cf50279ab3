"""GRPOGroupNSampler: whole prompt groups, a group being N consecutive global indexes."""

from __future__ import annotations

from typing import Any

from .base import BaseSampler


def take_consecutive_runs(ready_indexes: list[int], run_length: int, runs_wanted: int) -> list[int]:
    """The first ``runs_wanted`` runs of ``run_length`` consecutive values in sorted ``ready_indexes``.

    Scans left to right: a window of consecutive values is taken whole and the
    scan jumps past it; otherwise the scan moves one step. Returns [] when fewer
    runs exist.
    """
    values = sorted(ready_indexes)
    taken: list[int] = []
    runs = 0
    start = 0
    while runs < runs_wanted and start + run_length <= len(values):
        window = values[start : start + run_length]
        if window[-1] - window[0] == run_length - 1 and all(b - a == 1 for a, b in zip(window, window[1:])):
            taken.extend(window)
            runs += 1
            start += run_length
        else:
            start += 1
    return taken if runs >= runs_wanted else []


class GRPOGroupNSampler(BaseSampler):
    """Returns complete groups of ``n_samples_per_prompt`` responses, never part of one.

    The producer puts a prompt's N responses at N consecutive global indexes.
    ``batch_size`` must be a multiple of N; with fewer complete groups ready the
    result is ``([], [])``. When the call names a ``dp_rank``, the result is
    cached under ``(partition_id, task_name, dp_rank, batch_index)`` and a repeat
    of that call returns it unchanged.
    """

    def __init__(self, n_samples_per_prompt: int = 1) -> None:
        super().__init__()
        if n_samples_per_prompt <= 0:
            raise ValueError(f"n_samples_per_prompt must be positive, got {n_samples_per_prompt}")
        self.n_samples_per_prompt = n_samples_per_prompt

    def sample(
        self,
        ready_indexes: list[int],
        batch_size: int,
        task_name: str = "",
        partition_id: str = "",
        *args: Any,
        **kwargs: Any,
    ) -> tuple[list[int], list[int]]:
        dp_rank = kwargs.get("dp_rank")
        batch_index = kwargs.get("batch_index")
        per_rank = self._states.get(partition_id, {}).get(task_name, {})
        if dp_rank in per_rank and batch_index in per_rank[dp_rank]:
            return per_rank[dp_rank][batch_index]

        n = self.n_samples_per_prompt
        if batch_size % n != 0:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of n_samples_per_prompt ({n})")
        taken = take_consecutive_runs(ready_indexes, n, batch_size // n)
        if len(taken) < batch_size:
            return [], []
        result = (taken, list(taken))
        if dp_rank is not None:
            task_states = self._states.setdefault(partition_id, {}).setdefault(task_name, {})
            task_states.setdefault(dp_rank, {}).setdefault(batch_index, result)
        return result

    def _tq_sampling_config(self) -> dict[str, Any]:
        return self._builtin_config(
            GRPOGroupNSampler, {"sampler": "grpo_group_n", "n_samples_per_prompt": self.n_samples_per_prompt}
        )
