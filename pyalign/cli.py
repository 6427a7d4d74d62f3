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
@click.option("--config", "config_option", type=click.Path(path_type=Path), help="Config YAML (Ludwig form).")
@click.option("--dataset", type=click.Path(path_type=Path), help="Training data: .csv, .jsonl, .jsonl.gz or .json.")
@click.option("--validation_set", type=click.Path(path_type=Path), help="Held-out data, evaluated during training.")
@click.option("--output_directory", default="results", show_default=True, type=click.Path(path_type=Path), help="Folder for run folders.")
@click.option("--experiment_name", default="experiment", show_default=True, help="Run folder name prefix.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key for this run, e.g. trainer.max_steps=20. Repeatable.")
def train(config_path, config_option, dataset, validation_set, output_directory, experiment_name, overrides):
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


if __name__ == "__main__":
    main()
