"""BaseSampler: the interface every sampler follows, as upstream TransferQueue defines it.

A sampler picks, from the indexes a consumer could read now, the ones one
get_meta call returns and the ones it marks consumed. Our controller runs its
samplers in C++; the Python classes here serve two purposes:

* called in-process (``sampler(ready_indexes, batch_size, **sampling_config)``)
  they compute upstream's answer, so code that drives a sampler by hand works;
* ``_tq_sampling_config()`` describes the built-in ones to our controller, which
  then runs the same policy in C++ (chosen per call or per controller).

Not thread-safe: one sampler object belongs to one caller (upstream's
controller serves one request at a time).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

# The classes whose policy our C++ controller runs; a user's own subclass cannot.
BUILTIN_SAMPLER_NAMES = ("SequentialSampler", "GRPOGroupNSampler", "RankAwareSampler", "SeqlenBalancedSampler")


class BaseSampler(ABC):
    """Chooses samples for get_meta.

    ``_states`` is the per-sampler cache shared by the built-ins:
    ``_states[partition_id][task_name][dp_rank][batch_index]`` holds what a rank
    received for a step, so that a repeated call returns the same samples.
    """

    def __init__(self) -> None:
        self._states: dict[Any, Any] = {}

    @abstractmethod
    def sample(
        self, ready_indexes: list[int], batch_size: int, *args: Any, **kwargs: Any
    ) -> tuple[list[int], list[int]]:
        """Returns (sampled, consumed) global indexes chosen from ``ready_indexes``.

        ``ready_indexes`` are ascending indexes whose requested fields are produced
        and which the task has not consumed. ``consumed`` may differ from
        ``sampled`` (empty for sampling with replacement).
        """

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[list[int], list[int]]:
        return self.sample(*args, **kwargs)

    def has_cached_result(
        self, partition_id: str, task_name: str, sampling_config: dict[str, Any] | None = None
    ) -> bool:
        """True when a result for (partition, task, dp_rank, batch_index) is cached.

        Needs ``dp_rank`` in ``sampling_config``; without it the answer is False.
        """
        config = sampling_config or {}
        dp_rank = config.get("dp_rank")
        if dp_rank is None:
            return False
        per_rank = self._states.get(partition_id, {}).get(task_name, {})
        return dp_rank in per_rank and config.get("batch_index") in per_rank[dp_rank]

    def clear_cache(self, partition_id: str) -> None:
        """Forgets every cached result of ``partition_id`` (called when it is cleared)."""
        self._states.pop(partition_id, None)

    def save_checkpoint(self) -> dict:
        """The state to restore with ``load_checkpoint``."""
        return {"_states": self._states}

    def load_checkpoint(self, state: dict) -> None:
        self._states = state["_states"]

    def _tq_sampling_config(self) -> dict[str, Any]:
        """The sampling config that makes our C++ controller run this sampler's policy.

        Only the built-in samplers have one; the base raises for any other class.
        """
        raise NotImplementedError(
            f"sampler {type(self).__qualname__} is a Python sampler: the tqds controller runs only the "
            f"built-in samplers ({', '.join(BUILTIN_SAMPLER_NAMES)}) and cannot run a custom "
            "BaseSampler subclass (or a built-in whose sample() is overridden)"
        )

    def _builtin_config(self, owner: type, config: dict[str, Any]) -> dict[str, Any]:
        """Returns ``config`` when ``self`` runs ``owner``'s own policy, else raises.

        A subclass that overrides ``sample`` has a policy the controller does not
        know, so it gets the base class's error rather than a silently wrong one.
        """
        if type(self).sample is not owner.sample:
            return BaseSampler._tq_sampling_config(self)
        return config
