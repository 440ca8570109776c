"""``survey-bars inspect``: the command line of the QA report.
"""

from __future__ import annotations

import sys

from .html import build_report


def configure_parser(parser):
    """Add the ``inspect`` options to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser.
    """
    parser.add_argument("catalogue", help="Catalogue .parquet file (or directory) written by `survey-bars process`.")
    parser.add_argument("--out", required=True, metavar="DIR", help="Report directory; receives index.html and PNG figures.")
    parser.add_argument("--query", default=None, help="pandas query for an extra gallery, e.g. \"p_bar > 0.9 and bar_length_arcsec > 5\".")
    parser.add_argument("--n-gallery", type=int, default=12, metavar="N", help="Galaxies per gallery (default 12).")
    parser.add_argument("--saliency-dir", default=None, metavar="DIR", help="Maps written by `process --save-saliency` (default: the run's directory if it exists).")
    parser.add_argument("--recompute-saliency", action="store_true", help="Recompute the maps that were not saved (needs the model bundle).")
    parser.add_argument("--model", default=None, metavar="BUNDLE", help="Bundle for --recompute-saliency (default: the catalogue's).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random gallery (default 0).")
    parser.add_argument("--batch-size", type=int, default=65_536, help="Rows read per batch (default 65536).")
    parser.add_argument("--title", default=None, help="Report title.")


def run_cli(args):
    """Run ``survey-bars inspect``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments from :func:`configure_parser`.

    Returns
    -------
    int
        0 on success, 2 when the input or the options are invalid.
    """
    try:
        index = build_report(
            args.catalogue,
            args.out,
            query=args.query,
            n_gallery=args.n_gallery,
            saliency_dir=args.saliency_dir,
            seed=args.seed,
            batch_size=args.batch_size,
            recompute_saliency=args.recompute_saliency,
            model=args.model,
            title=args.title,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"survey-bars inspect: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {index}")
    return 0
