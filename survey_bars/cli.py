"""The ``survey-bars`` command line.

Each subcommand lives beside the code it drives: the module named in :data:`COMMANDS` exposes
``configure_parser(parser)`` and ``run_cli(args) -> int``. Modules are imported only when their
command runs, so ``survey-bars process`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import filter_input_warnings

__all__ = ["main", "COMMANDS", "EXTRAS", "missing_extra_message"]

#: subcommand -> (module, one-line help)
COMMANDS = {
    "process": ("survey_bars.cluster", "Measure morphology and bars for FITS cutouts on Dask; write a Parquet catalogue."),
    "simulate": ("survey_bars.simulate.cli", "Write simulated survey cutouts with a truth table."),
    "train": ("survey_bars.training.train", "Train the morphology CNN and the direct bar-length CNN (needs survey-bars[train])."),
    "export": ("survey_bars.training.export", "Export a trained checkpoint to an ONNX model bundle (needs survey-bars[train])."),
    "calibrate": ("survey_bars.training.calibrate", "Calibrate a bundle's saliency bar lengths on simulations and record it in the bundle."),
    "evaluate": ("survey_bars.training.evaluate", "Score a bundle's ONNX forward graph on labelled or fresh simulated cutouts."),
    "models": ("survey_bars.inference.bundle", "List the installed model bundles and their cards."),
    "inspect": ("survey_bars.report.cli", "Write an HTML QA report for a catalogue."),
}


#: top-level module -> the survey-bars extra that installs it
EXTRAS = {"torch": "train", "onnx": "train", "onnxscript": "train", "matplotlib": "qa", "photutils": "qa",
          "dask_jobqueue": "deploy", "yaml": "deploy"}


def missing_extra_message(command, exc):
    """The line telling a user which extra installs a missing optional dependency.

    Parameters
    ----------
    command : str
        The subcommand that needed it.
    exc : ModuleNotFoundError
        The import error.

    Returns
    -------
    str or None
        The message, or None when the missing module is not an optional dependency of
        survey-bars (then the error is a real fault and should propagate).
    """
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return (f"survey-bars {command}: needs {top}, which is not installed. Install it with "
            f'pip install "survey-bars[{extra}]" (or pip install -e ".[{extra}]" in a checkout).')


def build_parser(only=None):
    """Build the argument parser.

    Parameters
    ----------
    only : str, optional
        Configure only this subcommand (avoids importing every module).

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="survey-bars",
        description="Galaxy morphology and saliency-derived bar lengths for survey cutouts.",
    )
    parser.add_argument("--version", action="version", version=f"survey-bars {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or name == only:
            mod = importlib.import_module(module)
            mod.configure_parser(p)
            p.set_defaults(_module=module)
    return parser


def main(argv=None):
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The process exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    filter_input_warnings()  # the command owns its process: astropy's notes on damaged inputs are in the rows
    command = next((a for a in argv if not a.startswith("-")), None)
    only = command if command in COMMANDS else None
    if only is None and not any(a in ("-h", "--help", "--version") for a in argv):
        build_parser(only="__none__").print_help(sys.stderr)
        return 2
    try:
        parser = build_parser(only=only)
        args = parser.parse_args(argv)
        if not getattr(args, "_module", None):
            parser.print_help(sys.stderr)
            return 2
        mod = importlib.import_module(args._module)
        return int(mod.run_cli(args) or 0)
    except ModuleNotFoundError as exc:  # an optional extra (torch for train/export, ...) is not installed
        msg = missing_extra_message(command, exc)
        if msg is None:
            raise
        print(msg, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("survey-bars: interrupted. Finished partitions are kept; rerun with --resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
