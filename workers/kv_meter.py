"""KV memory one request holds inside vLLM: how many blocks and bytes, and for how long.

`BlockCounter` reads a request's blocks from vLLM's cache manager. `Holding` integrates a
request's blocks over engine steps and wall time without touching it at every step: a
block allocated at step a (time t) and given back after step r (time u) was held for
r + 1 - a steps (u - t seconds), so sums of the allocation steps and times are enough,
updated only when blocks are added.
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm.v1.core.kv_cache_manager import KVCacheManager
from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager
from vllm.v1.kv_cache_interface import KVCacheConfig

GIB = 1024**3


class BlockCounter:
    """Blocks (and bytes) of KV cache one request holds now, over all cache groups.

    A block of group g is one page of each of the group's layers, so it weighs
    `page_size_bytes * len(layer_names)` (see `KVCacheGroupSpec`, `AttentionSpec`).
    Null blocks (slots a sliding window gave back) are not counted; a prefix block
    shared by several requests counts for each of them, since each holds it.
    """

    def __init__(self, kv_cache_manager: KVCacheManager, kv_cache_config: KVCacheConfig) -> None:
        # A sliding window (or any manager but full attention) hands blocks back as the
        # window moves, outside any allocation: then the count is read at every step.
        self.changes_only_on_allocation = all(
            type(manager) is FullAttentionManager
            for manager in kv_cache_manager.coordinator.single_type_managers
        )
        groups = kv_cache_config.kv_cache_groups
        self._managers = [
            (
                manager.req_to_blocks,
                type(manager) is not FullAttentionManager,  # only these can hold null blocks
                groups[manager.kv_cache_group_id].kv_cache_spec.page_size_bytes
                * len(groups[manager.kv_cache_group_id].layer_names),
            )
            for manager in kv_cache_manager.coordinator.single_type_managers
        ]

    @property
    def bytes_per_block(self) -> list[int]:
        return [num_bytes for _, _, num_bytes in self._managers]

    def held(self, request_id: str) -> tuple[int, int]:
        """(blocks, bytes) held by `request_id`; (0, 0) for an unknown id."""
        num_blocks = num_bytes = 0
        for req_to_blocks, may_hold_null, block_bytes in self._managers:
            blocks = req_to_blocks.get(request_id)  # .get: it is a defaultdict
            if not blocks:
                continue
            count = sum(not b.is_null for b in blocks) if may_hold_null else len(blocks)
            num_blocks += count
            num_bytes += count * block_bytes
        return num_blocks, num_bytes


@dataclass(slots=True)
class Holding:
    """The blocks a request holds now, and the sums that date them."""

    num_blocks: int = 0
    num_bytes: int = 0
    step_sum: int = 0  # sum over held blocks of the step each was first held at
    second_sum: float = 0.0  # ... of the time each was first held at
    byte_second_sum: float = 0.0  # ... of bytes times that time

    def add(self, num_blocks: int, num_bytes: int, step: int, now: float) -> None:
        """`num_blocks` more, held from `step` (and time `now`) on."""
        self.num_blocks += num_blocks
        self.num_bytes += num_bytes
        self.step_sum += num_blocks * step
        self.second_sum += num_blocks * now
        self.byte_second_sum += num_bytes * now

    def cost(self, last_step: int, now: float) -> tuple[int, float, float]:
        """(block-steps, block-seconds, GiB-seconds) of what is held, through `last_step`
        and up to `now`."""
        block_steps = self.num_blocks * (last_step + 1) - self.step_sum
        block_seconds = self.num_blocks * now - self.second_sum
        gib_seconds = (self.num_bytes * now - self.byte_second_sum) / GIB
        return block_steps, max(0.0, block_seconds), max(0.0, gib_seconds)
