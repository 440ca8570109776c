"""The report itself: :func:`build_report` writes ``index.html`` and its figures.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import os
import sys

import numpy as np

from ..flags import describe
from ..io.cutout import safe_name
from ..io.saliency_maps import find_saliency_map, read_saliency_map
from ..normalise import NormaliseConfig
from .figures import fmt, plot_comparison, plot_distributions, plot_flags
from .maps import recompute_saliency as recompute_maps
from .scan import GALLERIES, LENGTHS, scan_catalogue
from .tiles import render_tile

_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#e3e6ec; --accent:#1f5fbf; --bad:#b3261e; --ok:#1b7f3b; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color:var(--fg); background:#f6f7f9; }
header { background:#16213a; color:#fff; padding:18px 32px 14px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header .sub { color:#b9c3d8; font-size:13px; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:8px 32px; position:sticky; top:0; z-index:2; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; font-size:13px; }
main { padding:8px 32px 40px; max-width:1400px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 20px 18px; margin:16px 0; }
h2 { font-size:18px; margin:4px 0 10px; }
h3 { font-size:15px; margin:14px 0 6px; }
section > h3[id] { font-size:16px; margin-top:22px; padding-top:10px; border-top:1px solid var(--line); }
.muted { color:var(--muted); }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:6px 0 10px; }
.card { border:1px solid var(--line); border-radius:8px; padding:8px 14px; min-width:130px; }
.card .v { font-size:22px; font-weight:600; }
.card .k { color:var(--muted); font-size:12px; }
.card.bad .v { color:var(--bad); } .card.ok .v { color:var(--ok); }
table { border-collapse:collapse; font-size:13px; margin:4px 0 8px; }
th, td { text-align:left; padding:3px 12px 3px 0; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.n { text-align:right; font-variant-numeric:tabular-nums; }
.cols { display:flex; flex-wrap:wrap; gap:40px; align-items:flex-start; }
.cols > div { min-width:0; }
td.muted { max-width:520px; }
img.fig { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill, minmax(420px, 1fr)); gap:12px; }
figure.tile { margin:0; border:1px solid var(--line); border-radius:6px; padding:6px; background:#fff; }
figure.tile img { width:100%; height:auto; display:block; }
figcaption { font-size:12px; margin-top:4px; line-height:1.5; }
figcaption .id { font-weight:600; font-family:ui-monospace, Menlo, Consolas, monospace; }
.badge { display:inline-block; background:#fdecea; color:var(--bad); border-radius:3px; padding:0 5px; margin:1px 3px 1px 0; font-size:11px; }
.badge.okb { background:#e7f4ea; color:var(--ok); }
.badge.err { background:#b3261e; color:#fff; }
pre { background:#f3f4f7; padding:10px; border-radius:6px; overflow:auto; font-size:12px; max-height:420px; }
code { font-family:ui-monospace, Menlo, Consolas, monospace; font-size:12px; }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
footer { color:var(--muted); font-size:12px; padding:0 32px 24px; }
"""


def _e(x):
    return html.escape(str(x), quote=True)


