"""The ``pyalign`` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from pyalign.errors import PyAlignError

logger = logging.getLogger("pyalign")

# Errors a user can cause and fix: shown as one line without a traceback unless --debug is given.
USER_ERRORS = (PyAlignError, ValueError, KeyError, FileNotFoundError, NotImplementedError)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _error_message(error: BaseException) -> str:
    # KeyError's str() wraps the message in quotes; show it as written.
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error)


class PyAlignGroup(click.Group):
    """A click group that turns user errors into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as error:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {_error_message(error)}", err=True)
            sys.exit(2)


@click.group(cls=PyAlignGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.option(
    "--logging_level",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Logging level of pyalign and the libraries it calls.",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, logging_level: str) -> None:
    """Align language models with human preferences."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    _configure_logging(logging_level)


@main.command()
@click.argument("config_path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--config", "config_option", type=click.Path(path_type=Path), help="Config YAML (Ludwig form)."
)
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    help="Training data: .csv, .jsonl, .jsonl.gz or .json.",
)
@click.option(
    "--validation_set",
    type=click.Path(path_type=Path),
    help="Held-out data, evaluated during training.",
)
@click.option(
    "--output_directory",
    default="results",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for run folders.",
)
@click.option(
    "--experiment_name", default="experiment", show_default=True, help="Run folder name prefix."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key for this run, e.g. trainer.max_steps=20. Repeatable.",
)
def train(
    config_path,
    config_option,
    dataset,
    validation_set,
    output_directory,
    experiment_name,
    overrides,
):
    """Train a model with the config at CONFIG_PATH (or --config)."""
    from pyalign.api import AlignModel

    if config_path is not None and config_option is not None:
        raise click.UsageError("give the config either as an argument or with --config, not both")
    config = config_path if config_path is not None else config_option
    if config is None:
        raise click.UsageError("missing config: pyalign train CONFIG.yaml [--dataset PATH]")
    model = AlignModel(config, overrides=tuple(overrides))
    _, _, output_dir = model.train(
        dataset=dataset,
        validation_set=validation_set,
        output_directory=output_directory,
        experiment_name=experiment_name,
    )
    click.echo(f"model saved to {output_dir / 'model'}")


@main.group()
def prepare() -> None:
    """Convert a public preference dataset into training files."""


@prepare.command("hh-rlhf")
@click.option(
    "--output_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for train.csv, train_kto.csv, test.csv and test_kto.csv.",
)
@click.option(
    "--input",
    "input_path",
    help="A local .jsonl[.gz] file (the train split), a folder with train.jsonl[.gz] and "
    "test.jsonl[.gz], or a hub dataset id.  [default: Anthropic/hh-rlhf]",
)
@click.option(
    "--data_dir", help="For a hub dataset id: the subset folder to read, e.g. harmless-base."
)
@click.option(
    "--max_train_samples", type=click.IntRange(min=1), help="Pairs kept from the train split."
)
@click.option(
    "--max_test_samples", type=click.IntRange(min=1), help="Pairs kept from the test split."
)
@click.option(
    "--format",
    "output_format",
    default="dpo",
    show_default=True,
    type=click.Choice(["dpo", "kto", "both"]),
    help="dpo: prompt, chosen, rejected. kto: prompt, response, label (two rows per pair).",
)
@click.option(
    "--prompt",
    "prompt_mode",
    default="last-turn",
    show_default=True,
    type=click.Choice(["last-turn", "full-context"]),
    help="The prompt: the last human turn, or the whole conversation before the last answer.",
)
@click.option(
    "--skip_bad_records",
    is_flag=True,
    help="Count malformed records as skipped instead of stopping at the first one.",
)
def prepare_hh_rlhf(
    output_dir,
    input_path,
    data_dir,
    max_train_samples,
    max_test_samples,
    output_format,
    prompt_mode,
    skip_bad_records,
):
    """Convert Anthropic HH-RLHF conversations into prompt and response columns."""
    from pyalign.prepare import prepare_hh_rlhf as convert

    summary = convert(
        output_dir,
        input=input_path,
        max_train_samples=max_train_samples,
        max_test_samples=max_test_samples,
        format=output_format,
        prompt=prompt_mode,
        data_dir=data_dir,
        skip_bad_records=skip_bad_records,
    )
    for converted in summary.files:
        click.echo(f"{converted.output}: {converted.describe()}")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--dataset",
    required=True,
    type=click.Path(path_type=Path),
    help="Held-out pairs: .csv, .jsonl, .jsonl.gz or .json with the run's columns.",
)
@click.option(
    "--reference",
    help="Reference model folder or hub id.  [default: the base model of MODEL_DIR]",
)
@click.option("--batch_size", type=click.IntRange(min=1), help="Pairs per forward pass.")
@click.option(
    "--max_samples", type=click.IntRange(min=1), help="Evaluate only the first N records."
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="JSON file for the result.  [default: evaluation_statistics.json in the run folder]",
)
def evaluate(model_dir, dataset, reference, batch_size, max_samples, output):
    """Score a trained model against its reference on held-out preference pairs."""
    from pyalign.evaluate import evaluate_model_dir

    result, json_path = evaluate_model_dir(
        model_dir,
        dataset,
        reference=reference,
        batch_size=batch_size,
        max_samples=max_samples,
        output=output,
    )
    click.echo(result.format_table())
    if json_path is not None:
        click.echo(f"\nwritten to {json_path}")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="New or empty folder to write the model to.",
)
@click.option(
    "--merge",
    is_flag=True,
    help="Merge a LoRA adapter into the base weights and write full weights.",
)
def export(model_dir, output_dir, merge):
    """Copy a trained model folder, or with --merge write it as merged full weights."""
    from pyalign.export import export_model

    written = export_model(model_dir, output_dir, merge=merge)
    kind = "merged full weights" if merge else "model"
    click.echo(f"{kind} written to {written}")


@main.group()
def upload() -> None:
    """Publish a trained model folder."""


@upload.command("hf_hub")
@click.option("-r", "--repo_id", required=True, help="Hub repository, ORG/NAME.")
@click.option(
    "-m",
    "--model_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The model folder: results/<run>/model, or a folder written by pyalign export.",
)
@click.option(
    "--repo_type",
    default="model",
    show_default=True,
    type=click.Choice(["model", "dataset", "space"]),
    help="Kind of hub repository.",
)
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--commit_message", help="Commit message.  [default: Upload MODEL with pyalign]")
@click.option("--commit_description", help="Longer commit description.")
def upload_hf_hub(repo_id, model_path, repo_type, private, commit_message, commit_description):
    """Upload a model folder to the Hugging Face hub (token from HF_TOKEN or hf auth login)."""
    from pyalign.upload import upload_to_hf_hub

    commit_url = upload_to_hf_hub(
        repo_id,
        model_path,
        repo_type=repo_type,
        private=private,
        commit_message=commit_message,
        commit_description=commit_description,
    )
    click.echo(f"uploaded {model_path} to {repo_id}: {commit_url}")


if __name__ == "__main__":
    main()
