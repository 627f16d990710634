import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

# The suite runs under pytest-xdist with one worker per core: a second intra-op thread per worker only
# oversubscribes the cores (measured: LeNet fwd+bwd 22 ms with 1 thread vs 600 ms with 2 under load).
torch.set_num_threads(1)
