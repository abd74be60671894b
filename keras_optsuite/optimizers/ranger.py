"""Ranger: RAdam with gradient centralization, inside Lookahead."""

from __future__ import annotations

import copy
from typing import Any

import keras

from keras_optsuite.optimizers.chain import Chain
from keras_optsuite.optimizers.gradient_transforms import GradientCentralization
from keras_optsuite.optimizers.lookahead import Lookahead
from keras_optsuite.optimizers.radam import RAdam


@keras.saving.register_keras_serializable(package="keras_optsuite")
class Ranger(Lookahead):
    """Ranger = ``Lookahead(chain(GradientCentralization(), RAdam(...)))``.

    Wright, 2019-2020, "Ranger - a synergistic optimizer"
    (https://github.com/lessw2020/Ranger-Deep-Learning-Optimizer), combining
    RAdam (Liu et al. 2019), Lookahead (Zhang et al. 2019) and gradient
    centralization (Yong et al. 2020) with the defaults of the authors' code:
    ``beta_1=0.95``, ``epsilon=1e-5``, ``sync_period=6``,
    ``slow_step_size=0.5``, centralization of every tensor with two or more
    axes. It is built from those parts, not re-implemented.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.001`.
        beta_1: RAdam's first-moment decay, in [0, 1). Defaults to `0.95`.
        beta_2: RAdam's second-moment decay, in [0, 1). Defaults to `0.999`.
        epsilon: RAdam's denominator term, >= 0. Defaults to `1e-5`.
        sma_threshold: RAdam's rectification threshold, >= 4. Defaults to `5.0`.
        sync_period: Lookahead's ``k``, >= 1. Defaults to `6`.
        slow_step_size: Lookahead's ``alpha``, in [0, 1]. Defaults to `0.5`.
        conv_only: centralize only convolution kernels. Defaults to `False`.
        name: name of the optimizer.
        **kwargs: Keras's shared optimizer options (``weight_decay``,
            ``clipnorm``, ...), passed to the inner RAdam.

    Example:
    >>> model.compile(optimizer="keras_optsuite>Ranger", loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.95,
        beta_2: float = 0.999,
        epsilon: float = 1e-5,
        sma_threshold: float = 5.0,
        sync_period: int = 6,
        slow_step_size: float = 0.5,
        conv_only: bool = False,
        name: str = "ranger",
        **kwargs: Any,
    ) -> None:
        radam = RAdam(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            sma_threshold=sma_threshold, **kwargs,
        )
        inner = Chain(radam, [GradientCentralization(conv_only=conv_only)])
        super().__init__(inner, sync_period=sync_period, slow_step_size=slow_step_size, name=name)
        self.conv_only = conv_only

    @property
    def radam(self) -> RAdam:
        return self.inner.inner

    def get_config(self) -> dict[str, Any]:
        config = copy.deepcopy(self.radam.get_config())
        config.update(
            name=self.name, sync_period=self.sync_period,
            slow_step_size=self.slow_step_size, conv_only=self.conv_only,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Ranger:
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = keras.optimizers.schedules.deserialize(
                config["learning_rate"], custom_objects=custom_objects
            )
        return cls(**config)
