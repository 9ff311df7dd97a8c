"""Shared fixtures. Tests build tiny random models; nothing touches the network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One intra-op thread everywhere, including in code that picks its own count the way users get it
# (asuka.threads.set_threads honours OMP_NUM_THREADS): the count otherwise follows the machine's
# load, and float sums -- so byte-for-byte comparisons -- differ between 1 and 2 threads.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch

# The tiny test models are far too small to gain from intra-op threads; on a shared 2-core
# machine (and under pytest-xdist) extra threads only add contention and slow tests 4-20x.
torch.set_num_threads(1)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def working_shapes(monkeypatch):
    """``working_shapes(pipe)`` -> a list that receives the shape of every working batch the
    pipeline's ``inpaint`` (the method on a working batch) is called with."""
    def spy_on(pipe):
        seen, original = [], pipe.inpaint

        def spy(image, mask, **kwargs):
            seen.append(tuple(image.shape))
            return original(image, mask, **kwargs)

        monkeypatch.setattr(pipe, "inpaint", spy)
        return seen

    return spy_on
