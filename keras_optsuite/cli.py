"""The ``optsuite`` command.

``--help``, ``--version``, ``list`` and ``launch`` do not import TensorFlow
(the entry point ``keras_optsuite_cli`` defers the package's ``__init__``);
every other command imports the whole library first. Keep this module's own
imports free of TensorFlow: handlers import what they need.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from keras_optsuite._version import __version__


def _cmd_list(args: argparse.Namespace) -> int:
    from keras_optsuite import _catalog

    print(_catalog.render(_catalog.SECTIONS), end="")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from keras_optsuite.pipelines import demo

    demo.run(demo.config_from_args(args))
    return 0


def _cmd_tracking_replay(args: argparse.Namespace) -> int:
    from keras_optsuite.callbacks.replay import replay_journals

    results = replay_journals(args.journal, args.tracking_uri)
    if not results:
        print("no journal to replay: nothing was spooled")
        return 0
    waiting = 0
    for result in results:
        waiting += result.remaining
        if result.tracking_uri is None and result.remaining:
            print(
                f"{result.journal}: {result.remaining} records wait for a store this journal does not name; "
                f"replay them with: optsuite tracking replay --journal {result.journal} --tracking-uri URI"
            )
        elif result.sent or result.remaining:
            print(f"{result.journal}: sent {result.sent} records to {result.tracking_uri}; {result.remaining} remain")
        if result.rejected:
            print(f"{result.journal}: {result.rejected} records refused by the store, kept in {result.journal}.rejected")
    if not waiting:
        print(f"every journal is replayed ({len(results)} checked)")
    return 1 if waiting else 0


def _cmd_launch(args: argparse.Namespace) -> int:
    from keras_optsuite.distribute.launch import launch

    command = list(args.program)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ValueError("no program to launch: optsuite launch --workers N -- python train.py ...")
    return launch(command, workers=args.workers, ps=args.ps, timeout=args.timeout)


# Commands that run without importing TensorFlow (nor the rest of the library).
_LIGHT_HANDLERS = frozenset({_cmd_list, _cmd_launch})


def _import_library() -> None:
    """Finish importing ``keras_optsuite`` if the entry point deferred it."""
    import keras_optsuite_cli

    keras_optsuite_cli.finish_deferred_imports()


def build_parser() -> argparse.ArgumentParser:
    from keras_optsuite.pipelines import demo

    parser = argparse.ArgumentParser(
        prog="optsuite",
        description="keras-optsuite: research optimizers for Keras 3 on TensorFlow.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    list_parser = commands.add_parser(
        "list", help="list the shipped optimizers (by family), wrappers, gradient "
        "transformations, schedules, layers and regularizers with their papers"
    )
    list_parser.set_defaults(handler=_cmd_list)

    demo_parser = commands.add_parser(
        "demo", help="compare optimizers on scikit-learn's digits and write a report"
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=_cmd_demo)

    tracking_parser = commands.add_parser("tracking", help="MLflow tracking utilities")
    tracking_commands = tracking_parser.add_subparsers(
        dest="tracking_command", metavar="COMMAND", required=True
    )
    replay_parser = tracking_commands.add_parser(
        "replay",
        help="send the records spooled while the tracking server was unreachable "
        "(exit 1 if some remain)",
    )
    replay_parser.add_argument(
        "--journal", default=None,
        help="journal file, or a directory: every *.jsonl in it "
        "(default: every journal under ./mlruns/journals/, each sent to its own store)",
    )
    replay_parser.add_argument(
        "--tracking-uri", default=None,
        help="send to this store (default: the store each journal was written for)",
    )
    replay_parser.set_defaults(handler=_cmd_tracking_replay)

    launch_parser = commands.add_parser(
        "launch",
        help="run a multi-worker job on this machine: N processes with TF_CONFIG, prefixed output",
        description="Start the program once per worker (and per parameter server and a chief with "
        "--ps) on free 127.0.0.1 ports, each with its TF_CONFIG; stream every line prefixed "
        "[worker i]; exit non-zero as soon as one fails (the others are stopped).",
    )
    launch_parser.add_argument("--workers", type=int, required=True, help="number of workers (>= 1)")
    launch_parser.add_argument("--ps", type=int, default=0, help="parameter servers (adds a chief)")
    launch_parser.add_argument("--timeout", type=float, default=None, help="seconds before the job is stopped")
    launch_parser.add_argument("program", nargs=argparse.REMAINDER, help="-- python train.py ...")
    launch_parser.set_defaults(handler=_cmd_launch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.handler not in _LIGHT_HANDLERS:
        _import_library()
    try:
        return args.handler(args)
    except ValueError as error:
        print(f"optsuite {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