def _kv_table(d):
    rows = []
    nested = {}
    for k, v in d.items():
        if isinstance(v, (dict, list)):
            nested[k] = v
            continue
        rows.append(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>")
    out = f"<table>{''.join(rows)}</table>" if rows else ""
    for k, v in nested.items():
        out += f"<details><summary>{_e(k)}</summary><pre>{_e(json.dumps(v, indent=2, default=str))}</pre></details>"
    return out


def tile_name(row):
    h = hashlib.sha1(f"{row.get('object_id')}|{row.get('file')}".encode()).hexdigest()[:8]
    return f"tile-{safe_name(row.get('object_id'))[:60]}-{h}.png"


def _caption(row, flag_names, notes):

    parts = [f"<span class='id'>{_e(row.get('object_id'))}</span>"]
    if row.get("status") != "ok":
        parts.append(f"<span class='badge err'>{_e(row.get('status'))}</span> {_e(row.get('error') or '')}")
    else:
        p = row.get("p_bar")
        parts.append(f"p_bar <b>{fmt(p, '.3f')}</b>")
        L = row.get("bar_length_arcsec")
        if L is not None and np.isfinite(L):
            err = row.get("bar_length_err_arcsec")
            txt = f"L = <b>{fmt(L)}″</b>"
            if err is not None and np.isfinite(err):
                txt += f" ± {fmt(err)}″"
            parts.append(txt)
            parts.append(f"PA {fmt(row.get('bar_pa_deg'), '.0f')}°")
        elif row.get("bar_pa_deg") is not None and np.isfinite(row["bar_pa_deg"]):
            parts.append(f"PA {fmt(row['bar_pa_deg'], '.0f')}°")  # a bar without a length (no pixel scale)
        mo = row.get("bar_length_moments_arcsec")
        if mo is not None and np.isfinite(mo) and mo != L:
            parts.append(f"moments {fmt(mo)}″")
        d = row.get("bar_length_direct_arcsec")
        if d is not None and np.isfinite(d):
            parts.append(f"direct {fmt(d)}″")
        b = row.get("bar_length_bhambra2022_arcsec")
        if b is not None and np.isfinite(b):
            parts.append(f"B22 {fmt(b)}″")
    q = int(row.get("quality_flags") or 0)
    names = [flag_names.get(v, f"bit{v.bit_length() - 1}") for v in (1 << i for i in range(32)) if q & v] if flag_names else describe(q)
    badges = "".join(f"<span class='badge'>{_e(n)}</span>" for n in names) or "<span class='badge okb'>no flags</span>"
    note = "".join(f"<br><span class='muted'>{_e(n)}</span>" for n in notes)
    return " · ".join(parts) + "<br>" + badges + note


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def build_report(
    catalogue,
    out,
    *,
    query=None,
    n_gallery=12,
    saliency_dir=None,
    seed=0,
    batch_size=65_536,
    recompute_saliency=False,
    model=None,
    title=None,
):
    """Write the HTML QA report of a catalogue.

    Parameters
    ----------
    catalogue : str
        Catalogue file or directory written by ``survey-bars process``.
    out : str
        Report directory (created); receives ``index.html`` and PNG figures.
    query : str, optional
        ``pandas.DataFrame.query`` expression for the query gallery, e.g.
        ``"p_bar > 0.9 and bar_length_arcsec > 5"``.
    n_gallery : int, optional
        Galaxies per gallery.
    saliency_dir : str, optional
        Directory of ``{object_id}.fits`` maps from ``process --save-saliency`` (default:
        the run's ``save_saliency`` directory, when it still exists).
    seed : int, optional
        Seed of the random gallery and sampling.
    batch_size : int, optional
        Rows per streamed batch.
    recompute_saliency : bool, optional
        Recompute the maps that were not saved, with the model runtime.
    model : str, optional
        Model bundle for ``recompute_saliency`` (default: the one the catalogue was made with).
    title : str, optional
        Report title.

    Returns
    -------
    str
        Path of ``index.html``.

    Raises
    ------
    FileNotFoundError
        If the catalogue does not exist.
    ValueError
        If it is not a survey-bars catalogue or the query is invalid.
    """

    if n_gallery < 0:
        msg = f"--n-gallery must be 0 or more, got {n_gallery}."
        raise ValueError(msg)
    scan = scan_catalogue(catalogue, query=query, n_gallery=n_gallery, seed=seed, batch_size=batch_size)
    meta = scan.metadata
    run = meta.get("run_config") or {}
    band = run.get("band")  # the --band of the run: the report reads the band the catalogue measured
    card = meta.get("model_card") or {}
    if saliency_dir is None and run.get("save_saliency") and os.path.isdir(run["save_saliency"]):
        saliency_dir = run["save_saliency"]
    if saliency_dir is not None and not os.path.isdir(saliency_dir):
        msg = f"--saliency-dir {saliency_dir!r} is not a directory; pass the directory given to `process --save-saliency`."
        raise FileNotFoundError(msg)
    prep = None
    if isinstance(card.get("preprocessing"), dict):
        try:
            prep = NormaliseConfig.from_dict(card["preprocessing"])
        except (TypeError, ValueError):
            prep = None

    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):  # stale tiles of an earlier report
        if f.startswith("tile-") and f.endswith(".png"):
            os.unlink(os.path.join(out, f))

    plot_flags(scan, os.path.join(out, "flags.png"))
    plot_distributions(scan, os.path.join(out, "distributions.png"))
    has_comparison = plot_comparison(scan, os.path.join(out, "length_comparison.png"))

    shown = {}
    for rows in scan.galleries.values():
        for r in rows:
            shown.setdefault(tile_name(r), r)
    maps, notes = _gallery_maps(shown, saliency_dir, recompute_saliency, model, meta, band)

    flag_list = meta.get("flags") or []
    tile_html = _tiles_html(shown, out, maps, notes, prep, band, {int(f["value"]): f["name"] for f in flag_list})

    title = title or f"survey-bars QA: {os.path.basename(os.path.normpath(os.fspath(catalogue)))}"
    page = _page(title, _subtitle(catalogue, scan), scan, flag_list, has_comparison, tile_html, n_gallery, saliency_dir,
                 card, run)
    index = os.path.join(out, "index.html")
    _write(index, page)
    return index


