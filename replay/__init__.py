"""Frame-deduplicated n-step replay and the Batch type a learner consumes."""
from replay.batch import Batch
from replay.buffer import ReplayBuffer

__all__ = ["Batch", "ReplayBuffer"]
