"""Frame-deduplicated n-step replay (on the host, mirrored on the device) and the Batch
type a learner consumes."""
from pixelzoo.replay.batch import Batch
from pixelzoo.replay.buffer import ReplayBuffer
from pixelzoo.replay.device import DeviceReplay, Layout, gather, layout_of
from pixelzoo.replay.latent import first_complete_timestep, to_latent_replay

__all__ = ["Batch", "DeviceReplay", "Layout", "ReplayBuffer", "first_complete_timestep", "gather",
           "layout_of", "to_latent_replay"]
