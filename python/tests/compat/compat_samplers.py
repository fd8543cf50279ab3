"""A user sampler for scenario 21, in a module of its own: the controller
process unpickles it by module name, and that process may lack pytest."""

from __future__ import annotations

from transfer_queue import BaseSampler


class CompatSampler(BaseSampler):
    """Without `weights`: the first batch_size ready samples, consuming none
    (sampling with replacement). With a numpy `weights` array (indexed by
    global index): the heaviest ready samples, consumed."""

    def sample(self, ready_indexes, batch_size, *args, weights=None, **kwargs):
        if weights is None:
            return list(ready_indexes[:batch_size]), []
        ranked = sorted(ready_indexes, key=lambda i: -float(weights[i]))[:batch_size]
        return ranked, list(ranked)
