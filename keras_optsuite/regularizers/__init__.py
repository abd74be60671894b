"""Weight regularizers Keras 3 lacks: soft orthogonality penalties."""

from keras_optsuite.regularizers.orthogonality import SoftOrthogonal, SpectralRestrictedIsometry

__all__ = ["SoftOrthogonal", "SpectralRestrictedIsometry"]
