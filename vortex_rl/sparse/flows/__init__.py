"""Built-in flows; importing this package registers them."""

from vortex_rl.sparse.flows.block_sparse import BlockSparseAttention
from vortex_rl.sparse.flows.dense import Dense
from vortex_rl.sparse.flows.quest import Quest
from vortex_rl.sparse.flows.streaming import Streaming

__all__ = ["BlockSparseAttention", "Dense", "Quest", "Streaming"]
