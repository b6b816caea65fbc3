from __future__ import annotations

from pathlib import Path

import pytest

from optuna_rnn.memory import _malloc_trim, release_memory


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc's malloc_trim is not available here")
def test_release_memory_returns_freed_heap_pages() -> None:
    # 160 MB of 4 KB blocks with every 64th kept alive: the freed ones fragment the heap,
    # so the allocator cannot give them back by shrinking it from the top
    blocks = [bytearray(4000) for _ in range(40_000)]
    kept = blocks[::64]
    del blocks
    before = _rss_mb()
    release_memory()
    after = _rss_mb()
    assert before - after > 50, (before, after)
    assert len(kept) == 625
