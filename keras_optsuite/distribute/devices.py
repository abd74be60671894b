"""Logical devices for testing distribution on one CPU."""

from __future__ import annotations

from keras_optsuite._validation import check_positive_int


def split_cpu(n: int) -> list[str]:
    """Split the first physical CPU into ``n`` logical devices; return their names.

    ``tf.distribute.MirroredStrategy(split_cpu(2))`` then runs two replicas on
    one CPU, which is how distribution is tested without GPUs. TensorFlow
    accepts the split only before it initializes its devices (the first op,
    ``tf.config.list_logical_devices``, creating a strategy...), so call this
    first. Calling it again with the same ``n`` returns the same names.

    Args:
        n: Number of logical CPU devices, >= 1.

    Returns:
        ``["/cpu:0", ..., f"/cpu:{n-1}"]``.

    Raises:
        RuntimeError: TensorFlow already initialized its devices with a
            different number of logical CPUs.

    Example:

    >>> from keras_optsuite.distribute import split_cpu
    >>> devices = split_cpu(2)            # before any other TensorFlow call
    >>> strategy = tf.distribute.MirroredStrategy(devices)
    """
    import tensorflow as tf

    n = check_positive_int("n", n)
    names = [f"/cpu:{index}" for index in range(n)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu)
    if configured is not None and len(configured) == n:
        return names
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * n
        )
    except RuntimeError:
        current = len(tf.config.list_logical_devices("CPU"))
        if current == n:  # e.g. n=1 on a TensorFlow that never split its CPU
            return names
        raise RuntimeError(
            f"split_cpu(n={n}) came too late: TensorFlow already initialized "
            f"{current} logical CPU device(s). Call split_cpu before any other "
            "TensorFlow operation (first thing in the program or test session)."
        ) from None
    return names
