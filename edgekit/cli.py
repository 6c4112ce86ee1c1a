"""The ``edgekit`` command line.

Commands load lazily: ``edgekit suggest`` on a device never imports the
TensorFlow side, which only ``convert``/``train-base``/Keras evaluation touch.
"""
from __future__ import annotations

import importlib

import click

# name -> "module:attribute"; each area owns its module.
COMMANDS = {
    "convert": "edgekit.commands.convert:convert",
    "train-base": "edgekit.commands.train_base:train_base",
    "evaluate": "edgekit.commands.evaluate:evaluate",
    "info": "edgekit.commands.device:info",
    "suggest": "edgekit.commands.device:suggest",
    "personalize": "edgekit.commands.device:personalize",
    "reset": "edgekit.commands.device:reset",
    "words": "edgekit.commands.words:words",
    "install": "edgekit.commands.install:install",
    "keygen": "edgekit.commands.federated:keygen",
    "device-key": "edgekit.commands.federated:device_key",
    "export-update": "edgekit.commands.federated:export_update",
    "enroll": "edgekit.commands.federated:enroll",
    "aggregate": "edgekit.commands.federated:aggregate",
    "simulate": "edgekit.commands.simulate:simulate",
}


# Top-level module -> the pyproject.toml extra that installs it.
EXTRAS = {"flwr": "flower", "tensorflow": "convert", "keras": "convert", "dp_accounting": "dp"}


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

    def invoke(self, ctx: click.Context) -> object:
        """Run the command, turning a missing extra into a one-line error with the pip line.

        Commands import their heavy dependencies (TensorFlow, Flower) inside
        their body, so a missing extra surfaces here, not in ``get_command``.
        """
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as e:
            message = missing_extra_message(ctx.invoked_subcommand or "", e)
            if message is None:
                raise
            raise click.ClickException(message) from None


def missing_extra_message(name: str, error: BaseException) -> str | None:
    """What to install for ``edgekit NAME``, or None when ``error`` is not a missing extra."""
    if not isinstance(error, ImportError):
        return None
    module = (error.name or "").partition(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    return (f"`edgekit {name}` needs {module}, which is not installed. Install it with: "
            f"pip install 'edgekit[{extra}]' (from a source checkout: pip install -e '.[{extra}]')")


def _unavailable(name: str, error: Exception) -> click.Command:
    """A stand-in for a command whose module does not import: it explains why instead of a traceback."""
    message = missing_extra_message(name, error) or f"`edgekit {name}` is not available here: {error}"

    @click.command(name, help=f"(unavailable: {error})", context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args):
        raise click.ClickException(message)

    return stub


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgekit")
def main() -> None:
    """edgekit: on-device next-word prediction that learns from its user."""


if __name__ == "__main__":
    main()
