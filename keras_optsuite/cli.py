"""The ``optsuite`` command."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from keras_optsuite._version import __version__


def _cmd_list(args: argparse.Namespace) -> int:
    from keras_optsuite.optimizers import REGISTRY, WRAPPERS

    for spec in REGISTRY.values():
        print(f"{spec.registered_name:<42} {spec.family:<18} {spec.paper}")
    for spec in WRAPPERS.values():
        print(f"{spec.registered_name:<42} {'wrapper':<18} {spec.paper}")
    from keras_optsuite.layers import LAYERS, REGULARIZERS

    for spec in [*LAYERS.values(), *REGULARIZERS.values()]:
        print(f"{spec.registered_name:<42} {spec.kind:<18} {spec.paper}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from keras_optsuite.pipelines import demo

    demo.run(demo.config_from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from keras_optsuite.pipelines import demo

    parser = argparse.ArgumentParser(
        prog="optsuite",
        description="keras-optsuite: research optimizers for Keras 3 on TensorFlow.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    list_parser = commands.add_parser("list", help="list the shipped optimizers, layers and regularizers with their papers")
    list_parser.set_defaults(handler=_cmd_list)

    demo_parser = commands.add_parser(
        "demo", help="compare optimizers on scikit-learn's digits and write a report"
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except ValueError as error:
        print(f"optsuite {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