def _gallery_maps(shown, saliency_dir, recompute, model, meta, band):
    """The saliency maps of the galleried rows: saved ones, else recomputed; ``(maps, notes)`` by tile name."""
    maps, notes = {}, {}
    for name, r in shown.items():
        p = find_saliency_map(saliency_dir, r["object_id"])
        if p:
            try:
                maps[name] = read_saliency_map(p)
            except Exception as exc:
                notes[name] = f"saliency unreadable: {exc}"
    if recompute:
        todo = {n: r for n, r in shown.items() if n not in maps and r.get("status") == "ok"}
        if todo:
            try:
                got = recompute_maps(list(todo.values()), model, metadata=meta, band=band)
            except Exception as exc:
                got = {}
                print(f"survey-bars inspect: could not recompute saliency maps ({type(exc).__name__}: {exc}).", file=sys.stderr)
                for n in todo:
                    notes[n] = "saliency not saved (recomputing failed)"
            for n, r in todo.items():
                g = got.get(r["object_id"])
                if isinstance(g, dict):
                    maps[n] = g
                elif isinstance(g, str):
                    notes[n] = g
    return maps, notes


def _tiles_html(shown, out, maps, notes, prep, band, flag_names):
    """Draw every galleried row's tile into ``out``; return its ``<figure>`` by tile name."""
    tile_html = {}
    for name, r in shown.items():
        tnotes = render_tile(r, os.path.join(out, name), saliency=maps.get(name), saliency_note=notes.get(name), prep=prep,
                             band=band)
        if name not in maps and r.get("status") == "ok":
            tnotes.append(notes.get(name, "saliency not saved"))
        tile_html[name] = (
            f"<figure class='tile'><img src='{_e(name)}' width='660' height='235' "
            f"alt='{_e(r.get('object_id'))}: cutout, model input and saliency map'>"
            f"<figcaption>{_caption(r, flag_names, tnotes)}</figcaption></figure>"
        )
    return tile_html


def _subtitle(catalogue, scan):
    """The line under the title: the catalogue, its size, versions and dates."""
    meta = scan.metadata
    n = scan.n_rows
    created = meta.get("created", "")
    sub = (
        f"{_e(os.path.abspath(catalogue))} · {n:,} rows in {len(scan.files)} file(s) · "
        f"survey-bars {_e(meta.get('software_version', '?'))}"
        + (f" · catalogue made {_e(created)}" if created else "")
        + f" · report {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
    )
    return sub


