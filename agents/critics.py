"""The critic kinds (agents/parts.py, `CriticKind`): the clipped double-Q twin and GPL's
learned pessimism (agents/pessimism.py)."""
import functools

from pixelzoo.agents import losses, pessimism
from pixelzoo.agents.config import Config
from pixelzoo.agents.parts import CriticKind, register_critic


def _twin_errors(config: Config) -> list[str]:
    if config.num_critics != 2:
        return ["critic='twin' takes the minimum of exactly 2 critics (num_critics=2); "
                "use critic='gpl' for larger ensembles"]
    return []


def _gpl_errors(config: Config) -> list[str]:
    if config.num_critics < 2:
        return ["critic='gpl' needs num_critics >= 2 (its penalty is their disagreement)"]
    return []


TWIN = CriticKind(value_fn=lambda config, params: losses.twin_min_value,
                  config_errors=_twin_errors)

GPL = CriticKind(
    value_fn=lambda config, params: functools.partial(losses.gpl_penalised_value,
                                                      beta=params["beta"]),
    learned_scalars=lambda config: {"beta": (config.gpl_beta_init,
                                             pessimism.beta_optimizer(config))},
    step=pessimism.gpl_step, config_errors=_gpl_errors)

register_critic("twin", TWIN)
register_critic("gpl", GPL)
