"""Entry point of the ``optsuite`` command, which starts without TensorFlow.

Installed as the top-level module ``keras_optsuite_cli`` (pyproject's
package-dir maps it from ``keras_optsuite/_cli_entry/``): it must live
outside the ``keras_optsuite`` package to be imported without it.

``import keras_optsuite`` imports TensorFlow and registers every class with
Keras (what ``compile(optimizer="keras_optsuite>RAdam")`` and ``load_model``
rely on); that takes seconds. ``optsuite --help``, ``--version``, ``list``
and ``launch`` need none of it, but Python runs a package's ``__init__``
before any module inside it. So this module, outside the package, does the
two halves of an ordinary import at different times: it creates the
``keras_optsuite`` and ``keras_optsuite.distribute`` package modules from
their specs now, and runs their ``__init__`` (:func:`finish_deferred_imports`)
only when a command needs the library. ``keras_optsuite.cli`` calls it before
every command but the light ones; ``tests/test_cli_startup.py`` checks that
the light ones do not import TensorFlow and that the others still work.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Sequence

# Packages whose __init__ imports TensorFlow, outermost first.
_DEFERRED = ("keras_optsuite", "keras_optsuite.distribute")
_pending: list[tuple[Any, Any]] = []


def _defer_package_inits() -> None:
    for name in _DEFERRED:
        if name in sys.modules:  # already imported (e.g. main() called in-process)
            continue
        spec = importlib.util.find_spec(name)
        assert spec is not None, name  # our own packages
        module = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        _pending.append((module, spec))


def finish_deferred_imports() -> None:
    """Run the deferred ``__init__``s: ``keras_optsuite`` is then wholly imported.

    Innermost first, so that ``keras_optsuite/__init__.py`` finds
    ``keras_optsuite.distribute`` complete. A no-op when nothing is deferred.
    """
    while _pending:
        module, spec = _pending.pop()
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module.__name__, None)  # as a failed import would
            raise


def main(argv: Sequence[str] | None = None) -> int:
    _defer_package_inits()
    from keras_optsuite.cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