def _summary_section(scan, flag_list):
    """The summary: counts by status, flags per row, error reasons and the flag table."""
    n = scan.n_rows
    n_ok = scan.status_counts.get("ok", 0)
    n_err = n - n_ok
    n_bar = int(scan.length_hists.get("bar_length_arcsec", np.zeros(1)).sum())

    def pct(k):
        return f"{100.0 * k / n:.1f}%" if n else "–"

    cards = (
        f"<div class='card'><div class='v'>{n:,}</div><div class='k'>rows</div></div>"
        f"<div class='card ok'><div class='v'>{n_ok:,}</div><div class='k'>status ok ({pct(n_ok)})</div></div>"
        f"<div class='card{' bad' if n_err else ''}'><div class='v'>{n_err:,}</div><div class='k'>not ok ({pct(n_err)})</div></div>"
        f"<div class='card'><div class='v'>{n_bar:,}</div><div class='k'>bar lengths measured</div></div>"
        f"<div class='card'><div class='v'>{scan.n_unflagged:,}</div><div class='k'>rows without flags ({pct(scan.n_unflagged)})</div></div>"
    )
    status_rows = "".join(
        f"<tr><td>{_e(s)}</td><td class='n'>{c:,}</td><td class='n'>{pct(c)}</td></tr>" for s, c in scan.status_counts.most_common()
    )
    descr = {f["name"]: f.get("description", "") for f in flag_list}
    bits = {f["name"]: f.get("bit", "") for f in flag_list}
    flag_rows = "".join(
        f"<tr><td class='n'>{_e(bits.get(k, ''))}</td><td><code>{_e(k)}</code></td><td class='n'>{c:,}</td>"
        f"<td class='n'>{pct(c)}</td><td class='muted'>{_e(descr.get(k, ''))}</td></tr>"
        for k, c in scan.flag_counts.items()
    )
    pop_rows = "".join(
        f"<tr><td class='n'>{k}</td><td class='n'>{int(c):,}</td><td class='n'>{pct(int(c))}</td></tr>" for k, c in enumerate(scan.popcount_counts) if c
    )
    err_rows = "".join(
        f"<tr><td><code>{_e(k)}</code></td><td class='n'>{c:,}</td><td class='muted'>{_e(scan.error_examples.get(k, ''))}</td></tr>"
        for k, c in scan.error_reasons.most_common()
    )
    summary = (
        f"<section id='summary'><h2>Summary</h2><div class='cards'>{cards}</div>"
        "<div class='cols'><div>"
        f"<h3>By status</h3><table><tr><th>status</th><th>rows</th><th>share</th></tr>{status_rows}</table>"
        f"<h3>Flags set per row</h3><table><tr><th>flags</th><th>rows</th><th>share</th></tr>{pop_rows}</table>"
        + (f"<h3>Error reasons</h3><table><tr><th>reason</th><th>rows</th><th>example</th></tr>{err_rows}</table>" if err_rows else "")
        + "</div><div><h3>By quality flag</h3><img class='fig' src='flags.png' alt='Rows per quality flag'>"
        f"<details><summary>Flag table</summary><table><tr><th>bit</th><th>flag</th><th>rows</th><th>share</th><th>meaning</th></tr>{flag_rows}</table></details>"
        "</div></div></section>"
    )
    return summary


def _distributions_section(scan, has_comparison):
    """The distributions, and the saliency lengths against the other measurements."""
    pair_rows = "".join(
        f"<tr><td>{_e(LENGTHS[c][0])}<br><code>{_e(c)}</code></td><td class='n'>{st['n']:,}</td><td class='n'>{fmt(st['r'], '.3f')}</td>"
        f"<td class='n'>{fmt(st['rms'])}″</td><td class='n'>{fmt(st['bias'], '+.2f')}″</td></tr>"
        for c, st in scan.pairs.items()
    )
    dist = (
        "<section id='distributions'><h2>Distributions</h2>"
        "<img class='fig' src='distributions.png' alt='Distributions of p_bar and bar lengths'>"
        + (
            "<h3>Saliency lengths against the other measurements</h3><div class='cols'><div>"
            "<p class='muted'>Over every row with both lengths (the plots show a uniform sample).<br>"
            "Bias is the mean of (other − saliency).</p>"
            f"<table><tr><th>compared with</th><th>N</th><th>Pearson r</th><th>RMS diff.</th><th>bias</th></tr>{pair_rows}</table></div>"
            "<div><img class='fig' src='length_comparison.png' alt='Saliency bar length against direct and published-method lengths'></div></div>"
            if has_comparison
            else "<p class='muted'>No rows have both a saliency and a direct bar length.</p>"
        )
        + "</section>"
    )
    return dist


