"""``optsuite runs`` and ``optsuite ui``: read the record of a config's pipelines.

- ``runs``: a table of the experiment's recent runs, or of one run's
  children (``--run ID``, e.g. a bake-off: its optimizers; an optimizer's
  run: its trials and seeds), with only the columns that differ.
- ``ui``: starts ``mlflow ui`` on the config's store on 127.0.0.1 (a
  server's address is printed instead), prints its address and the
  comparison page of the latest bake-off, and serves until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Mapping, TextIO

_SHOWN_METRICS = ("val_loss", "val_accuracy", "test_loss", "test_accuracy", "test_mae", "best_score", "target")


def _store(config: Mapping[str, Any]) -> tuple[str, str]:
    from keras_optsuite.callbacks._store import resolve_tracking_uri

    tracking = config["tracking"]
    return (resolve_tracking_uri(tracking["tracking_uri"]),
            tracking["experiment"] or f"keras-optsuite-{config['_source']['name']}")


def run_runs(config: Mapping[str, Any], *, run_id: str | None = None, limit: int = 20,
             out: TextIO | None = None) -> Any:
    """Print (and return) the table of recent runs, or of ``run_id``'s children."""
    out = out if out is not None else sys.stdout
    import pandas

    from keras_optsuite.callbacks.compare import compare_runs

    uri, experiment = _store(config)
    if run_id is None:
        table = compare_runs(experiment, tracking_uri=uri, metrics=None)
        table = table.sort_values("start_time", ascending=False).head(limit)
    else:
        table = compare_runs(parent_run_id=run_id, tracking_uri=uri, metrics=None)
    if table.empty:
        print("no runs", file=out)
        return table
    keep = ["run_name", "status", "start_time", "duration_s"]
    keep += [c for c in table.columns if c.startswith("param.") and table[c].nunique(dropna=False) > 1]
    keep += [c for c in table.columns if c.endswith(".final") and c.removesuffix(".final") in _SHOWN_METRICS]
    keep.append("run_id")
    shown = table[keep].copy()
    shown["start_time"] = shown["start_time"].dt.strftime("%Y-%m-%d %H:%M")
    with pandas.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 40):
        print(shown.to_string(index=False), file=out)
    return shown


def latest_bake_off(client: Any, experiment_id: str) -> Any:
    runs = client.search_runs([experiment_id], filter_string="tags.`keras_optsuite.kind` = 'compare'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def run_ui(config: Mapping[str, Any], *, port: int = 5000, out: TextIO | None = None) -> int:
    """Serve the MLflow UI of the config's store until interrupted; returns the exit status."""
    out = out if out is not None else sys.stdout
    import mlflow

    from keras_optsuite.callbacks._store import is_http_uri

    uri, experiment_name = _store(config)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if is_http_uri(uri):
        return _serve(None, uri.rstrip("/"), client, experiment, experiment_name, out)
    address = f"http://127.0.0.1:{port}"
    log_path = Path("outputs") / "ui" / config["_source"]["name"] / "mlflow-ui.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:  # the server's own output: stdout stays the addresses
        # Its own process group (mlflow ui starts uvicorn, which starts workers): stopping the
        # group stops them all, whatever ends this command.
        process = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                    "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                   stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(address + "/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        if process.poll() is not None:
            print(f"optsuite ui: mlflow ui exited with {process.returncode}; see {log_path}", file=sys.stderr)
            return 1
        return _serve(process, address, client, experiment, experiment_name, out)
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """Stop the UI server and every process it started (SIGTERM, then SIGKILL)."""
    for signal_number, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal_number)
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers that outlived their parent


def _serve(process: subprocess.Popen | None, address: str, client: Any, experiment: Any, experiment_name: str,
           out: TextIO) -> int:
    """Print the addresses, then wait for the server; SIGTERM ends it like Ctrl-C."""
    print(f"MLflow UI: {address} (switch to 'Model training' at the top left)", file=out, flush=True)
    if experiment is not None:
        print(f"experiment {experiment_name!r}: {address}/#/experiments/{experiment.experiment_id}", file=out)
        bake_off = latest_bake_off(client, experiment.experiment_id)
        if bake_off is not None:
            children = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{bake_off.info.run_id}'")
            ids = json.dumps([run.info.run_id for run in children])
            query = urllib.parse.urlencode({"runs": ids, "experiments": json.dumps([experiment.experiment_id])})
            print(f"latest bake-off ({bake_off.info.run_name}): {address}/#/compare-runs?{query}", file=out)
    out.flush()
    if process is None:
        return 0

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
