"""KV-cache accounting: a pool of fixed-size blocks, counted, not addressed."""

from __future__ import annotations


class BlockPool:
    """`num_blocks` blocks; `can_allocate` / `allocate` / `free` as a pair of checks and acts."""

    __slots__ = ("num_blocks", "num_free")

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"a block pool needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.num_free = num_blocks

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= self.num_free

    def allocate(self, num_blocks: int) -> None:
        if num_blocks > self.num_free:
            raise ValueError(f"cannot allocate {num_blocks} blocks, {self.num_free} free")
        self.num_free -= num_blocks

    def free(self, num_blocks: int) -> None:
        if self.num_free + num_blocks > self.num_blocks:
            raise ValueError("freeing more blocks than were allocated")
        self.num_free += num_blocks


def projected_peak_fits(batch: list[tuple[int, int]], capacity_tokens: int) -> bool:
    """Would a batch of `(remaining_tokens, held_tokens)` requests, all running
    to their max_tokens, ever need more than `capacity_tokens`?

    Sorted by remaining tokens, request i finishes while the i+1 longest are
    still alive, each grown by its remaining count: the peak is the largest
    `sum(held of those) + (i + 1) * remaining_i`. Each term is unchanged by a
    decode step (held + 1, remaining - 1), so the answer only changes when
    the batch does. This is LightLLM's (and S-LoRA's) admission rule.
    """
    held = 0
    for alive, (remaining, tokens) in enumerate(sorted(batch, reverse=True), start=1):
        held += tokens
        if held + alive * remaining > capacity_tokens:
            return False
    return True
