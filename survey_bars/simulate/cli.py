"""``survey-bars simulate``: the command line of the simulator."""

from __future__ import annotations

import argparse
import sys
import time

from .display import display_copies
from .gallery import make_gallery
from .stamps import small_stamp_copies
from .write import simulate


def _parse_mix(text):
    mix = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in part:
            msg = f"--class-mix entries look like smooth=0.2; got {part!r}."
            raise ValueError(msg)
        k, v = part.split("=", 1)
        try:
            mix[k.strip()] = float(v)
        except ValueError:
            msg = f"--class-mix weight for {k.strip()!r} is not a number: {v!r}."
            raise ValueError(msg) from None
    return mix


def configure_parser(parser):
    """Add the ``simulate`` options to an argparse parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (FITS files + truth.parquet)")
    parser.add_argument("-n", type=int, required=True, metavar="N", help="number of galaxies")
    parser.add_argument("--survey", default="mixed", help="sdss, decals, hsc, euclid or mixed (default)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    parser.add_argument("--class-mix", default=None, metavar="MIX",
                        help="class weights, e.g. smooth=0.2,edge_on=0.1,disc=0.3,barred=0.4")
    parser.add_argument("--start-index", type=int, default=0, help="first galaxy index (to extend a run)")
    parser.add_argument("--stamp-size", type=int, default=None, help="fixed stamp side in pixels")
    parser.add_argument("--gallery", default=None, metavar="PNG", help="also write a gallery figure here")
    parser.add_argument("--display-copies", default=None, metavar="DIR",
                        help="also write every cutout as a cutout service draws it (asinh-stretched 8-bit colour JPEG) "
                             "to DIR, with its own truth.parquet")
    parser.add_argument("--small-stamp-copies", default=None, metavar="DIR",
                        help="also write every cutout cut to a survey service's small stamp (half-width 1.6-3.2 "
                             "half-light radii, the bar kept whole) to DIR, with its own truth.parquet; with "
                             "--display-copies the JPEGs are drawn from these")


def run_cli(args):
    """Run ``survey-bars simulate``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options from :func:`configure_parser`.

    Returns
    -------
    int
        0 on success, 2 for bad arguments.
    """
    try:
        mix = _parse_mix(args.class_mix) if args.class_mix else None
        t0 = time.perf_counter()
        df = simulate(args.out, args.n, survey=args.survey, seed=args.seed, workers=args.workers,
                      class_mix=mix, start_index=getattr(args, "start_index", 0),
                      stamp_size=getattr(args, "stamp_size", None))
    except ValueError as exc:
        print(f"survey-bars simulate: error: {exc}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(f"wrote {len(df)} cutouts and truth.parquet to {args.out} in {dt:.1f} s ({len(df) / dt:.1f} galaxies/s)")
    source = args.out
    if getattr(args, "small_stamp_copies", None):
        small_stamp_copies(args.out, args.small_stamp_copies, seed=args.seed, workers=args.workers)
        print(f"wrote {len(df)} small-stamp copies and their truth.parquet to {args.small_stamp_copies}")
        source = args.small_stamp_copies
    if getattr(args, "display_copies", None):
        display_copies(source, args.display_copies, seed=args.seed, workers=args.workers)
        print(f"wrote {len(df)} JPEG display copies and their truth.parquet to {args.display_copies}")
    if getattr(args, "gallery", None):
        make_gallery(args.gallery, seed=args.seed)
        print(f"wrote {args.gallery}")
    return 0


def _main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m survey_bars.simulate", description=__doc__.split("\n")[0])
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--gallery"] and len(argv) >= 2 and "--out" not in argv:
        sp = argparse.ArgumentParser(prog="python -m survey_bars.simulate")
        sp.add_argument("--gallery", required=True)
        sp.add_argument("--seed", type=int, default=2022)
        a = sp.parse_args(argv)
        print(make_gallery(a.gallery, seed=a.seed))
        return 0
    configure_parser(parser)
    return run_cli(parser.parse_args(argv))
