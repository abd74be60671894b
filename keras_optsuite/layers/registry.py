"""The one list of what keras-optsuite ships as layers (``LAYERS``) and regularizers (``REGULARIZERS``).

Docs, the contract suite (``tests/test_layer_contract.py``) and tracking
(which layers' rates to record) read it. Adding a layer = its module, its
row here, its row in the contract suite's table.
"""

from __future__ import annotations

import dataclasses

import keras

from keras_optsuite._config import NamedByClass
from keras_optsuite.layers.batch_renormalization import BatchRenormalization
from keras_optsuite.layers.drop_connect import DropConnect
from keras_optsuite.layers.dropblock import DropBlock1D, DropBlock2D
from keras_optsuite.layers.ghost_batch_normalization import GhostBatchNormalization
from keras_optsuite.layers.mixing import CutMix, MixUp
from keras_optsuite.layers.stochastic_depth import DropPath, StochasticDepth
from keras_optsuite.layers.weight_normalization import WeightNormalization
from keras_optsuite.regularizers import SoftOrthogonal, SpectralRestrictedIsometry

KINDS = ("stochastic", "normalization", "reparameterization", "batch mixing", "regularizer")


@dataclasses.dataclass(frozen=True)
class LayerSpec(NamedByClass):
    """One shipped layer or regularizer: the class, its kind and its paper."""

    cls: type
    kind: str
    paper: str
    url: str
    # The attribute holding the layer's rate (what DropoutScheduler ramps
    # and tracking records), or None.
    rate_attribute: str | None = None


def _rows(*specs: LayerSpec) -> dict[str, LayerSpec]:
    return {spec.name: spec for spec in specs}


_DROPBLOCK = "Ghiasi, Lin, Le, 2018, DropBlock: A regularization method for convolutional networks"

LAYERS: dict[str, LayerSpec] = _rows(
    LayerSpec(DropBlock1D, "stochastic", _DROPBLOCK, "https://arxiv.org/abs/1810.12890", "rate"),
    LayerSpec(DropBlock2D, "stochastic", _DROPBLOCK, "https://arxiv.org/abs/1810.12890", "rate"),
    LayerSpec(StochasticDepth, "stochastic",
              "Huang et al., 2016, Deep Networks with Stochastic Depth",
              "https://arxiv.org/abs/1603.09382", "survival_probability"),
    LayerSpec(DropPath, "stochastic",
              "Larsson et al., 2017, FractalNet (drop-path)",
              "https://arxiv.org/abs/1605.07648", "rate"),
    LayerSpec(DropConnect, "stochastic",
              "Wan, Zeiler, Zhang, LeCun, Fergus, 2013, Regularization of Neural Networks using DropConnect",
              "http://proceedings.mlr.press/v28/wan13.html", "rate"),
    LayerSpec(WeightNormalization, "reparameterization",
              "Salimans, Kingma, 2016, Weight Normalization",
              "https://arxiv.org/abs/1602.07868"),
    LayerSpec(BatchRenormalization, "normalization",
              "Ioffe, 2017, Batch Renormalization",
              "https://arxiv.org/abs/1702.03275"),
    LayerSpec(GhostBatchNormalization, "normalization",
              "Hoffer, Hubara, Soudry, 2017, Train longer, generalize better (ghost batch normalization)",
              "https://arxiv.org/abs/1705.08741"),
    LayerSpec(MixUp, "batch mixing",
              "Zhang, Cisse, Dauphin, Lopez-Paz, 2018, mixup: Beyond Empirical Risk Minimization",
              "https://arxiv.org/abs/1710.09412"),
    LayerSpec(CutMix, "batch mixing",
              "Yun et al., 2019, CutMix: Regularization Strategy to Train Strong Classifiers",
              "https://arxiv.org/abs/1905.04899"),
)

REGULARIZERS: dict[str, LayerSpec] = _rows(
    LayerSpec(SoftOrthogonal, "regularizer",
              "Bansal, Chen, Wang, 2018, Can We Gain More from Orthogonality Regularizations (SO)",
              "https://arxiv.org/abs/1810.09102"),
    LayerSpec(SpectralRestrictedIsometry, "regularizer",
              "Bansal, Chen, Wang, 2018, Can We Gain More from Orthogonality Regularizations (SRIP)",
              "https://arxiv.org/abs/1810.09102"),
)


def rates(model: keras.Model) -> dict[str, float]:
    """``{"<layer name>.<attribute>": value}`` for every registered layer in ``model``.

    What a tracking callback logs as the model's regularization settings.
    """
    found = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        spec = LAYERS.get(type(layer).__name__)
        name = layer.name
        if spec is not None and spec.cls is type(layer) and spec.rate_attribute:
            found[f"{name}.{spec.rate_attribute}"] = float(getattr(layer, spec.rate_attribute))
    return found
