"""Third-party log chatter kept off the terminal unless absl's --verbosity asks for it."""
import logging

from absl import flags
from absl import logging as absl_logging


def quiet_library_logs(level: int = logging.WARNING) -> None:
    """Drops log records below `level` (a Python logging level; WARNING by default), unless
    the command line gave absl's --verbosity (-v), which then decides alone.

    Call it at the start of an absl main, before JAX picks its backend or dm_control
    imports. What it silences is the libraries' INFO: JAX's backend probing ("Unable to
    initialize backend 'tpu'"), dm_control's and PyOpenGL's GL notes, orbax's
    CheckpointManager lines, absl's own. Warnings and errors stay, and so does everything
    pixelzoo prints. absl turns an unset --verbosity into 0 (INFO) after parsing;
    --verbosity=0 keeps that, 1 adds DEBUG, -1 is this default, -2 errors only.
    """
    if flags.FLAGS["verbosity"].present:
        return
    absl_logging.set_verbosity(absl_logging.converter.standard_to_absl(level))
    logging.getLogger().setLevel(level)   # also when absl's handler is not the root's
