"""Frame-deduplicated n-step replay (on the host, mirrored on the device) and the Batch
type a learner consumes; `replay.transitions` holds the rules both share (which starts can
be sampled, frame stacks, the n-step return)."""
from pixelzoo.replay.batch import Batch
from pixelzoo.replay.buffer import ReplayBuffer
from pixelzoo.replay.device import DeviceReplay, gather, layout_of
from pixelzoo.replay.latent import first_complete_timestep, to_latent_replay
from pixelzoo.replay.transitions import Layout

__all__ = ["Batch", "DeviceReplay", "Layout", "ReplayBuffer", "first_complete_timestep", "gather",
           "layout_of", "to_latent_replay"]
