"""``optsuite promote CONFIG``: register the latest winner and move the champion alias only if it is better.

The candidate is the winner's model of the latest finished bake-off of the
config's experiment (``optsuite compare``), else the final model of its
latest finished ``optsuite train`` run. It is registered as a version of
``[promote] model_name`` (once: a model already registered is reused).
Then the candidate and the current champion (the version the alias
``[promote] alias`` points to) are both evaluated on the held-out test
split of the config, now, the same way; the alias moves to the candidate
only if its score beats the champion's by ``[promote] min_improvement``
(or there is no champion). The decision and both scores are written on the
candidate's model version as tags (``keras_optsuite.promote.*``).
``--dry-run`` evaluates and says what it would do, changing nothing.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Mapping, TextIO

from keras_optsuite.callbacks.compare import lower_is_better
from keras_optsuite.pipelines._common import OUTPUT_ROOT, context, evaluate
from keras_optsuite.pipelines._unattended import PipelineLock, say

TAG = "keras_optsuite.promote."
MODEL_ID_TAG = "keras_optsuite.model_id"


class NothingToPromote(RuntimeError):
    """No finished bake-off or training run with a logged model in the experiment."""


def _candidate(client: Any, experiment_id: str) -> tuple[str, str, str]:
    """(model id, run id, what it is) of the latest finished bake-off's winner, else of the latest train run."""
    for kind, tag in (("compare", "keras_optsuite.winner_model_id"), ("train", None)):
        runs = client.search_runs(
            [experiment_id], filter_string=f"tags.`keras_optsuite.kind` = '{kind}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
        if not runs:
            continue
        run = runs[0]
        if tag is not None and run.data.tags.get(tag):
            winner = run.data.tags["keras_optsuite.winner_run_id"]
            return run.data.tags[tag], winner, f"winner of bake-off {run.info.run_id}"
        outputs = run.outputs.model_outputs if run.outputs else []
        for output in outputs:
            if client.get_logged_model(output.model_id).name == "final":
                return output.model_id, run.info.run_id, f"final model of train run {run.info.run_id}"
    raise NothingToPromote("no finished bake-off or train run with a logged model in this experiment: run "
                           "`optsuite compare` (or `optsuite train`) first")


def run_promote(config: Mapping[str, Any], *, dry_run: bool = False, quiet: bool = False,
                output_root: Path = OUTPUT_ROOT, out: TextIO | None = None) -> dict[str, Any]:
    """Decide and (unless ``dry_run``) apply the promotion; returns the decision printed on ``out``."""
    out = out if out is not None else sys.stdout
    import mlflow

    ctx = context(config, "promote", "compare", output_root)
    section, batch_size = config["promote"], config["training"]["batch_size"]
    metric = section["metric"] or ctx.metric.removeprefix("val_")
    lower = lower_is_better(metric)
    name, alias = section["model_name"], section["alias"]
    with PipelineLock(ctx.output, f"promote {ctx.name}"):
        client = mlflow.MlflowClient(ctx.tracking_uri, registry_uri=ctx.tracking_uri)
        experiment = client.get_experiment_by_name(ctx.experiment)
        if experiment is None:
            raise NothingToPromote(f"experiment {ctx.experiment!r} does not exist in {ctx.tracking_uri}")
        model_id, run_id, what = _candidate(client, experiment.experiment_id)

        def score(logged_model_id: str) -> float:
            model = load_logged_model(client, logged_model_id)
            logs = evaluate(model, ctx.data.x_test, ctx.data.y_test, batch_size)
            if metric not in logs:
                raise ValueError(f"promote.metric = {metric!r} is not among the held-out metrics {sorted(logs)}")
            return logs[metric]

        say(f"[promote {ctx.name}] evaluating the candidate ({what}) on the held-out split", quiet)
        candidate_score = score(model_id)
        champion = None
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            champion = client.get_model_version_by_alias(name, alias)
        champion_score = None
        if champion is not None:
            say(f"[promote {ctx.name}] evaluating the champion ({name} version {champion.version})", quiet)
            champion_id = _model_id(champion)
            if champion_id is None:
                raise ValueError(f"{name} version {champion.version} ({alias}) names no logged model to evaluate "
                                 f"(no {MODEL_ID_TAG} tag or model_id): register the {alias} from an optsuite run")
            champion_score = score(champion_id)
        margin = float(section["min_improvement"])
        if champion is None:
            promote, reason = True, f"no {alias} yet"
        elif _model_id(champion) == model_id:
            promote, reason = False, f"the candidate is already {alias} (version {champion.version})"
        else:
            assert champion_score is not None  # evaluated above
            gain = champion_score - candidate_score if lower else candidate_score - champion_score
            promote = gain > 0 and gain >= margin
            reason = (f"{metric} {candidate_score:.4f} vs {champion_score:.4f} of version {champion.version}: "
                      f"{'better' if promote else 'not better'} by at least {margin}")
        decision = {
            "promote": promote, "reason": reason, "metric": metric, "candidate_score": candidate_score,
            "champion_score": champion_score, "candidate_model_id": model_id, "candidate_run_id": run_id,
            "model_name": name, "alias": alias, "dry_run": dry_run, "version": None,
            "champion_version": str(champion.version) if champion is not None else None,
        }  # fmt: skip
        if not dry_run:
            version = _register(client, name, model_id, run_id)
            decision["version"] = str(version.version)
            tags = {"decision": "promoted" if promote else "kept champion", "reason": reason, "metric": metric,
                    "candidate_score": repr(candidate_score),
                    "champion_score": repr(champion_score) if champion_score is not None else "none",
                    "champion_version": str(decision["champion_version"] or "none")}
            for key, value in tags.items():
                client.set_model_version_tag(name, version.version, TAG + key, value)
            if promote:
                client.set_registered_model_alias(name, alias, version.version)
    verb = "would move" if dry_run else "moved"
    if promote:
        print(f"promote {ctx.name}: {verb} {alias} of {name} to the candidate"
              + (f" (version {decision['version']})" if decision["version"] else "") + f": {reason}", file=out)
    else:
        print(f"promote {ctx.name}: {alias} stays version {decision['champion_version']}: {reason}", file=out)
    return decision


def load_logged_model(client: Any, model_id: str) -> Any:
    """The Keras model of a logged model, read from ``client``'s store.

    ``mlflow.keras.load_model("models:/...")`` would resolve the URI in
    MLflow's process-wide store instead (the default ``./mlflow.db`` when
    none is set), so the artifacts are downloaded through this store first.
    """
    import tempfile

    import mlflow.artifacts
    import mlflow.keras

    location = client.get_logged_model(model_id).artifact_location
    with tempfile.TemporaryDirectory(prefix="optsuite-model-") as directory:
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=directory,
                                                    tracking_uri=client.tracking_uri)
        return mlflow.keras.load_model(local)


def _register(client: Any, name: str, model_id: str, run_id: str) -> Any:
    """The model version of ``model_id`` under ``name``, created if it is not registered yet."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for version in client.search_model_versions(f"name = '{name}'"):
        if _model_id(version) == model_id:
            return version
    # The logged model's own location as the source, not "models:/<id>": MLflow 3.17's SQL registry
    # resolves that URI in the process-wide store (its own TODO), not in this client's.
    source = client.get_logged_model(model_id).artifact_location
    return client.create_model_version(name, source, run_id=run_id, model_id=model_id,
                                       tags={MODEL_ID_TAG: model_id})


def _model_id(version: Any) -> str | None:
    """The logged model a version was registered from (our tag: the SQL registry may not keep it)."""
    return version.tags.get(MODEL_ID_TAG) or getattr(version, "model_id", None)
