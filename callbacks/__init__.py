"""Keras callbacks of keras-optsuite (installed as ``keras_optsuite.callbacks``).

MLflow tracking and training callbacks arrive here; see the issues that build
on the foundation.
"""
