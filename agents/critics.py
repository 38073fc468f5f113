"""The critic kinds (agents/parts.py, `CriticKind`): the clipped double-Q twin, GPL's
learned pessimism (agents/pessimism.py) and GPL's quantile (distributional) critics."""
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
        return [f"critic={config.critic!r} needs num_critics >= 2 (its penalty is their "
                "disagreement)"]
    return []


def _learned_beta(config: Config) -> dict:
    return {"beta": (config.gpl_beta_init, pessimism.beta_optimizer(config))}


TWIN = CriticKind(value_fn=lambda config, params: losses.twin_min_value,
                  config_errors=_twin_errors)

GPL = CriticKind(
    value_fn=lambda config, params: functools.partial(losses.gpl_penalised_value,
                                                      beta=params["beta"]),
    learned_scalars=_learned_beta, step=pessimism.gpl_step, config_errors=_gpl_errors,
    uncertainty=losses.ensemble_uncertainty)

# Each critic outputs num_quantiles quantiles; the target is per quantile [B, K].
GPL_QUANTILE = CriticKind(
    value_fn=lambda config, params: functools.partial(losses.quantile_penalised_value,
                                                      beta=params["beta"]),
    learned_scalars=_learned_beta,
    step=functools.partial(pessimism.gpl_step, actor_value=losses.quantile_penalised_mean),
    config_errors=_gpl_errors, num_outputs=lambda config: config.num_quantiles,
    loss=lambda config: functools.partial(losses.quantile_ensemble_loss,
                                          kappa=config.quantile_kappa),
    uncertainty=losses.sorted_quantile_uncertainty)

register_critic("twin", TWIN)
register_critic("gpl", GPL)
register_critic("gpl_quantile", GPL_QUANTILE)