def _galleries_section(scan, tile_html, n_gallery, saliency_dir):
    """The galleries with their legend; ``(html, nav links)`` (empty html without galleries)."""
    gal_html = []
    nav_gal = []
    for key, rows in scan.galleries.items():
        gtitle, gdesc = GALLERIES[key]
        if key == "query":
            gdesc = f"{scan.n_query_matches:,} rows match <code>{_e(scan.query)}</code>; showing a random {min(len(rows), n_gallery)}."
        tiles = "".join(tile_html[tile_name(r)] for r in rows) or "<p class='muted'>No rows.</p>"
        gal_html.append(f"<h3 id='gallery-{key}'>Gallery: {_e(gtitle)}</h3><p class='muted'>{gdesc}</p><div class='gallery'>{tiles}</div>")
        nav_gal.append(f"<a href='#gallery-{key}'>{_e(gtitle)}</a>")
    legend = (
        "<p class='muted'>Each tile: the cutout (dashed square: the model frame; compass: north and east; a colour "
        "JPEG/PNG in its own colours, other cutouts with an arcsinh stretch), "
        "the normalised model input, and the SmoothGrad saliency map of the bar output. The cyan line is the "
        "measured bar: full length <code>bar_length_arcsec</code> at position angle <code>bar_pa_deg</code> "
        "(east of north); the dotted ellipse has the measured axis ratio."
        + (f" Saliency maps from <code>{_e(os.path.abspath(saliency_dir))}</code>." if saliency_dir else " No saliency directory was given (<code>--saliency-dir</code>).")
        + "</p>"
    )
    html_ = f"<section id='galleries'><h2>Galleries</h2>{legend}{''.join(gal_html)}</section>" if gal_html else ""
    return html_, nav_gal


def _metadata_section(scan, card, run):
    """The model card, the run configuration, the software and the column descriptions."""
    meta = scan.metadata
    model_name = card.get("name") or card.get("model") or "model"
    meta_html = (
        "<section id='metadata'><h2>Model card and run</h2>"
        f"<h3>Model card: {_e(model_name)}</h3>{_kv_table(card) if card else '<p class=muted>No model card in the catalogue.</p>'}"
        f"<h3>Run configuration</h3>{_kv_table(run) if run else '<p class=muted>No run configuration in the catalogue.</p>'}"
        f"<h3>Software</h3><table><tr><th>survey-bars</th><td>{_e(meta.get('software_version', '?'))}</td></tr>"
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta.items() if k not in ("model_card", "run_config", "flags", "columns", "software_version") and not isinstance(v, (dict, list)))
        + "</table>"
        + (
            "<details><summary>Columns, units and descriptions</summary><table><tr><th>column</th><th>unit</th><th>description</th></tr>"
            + "".join(f"<tr><td><code>{_e(k)}</code></td><td>{_e(v.get('unit', ''))}</td><td class='muted'>{_e(v.get('description', ''))}</td></tr>" for k, v in (meta.get("columns") or {}).items())
            + "</table></details>"
            if meta.get("columns")
            else ""
        )
        + "</section>"
    )
    return meta_html


def _page(title, sub, scan, flag_list, has_comparison, tile_html, n_gallery, saliency_dir, card, run):
    """The whole ``index.html``."""
    summary = _summary_section(scan, flag_list)
    dist = _distributions_section(scan, has_comparison)
    galleries, nav_gal = _galleries_section(scan, tile_html, n_gallery, saliency_dir)
    meta_html = _metadata_section(scan, card, run)
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><div class='sub'>{sub}</div></header>"
        "<nav><a href='#summary'>Summary</a><a href='#distributions'>Distributions</a>"
        + "".join(nav_gal)
        + "<a href='#metadata'>Model &amp; run</a></nav><main>"
        + summary
        + dist
        + galleries
        + meta_html
        + "</main><footer>Generated by <code>survey-bars inspect</code>. Static page: no scripts, no network access.</footer></body></html>\n"
    )
    return page
