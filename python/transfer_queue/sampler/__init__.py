"""Samplers with upstream TransferQueue's names (``transfer_queue.sampler.*``).

The built-ins both compute upstream's answer in-process and describe
themselves to our C++ controller (``_tq_sampling_config``); ``resolve_sampler``
turns what upstream's ``controller.sampler`` setting accepts into an instance.
"""

from __future__ import annotations

from typing import Any

from .base import BaseSampler
from .grpo_group_n_sampler import GRPOGroupNSampler
from .rank_aware_sampler import RankAwareSampler
from .seqlen_balanced_sampler import SeqlenBalancedSampler
from .sequential_sampler import SequentialSampler

_BY_NAME: dict[str, type[BaseSampler]] = {
    cls.__name__: cls
    for cls in (SequentialSampler, GRPOGroupNSampler, RankAwareSampler, SeqlenBalancedSampler)
}


def resolve_sampler(spec: Any) -> BaseSampler:
    """An instance for upstream's ``controller.sampler`` value.

    Accepts an instance (returned as is), a BaseSampler subclass (built with no
    arguments) or the class name of a built-in ("GRPOGroupNSampler"). An unknown
    name is a ValueError; any other type a TypeError.
    """
    if isinstance(spec, BaseSampler):
        return spec
    if isinstance(spec, type) and issubclass(spec, BaseSampler):
        return spec()
    if isinstance(spec, str):
        cls = _BY_NAME.get(spec)
        if cls is None:
            raise ValueError(f"Could not find sampler {spec} (known: {', '.join(_BY_NAME)})")
        return cls()
    raise TypeError(
        f"sampler must be a sampler class name, a BaseSampler subclass or instance, got {type(spec).__name__}"
    )


__all__ = [
    "BaseSampler",
    "SequentialSampler",
    "GRPOGroupNSampler",
    "RankAwareSampler",
    "SeqlenBalancedSampler",
    "resolve_sampler",
]
