"""Session set-up shared by every test: Triton's interpreter when there is no GPU, few CPU threads.

``TRITON_INTERPRET`` must be set before anything imports Triton, so it happens here, at collection.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(2)
