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
from typing import Any, Sequence

from keras_optsuite._version import __version__


def _cmd_list(args: argparse.Namespace) -> int:
    from keras_optsuite import _catalog

    print(_catalog.render(_catalog.SECTIONS), end="")
    return 0


DEMO_CONFIG = Path(__file__).resolve().parent.parent / "pipelines" / "configs" / "demo.toml"


def _demo_config() -> Path:
    """The demo's config: from the source tree, or the copy installed with the package."""
    from importlib import resources

    if DEMO_CONFIG.is_file():
        return DEMO_CONFIG
    return Path(str(resources.files("keras_optsuite.pipelines") / "configs" / "demo.toml"))


def _cmd_pipeline(args: argparse.Namespace) -> int:
    """train, tune, compare, promote, runs, ui, demo: a config in, exit codes a scheduler can read."""
    from keras_optsuite.pipelines.config import load_config

    config_path = _demo_config() if args.command == "demo" else args.config
    config = load_config(config_path, args.set or [])
    common = {"quiet": args.quiet} if hasattr(args, "quiet") else {}
    if args.command in ("train", "tune", "compare", "demo"):
        from keras_optsuite.pipelines import compare, train, tune

        run = {"train": train.run_train, "tune": tune.run_tune, "compare": compare.run_compare,
               "demo": compare.run_compare}[args.command]
        workers = {"workers": args.workers} if args.command != "train" else {}
        run(config, slot=args.slot, **common, **workers)
    elif args.command == "promote":
        from keras_optsuite.pipelines.promote import run_promote

        run_promote(config, dry_run=args.dry_run, **common)
    elif args.command == "runs":
        from keras_optsuite.pipelines.inspect import run_runs

        run_runs(config, run_id=args.run, limit=args.limit)
    else:
        from keras_optsuite.pipelines.inspect import run_ui

        return run_ui(config, port=args.port)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from keras_optsuite import diagnose

    diagnose()
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
            print(f"{result.journal}: {result.rejected} records refused by the store, "
                  f"kept in {result.journal}.rejected")
    if not waiting:
        print(f"every journal is replayed ({len(results)} checked)")
    return 1 if waiting else 0


def _cmd_launch(args: argparse.Namespace) -> int:
    from keras_optsuite.distribute.launch import launch, launch_search

    command = list(args.program)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ValueError("no program to launch: optsuite launch --workers N -- python train.py ...")
    if args.search:
        if args.ps:
            raise ValueError(f"--search starts a chief and tuner workers; it takes no --ps (got --ps {args.ps})")
        return launch_search(command, workers=args.workers, timeout=args.timeout)
    return launch(command, workers=args.workers, ps=args.ps, timeout=args.timeout)


# Commands that run without importing TensorFlow (nor the rest of the library).
_LIGHT_HANDLERS = frozenset({_cmd_list, _cmd_launch})


def _import_library() -> None:
    """Finish importing ``keras_optsuite`` if the entry point deferred it."""
    import keras_optsuite_cli

    keras_optsuite_cli.finish_deferred_imports()


_PIPELINES = {
    "train": "one tracked training run of [training] optimizer",
    "tune": "one tracked Keras Tuner search over [tune] optimizers",
    "compare": "the optimizer bake-off: equal tuning budgets, the same data and initial weights, "
               "a leaderboard, plots and the winner, tracked in MLflow",
    "promote": "register the latest winner and move the champion alias only if it is better on the held-out split",
    "runs": "a table of the config's recent runs, or of one run's children (--run)",
    "ui": "start the MLflow UI on the config's store and print its address",
    "demo": "the bake-off on the embedded demo config (pipelines/configs/demo.toml): what `make demo` runs",
}

_EXIT_CODES = """exit codes: 0 success, 1 failure (the MLflow run ends FAILED with its traceback), 2 bad config or
arguments, 3 another run of the same pipeline holds its lock, 130 interrupted."""


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--workers must be a whole number >= 0, got {text!r}")
    return value


def _add_pipeline_commands(commands: Any) -> None:
    from keras_optsuite.pipelines.config import describe_schema

    for name, summary in _PIPELINES.items():
        parser = commands.add_parser(
            name, help=summary, description=summary,
            epilog=_EXIT_CODES + "\n\nconfig keys (TOML):\n" + describe_schema(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name != "demo":
            parser.add_argument("config", type=Path, help="the pipeline's TOML config (see below)")
        parser.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                            help="override a config key, e.g. --set training.epochs=3 (repeatable)")
        if name in ("train", "tune", "compare", "demo", "promote"):
            parser.add_argument("--quiet", action="store_true", help="no progress on stderr (for cron)")
        if name in ("train", "tune", "compare", "demo"):
            parser.add_argument("--slot", default=None, help="name of this scheduled run (e.g. the date): a "
                                "finished slot is not run again, a crashed one resumes")
        if name in ("tune", "compare", "demo"):
            parser.add_argument("--workers", type=_worker_count, default=0, metavar="N",
                                help="run the tuning on N Keras Tuner worker processes and a chief (the oracle) "
                                "on this machine (default: 0, in this process)")
        if name == "promote":
            parser.add_argument("--dry-run", action="store_true", help="evaluate and say what would happen")
        if name == "runs":
            parser.add_argument("--run", default=None, help="list this run's children (e.g. a bake-off's)")
            parser.add_argument("--limit", type=int, default=20, help="runs listed (default: %(default)s)")
        if name == "ui":
            parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default: %(default)s)")
        parser.set_defaults(handler=_cmd_pipeline)


def build_parser() -> argparse.ArgumentParser:
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

    doctor_parser = commands.add_parser(
        "doctor", help="which patches of Keras are active (closure train step, multi-worker fit) "
        "and why the others are not; the private Keras methods overridden"
    )
    doctor_parser.set_defaults(handler=_cmd_doctor)

    _add_pipeline_commands(commands)

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
    launch_parser.add_argument(
        "--search", action="store_true",
        help="a distributed Keras Tuner search instead: a chief (the oracle) and N tuner workers, each with "
        "KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set (no TF_CONFIG)",
    )
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
    if args.handler is _cmd_pipeline:
        return _run_pipeline(args)
    try:
        return args.handler(args)
    except ValueError as error:
        print(f"optsuite {args.command}: error: {error}", file=sys.stderr)
        return 2


def _run_pipeline(args: argparse.Namespace) -> int:
    """A pipeline command with its exit codes: 2 bad config, 3 lock held, 1 any other failure, 130 Ctrl-C."""
    import traceback

    from keras_optsuite.pipelines._unattended import LOCK_HELD_EXIT, LockHeld
    from keras_optsuite.pipelines.config import ConfigError

    try:
        return _cmd_pipeline(args)
    except ConfigError as error:
        print(f"optsuite {args.command}: error: {error}", file=sys.stderr)
        return 2
    except LockHeld as error:
        print(f"optsuite {args.command}: {error}", file=sys.stderr)
        return LOCK_HELD_EXIT
    except KeyboardInterrupt:
        print(f"optsuite {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - unattended: say what failed, exit 1
        traceback.print_exc()
        print(f"optsuite {args.command}: failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
