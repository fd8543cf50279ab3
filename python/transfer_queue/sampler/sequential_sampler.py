"""SequentialSampler: the first ``batch_size`` ready indexes, consumed as taken."""

from __future__ import annotations

from typing import Any

from .base import BaseSampler


class SequentialSampler(BaseSampler):
    """Takes ready indexes in order, without replacement (upstream's default).

    With fewer ready than ``batch_size`` it returns all of them; the controller
    decides whether a short batch is served.
    """

    def __init__(self) -> None:
        super().__init__()

    def sample(
        self, ready_indexes: list[int], batch_size: int, *args: Any, **kwargs: Any
    ) -> tuple[list[int], list[int]]:
        taken = ready_indexes[:batch_size]
        return taken, taken

    def _tq_sampling_config(self) -> dict[str, Any]:
        return self._builtin_config(SequentialSampler, {"sampler": "sequential"})
