"""Pipelines of keras-optsuite (installed as ``keras_optsuite.pipelines``).

Jobs that cron or a scheduler runs unattended. Today: :mod:`.demo`, which
compares optimizers on scikit-learn's bundled digits data.
"""
