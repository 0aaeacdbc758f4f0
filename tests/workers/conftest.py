import torch

# Tiny tensors: OpenMP threads only spin against each other (and against a busy neighbour on a
# 2-core machine); one thread is ~100x faster for these tests.
torch.set_num_threads(1)
