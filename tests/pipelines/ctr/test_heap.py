"""`heap.keep_freed_memory`: a scoring process reuses freed heap pages instead of page-faulting in new ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LOOP = """
import resource, sys
import numpy as np
sys.path[:0] = [{root!r}]
if {keep}:
    from pipelines.ctr.heap import keep_freed_memory
    assert keep_freed_memory()
def batch():  # a batch's tensors, 4 x 24 MB alive at once (as an eager DLRM forward of 4096 rows), then freed
    a = [np.ones(3 * 2**20) for _ in range(4)]
    del a
for _ in range(3):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: bool) -> int:
    out = subprocess.run([sys.executable, "-c", LOOP.format(root=str(ROOT), keep=keep)], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_batch_tensors_are_reused_without_page_faults():
    plain, kept = _faults(False), _faults(True)
    assert plain > 10_000   # glibc trims the freed heap (or mmaps anew): rounds fault in fresh 4 KB pages again
    assert kept < 500
