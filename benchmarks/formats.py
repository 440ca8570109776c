"""FITS against JPEG of the same pixels: does the input format change the catalogue? (issue 24)

Each galaxy of the held-out simulated set (``benchmarks.accuracy``: SDSS-heavy mix, seed 777)
is written a second time as an 8-bit colour JPEG of the same pixels, and both versions go through
``survey-bars process`` (the product's path, a 2-worker LocalCluster). The JPEG's pixel scale
comes from an input catalogue, as a user would give it. Two JPEG renderings:

* ``linear``: the FITS values mapped linearly to 0-255 (black at the 0.1 percentile, white at
  the peak of the 3 x 3 median-filtered image, so a cosmic ray does not set it), with three
  channels of slightly different weights (1.0, 0.85, 0.7, a red galaxy) that the colour rule
  (channel mean) averages back; JPEG quality 90. The same pixels, quantised and compressed.
* ``asinh``: the same with an SDSS-like asinh display stretch (Lupton et al. 2004, softening at
  3 x the sky noise) before quantising: what survey cutout services serve. Not the same pixel
  values, so not expected to agree; it shows how far a display stretch moves the model, which
  the models trained on real JPEGs (issue 23) must learn.

Run::

    python -m benchmarks.formats --n 800

It reports the share of galaxies with the same bar decision (``p_bar >= 0.5``), the spread of
the probability differences, and the ratio of the bar lengths measured on both (the default
method's, and over the same bars the moments' and the direct CNN's), and writes the ``formats``
block of ``benchmarks/RESULTS.md``. ``--model DIR`` scores another bundle (then pass
``--out-json`` to leave RESULTS.md alone).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.accuracy import simulate_heldout
from benchmarks.common import save, table

WORK = Path(os.environ.get("SURVEY_BARS_BENCH_DIR", "/tmp/survey-bars-bench")) / "formats"
CHANNEL_WEIGHTS = (1.0, 0.85, 0.7)
QUALITY = 90


def to_display(data, stretch="linear"):
    """FITS-orientation float image -> top-row-first uint8 RGB of the same pixels."""
    from scipy import ndimage

    d = np.nan_to_num(np.asarray(data, dtype=float), nan=0.0)
    lo = float(np.percentile(d, 0.1))
    hi = float(ndimage.median_filter(d, 3).max())
    if stretch == "asinh":
        bkg = float(np.median(d))
        noise = 1.4826 * float(np.median(np.abs(d - bkg))) or 1e-3
        soft = 3.0 * noise
        f = lambda x: np.arcsinh((x - bkg) / soft)  # noqa: E731
        lo_v, hi_v = 0.0, float(f(hi))
        v = (f(d) - lo_v) / max(hi_v - lo_v, 1e-12)
    else:
        v = (d - lo) / max(hi - lo, 1e-12)
    chans = [np.clip(np.round(255 * w * v), 0, 255) for w in CHANNEL_WEIGHTS]
    return np.dstack(chans).astype(np.uint8)[::-1]


def write_jpegs(frames, out, stretch):
    """Write every simulated galaxy as a JPEG; return the input catalogue (file, object_id, pixel_scale)."""
    from PIL import Image

    from survey_bars.io import read_cutout

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for t in frames:
        for _, r in t.iterrows():
            src = os.path.join(r["dir"], r["file"])
            cut = read_cutout(src)
            dst = out / f"{r['object_id']}.jpg"
            if not dst.exists():
                Image.fromarray(to_display(cut.data, stretch)).save(dst, quality=QUALITY)
            rows.append({"file": str(dst), "object_id": r["object_id"], "pixel_scale": cut.pixel_scale_arcsec,
                         "ra": cut.ra, "dec": cut.dec})
    cat = out / "inputs.csv"
    pd.DataFrame(rows).to_csv(cat, index=False)
    return cat


def run(inputs, out, catalogue=None, workers=2, model=None):
    from survey_bars.cluster import process
    from survey_bars.pipeline import RunOptions

    if os.path.exists(out):
        os.unlink(out)
    process(inputs, str(out), catalogue=catalogue, workers=workers, progress=False, overwrite=True,
            options=RunOptions(model=model) if model else None)
    return pd.read_parquet(out)


def compare(fits_cat, jpeg_cat):
    """Agreement figures between the FITS and JPEG catalogues, joined on object_id."""
    m = fits_cat.merge(jpeg_cat, on="object_id", suffixes=("_f", "_j"))
    ok = m[(m.status_f == "ok") & (m.status_j == "ok")]
    res = {"n": int(len(m)), "n_ok_both": int(len(ok)), "n_error_jpeg_only": int(((m.status_f == "ok") & (m.status_j != "ok")).sum())}
    same = (ok.p_bar_f >= 0.5) == (ok.p_bar_j >= 0.5)
    res["same_bar_decision"] = float(same.mean())
    for c in ("p_bar", "p_smooth", "p_edge_on", "p_spiral"):
        d = np.abs(ok[f"{c}_f"] - ok[f"{c}_j"])
        res[f"{c}_absdiff_median"] = float(d.median())
        res[f"{c}_absdiff_p95"] = float(d.quantile(0.95))
    both = ok[ok.bar_length_arcsec_f.notna() & ok.bar_length_arcsec_j.notna()]
    ratio = both.bar_length_arcsec_j / both.bar_length_arcsec_f
    res["n_lengths_both"] = int(len(both))
    res["length_ratio_median"] = float(ratio.median()) if len(both) else float("nan")
    res["length_ratio_p16_p84"] = [float(ratio.quantile(0.16)), float(ratio.quantile(0.84))] if len(both) else []
    # the other lengths of every catalogue, over the same bars: the moments of the same map, and the direct CNN
    for name in ("moments", "direct"):
        col = f"bar_length_{name}_arcsec"
        if f"{col}_f" in both:
            r = pd.to_numeric(both[f"{col}_j"]) / pd.to_numeric(both[f"{col}_f"])
            res[f"{name}_length_ratio_median"] = float(r.median()) if r.notna().any() else float("nan")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default=None, help="bundle directory (default: the shipped bundle)")
    ap.add_argument("--out-json", default=None, help="write the result here and leave RESULTS.md alone")
    args = ap.parse_args(argv)
    work = WORK / f"n{args.n}-s{args.seed}"
    frames = simulate_heldout(work / "sims", args.n, args.seed)
    fits_files = [os.path.join(r["dir"], r["file"]) for t in frames for _, r in t.iterrows()]
    listing = work / "fits.txt"
    listing.write_text("\n".join(fits_files) + "\n")
    fits_cat = run([f"@{listing}"], work / "fits.parquet", workers=args.workers, model=args.model)
    results = {}
    for stretch in ("linear", "asinh"):
        jdir = work / f"jpeg-{stretch}"
        shutil.rmtree(jdir, ignore_errors=True)
        cat = write_jpegs(frames, jdir, stretch)
        jpeg_cat = run([], work / f"jpeg-{stretch}.parquet", catalogue=str(cat), workers=args.workers, model=args.model)
        results[stretch] = compare(fits_cat, jpeg_cat)
        print(stretch, results[stretch], flush=True)
    rows = []
    for stretch, r in results.items():
        lo, hi = (r["length_ratio_p16_p84"] + [np.nan, np.nan])[:2]
        rows.append([
            f"{stretch} 8-bit RGB JPEG (q {QUALITY})", f"{r['n_ok_both']} / {r['n']}", f"{100 * r['same_bar_decision']:.1f} %",
            f"{r['p_bar_absdiff_median']:.3f} / {r['p_bar_absdiff_p95']:.3f}",
            f"{r['p_smooth_absdiff_median']:.3f} / {r['p_smooth_absdiff_p95']:.3f}",
            f"{r['p_edge_on_absdiff_median']:.3f} / {r['p_edge_on_absdiff_p95']:.3f}",
            f"{r['length_ratio_median']:.3f} ({lo:.2f}-{hi:.2f}, {r['n_lengths_both']} bars)",
            f"{r.get('moments_length_ratio_median', np.nan):.3f} / {r.get('direct_length_ratio_median', np.nan):.3f}",
        ])
    md = "\n".join([
        f"The held-out simulated set ({args.n} galaxies, SDSS-heavy mix, seed {args.seed}) processed as FITS and "
        "again as JPEG (pixel scale from an input catalogue), both through `survey-bars process`:",
        "",
        table(["JPEG", "ok (both)", "same bar decision", "|dp_bar| median / 95 %", "|dp_smooth| median / 95 %",
               "|dp_edge_on| median / 95 %", "length JPEG / FITS: median (16-84 %)",
               "the same bars' moments / direct CNN lengths, JPEG / FITS"], rows),
    ])
    save("formats", {"n": args.n, "seed": args.seed, "quality": QUALITY, "results": results}, md,
         f"python -m benchmarks.formats --n {args.n}" + (f" --model {args.model}" if args.model else ""),
         json_path=args.out_json)


if __name__ == "__main__":
    main()
