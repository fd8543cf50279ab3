"""SeqlenBalancedSampler: GRPO groups spread over data-parallel ranks by total token count."""

from __future__ import annotations

import heapq
from typing import Any

from .grpo_group_n_sampler import GRPOGroupNSampler

# Custom-meta key holding a sample's token count; a sample without it weighs 1.
LENGTH_KEY = "total_lengths"


class SeqlenBalancedSampler(GRPOGroupNSampler):
    """Selects ``batch_size * dp_size`` samples in whole GRPO groups, then splits the
    groups over ``dp_size`` ranks (equal group counts) so that each rank's sum of
    ``custom_meta["total_lengths"]`` is as even as the largest-differencing method
    makes it.

    ``batch_size`` is per rank. The first call of a step (``partition_id``,
    ``task_name``, ``batch_index``) decides every rank's share and caches it;
    each rank then receives its own share (``dp_rank``, default 0). Lengths come
    from ``partition.get_custom_meta(indexes)`` when the caller passes the
    controller's ``partition``; without it the selection is cut into equal runs.
    """

    def __init__(self, n_samples_per_prompt: int = 1, dp_size: int = 1) -> None:
        super().__init__(n_samples_per_prompt=n_samples_per_prompt)
        if dp_size <= 0:
            raise ValueError(f"dp_size must be positive, got {dp_size}")
        self.dp_size = dp_size
        # (partition_id, task_name, batch_index) -> one index list per rank.
        self._balanced_cache: dict[tuple, list[list[int]]] = {}

    def sample(
        self,
        ready_indexes: list[int],
        batch_size: int,
        task_name: str = "",
        partition_id: str = "",
        *args: Any,
        **kwargs: Any,
    ) -> tuple[list[int], list[int]]:
        dp_rank = kwargs.get("dp_rank", 0)
        batch_index = kwargs.get("batch_index", 0)
        step_key = (partition_id, task_name, batch_index)
        shares = self._balanced_cache.get(step_key)
        if shares is None:
            selected, _ = super().sample(
                ready_indexes, batch_size * self.dp_size, task_name=task_name, partition_id=partition_id
            )
            if not selected:
                return [], []
            shares = self._split(selected, kwargs.get("partition"))
            self._balanced_cache[step_key] = shares
            per_rank = self._states.setdefault(partition_id, {}).setdefault(task_name, {})
            for rank in range(self.dp_size):
                share = shares[rank] if rank < len(shares) else []
                per_rank.setdefault(rank, {})[batch_index] = (share, list(share))
        mine = shares[dp_rank] if dp_rank < len(shares) else []
        return mine, list(mine)

    def _split(self, selected: list[int], partition: Any) -> list[list[int]]:
        """Cuts the selected indexes into ``dp_size`` shares."""
        if partition is None:
            # No lengths to balance on: equal runs, the last taking the rest.
            width = len(selected) // self.dp_size
            cuts = [r * width for r in range(self.dp_size)] + [len(selected)]
            return [selected[cuts[r] : cuts[r + 1]] for r in range(self.dp_size)]
        custom = partition.get_custom_meta(selected)
        lengths = [custom.get(idx, {}).get(LENGTH_KEY, 1) for idx in selected]
        n = self.n_samples_per_prompt
        groups = len(selected) // n
        if groups > 0 and len(selected) % n == 0:
            group_weights = [sum(lengths[g * n : (g + 1) * n]) for g in range(groups)]
            shares = get_seqlen_balanced_partitions(group_weights, self.dp_size, equal_size=True)
            return [[selected[g * n + s] for g in share for s in range(n)] for share in shares]
        shares = get_seqlen_balanced_partitions(lengths, self.dp_size, equal_size=False)
        return [[selected[i] for i in share] for share in shares]

    def clear_cache(self, partition_id: str) -> None:
        super().clear_cache(partition_id)
        for key in [k for k in self._balanced_cache if k[0] == partition_id]:
            del self._balanced_cache[key]

    def save_checkpoint(self) -> dict:
        return {**super().save_checkpoint(), "_balanced_cache": self._balanced_cache}

    def load_checkpoint(self, state: dict) -> None:
        super().load_checkpoint(state)
        self._balanced_cache = state["_balanced_cache"]

    def _tq_sampling_config(self) -> dict[str, Any]:
        return self._builtin_config(
            SeqlenBalancedSampler,
            {
                "sampler": "seqlen_balanced",
                "n_samples_per_prompt": self.n_samples_per_prompt,
                "dp_size": self.dp_size,
                "length_key": LENGTH_KEY,
            },
        )


# ---------------------------------------------------------------- balancing

class _Bin:
    """One bin of a partial k-way partition: its items (index, weight) and their sum."""

    __slots__ = ("total", "items")

    def __init__(self, items: list[tuple[int, int]] | None = None) -> None:
        self.items = items or []
        self.total = sum(w for _, w in self.items)

    def order_key(self) -> tuple:
        # Heavier first; then more items; then the items themselves (deterministic).
        return (self.total, len(self.items), self.items)


class _Partial:
    """A k-way partition of some items, bins kept heaviest first."""

    __slots__ = ("bins",)

    def __init__(self, bins: list[_Bin]) -> None:
        self.bins = sorted(bins, key=_Bin.order_key, reverse=True)

    def spread(self) -> int:
        return self.bins[0].total - self.bins[-1].total

    def absorb(self, other: "_Partial") -> None:
        """Pairs this heaviest bin with the other's lightest, and so on down."""
        k = len(self.bins)
        merged = [_Bin(self.bins[i].items + other.bins[k - 1 - i].items) for i in range(k)]
        self.bins = sorted(merged, key=_Bin.order_key, reverse=True)

    def __lt__(self, other: "_Partial") -> bool:
        # The heap pops the widest spread first; on a tie, the heavier top bin.
        if self.spread() != other.spread():
            return self.spread() > other.spread()
        return self.bins[0].order_key() > other.bins[0].order_key()


def get_seqlen_balanced_partitions(seqlen_list: list[int], k_partitions: int, equal_size: bool) -> list[list[int]]:
    """Splits item positions into ``k_partitions`` sets with near-equal sums of ``seqlen_list``.

    Karmarkar-Karp (largest differencing). With ``equal_size`` every set gets the
    same number of items, which needs ``len(seqlen_list) % k_partitions == 0``.
    Each returned set is sorted; no set is empty.
    """
    count = len(seqlen_list)
    if count < k_partitions:
        raise ValueError(f"cannot split {count} items into {k_partitions} non-empty partitions")
    if equal_size and count % k_partitions != 0:
        raise ValueError(f"cannot split {count} items into {k_partitions} partitions of equal size")
    ascending = sorted((w, i) for i, w in enumerate(seqlen_list))
    heap: list[_Partial] = []
    if equal_size:
        # Each run of k neighbours in weight order starts as one item per bin.
        for start in range(0, count, k_partitions):
            run = ascending[start : start + k_partitions]
            heapq.heappush(heap, _Partial([_Bin([(i, w)]) for w, i in run]))
    else:
        for w, i in ascending:
            heapq.heappush(heap, _Partial([_Bin([(i, w)])] + [_Bin() for _ in range(k_partitions - 1)]))
    while len(heap) > 1:
        first = heapq.heappop(heap)
        first.absorb(heapq.heappop(heap))
        heapq.heappush(heap, first)
    return [sorted(i for i, _ in b.items) for b in heap[0].bins]
