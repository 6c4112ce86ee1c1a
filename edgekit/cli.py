"""The ``edgekit`` command line.

Commands load lazily: ``edgekit suggest`` on a device never imports the
TensorFlow side, which only ``convert``/``train-base``/Keras evaluation touch.
"""
from __future__ import annotations

import importlib

import click

# name -> "module:attribute"; each area owns its module.
COMMANDS = {
    "convert": "converters.commands:convert",
    "train-base": "converters.train_base:command",
    "evaluate": "edgekit.commands.evaluate:evaluate",
    "info": "edgekit.commands.device:info",
    "suggest": "edgekit.commands.device:suggest",
    "personalize": "edgekit.commands.device:personalize",
    "reset": "edgekit.commands.device:reset",
    "keygen": "edgekit.commands.federated:keygen",
    "export-update": "edgekit.commands.federated:export_update",
    "aggregate": "edgekit.commands.federated:aggregate",
    "simulate": "edgekit.commands.simulate:simulate",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            return _unavailable(name, e)


def _unavailable(name: str, error: Exception) -> click.Command:
    """A stand-in that explains which extra to install, instead of a traceback."""
    extra = {"convert": "convert", "train-base": "convert", "simulate": "flower"}.get(name)
    hint = f" Install it with: pip install 'edgekit[{extra}]'" if extra else ""

    @click.command(name, help=f"(unavailable: {error})", context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args):
        raise click.ClickException(f"`edgekit {name}` is not available here: {error}.{hint}")

    return stub


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgekit")
def main() -> None:
    """edgekit: on-device next-word prediction that learns from its user."""


if __name__ == "__main__":
    main()
