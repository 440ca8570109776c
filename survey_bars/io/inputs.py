"""Finding the inputs of a job: files, directories, globs, ``@list`` files and input catalogues.

:func:`discover_inputs` expands what ``--input`` names into a sorted list of files (so that
partitions are deterministic); :func:`read_input_catalogue` reads ``--catalogue`` into
:class:`InputItem` objects, one per file, with what the catalogue says about each.
"""

from __future__ import annotations

import glob
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from ..errors import JobError
from .readers import is_input_file

__all__ = ["InputItem", "discover_inputs", "read_input_catalogue"]


@dataclass(frozen=True)
class InputItem:
    """One input file and what an input catalogue says about it.

    Parameters
    ----------
    file : str
        Path of the cutout (FITS, JPEG or PNG).
    object_id, ra, dec, redshift : optional
        Override the values from the FITS header.
    r50_arcsec : float, optional
        Galaxy half-light radius, used instead of measuring it.
    pixel_scale : float, optional
        Pixel scale (arcsec) to assume when the file has no WCS (JPEG and PNG images never
        have one).
    """

    file: str
    object_id: str | None = None
    ra: float | None = None
    dec: float | None = None
    redshift: float | None = None
    r50_arcsec: float | None = None
    pixel_scale: float | None = None


def _walk_error(exc):
    """os.walk error handler: an unlistable directory would silently lose its files."""
    msg = f"Cannot list the input directory {exc.filename!r}: {exc.strerror}. Fix its permissions or leave it out of --input."
    raise JobError(msg)


def _glob_no_links(pattern):
    """``glob.glob(pattern, recursive=True)`` whose ``**`` does not follow symbolic links.

    ``glob`` follows links to directories under ``**``, so a link loop makes it run for ever
    (two loops: 2**40 paths). ``pathlib``'s ``**`` does not follow them.
    """

    parts = pathlib.PurePath(pattern).parts
    i = next((k for k, part in enumerate(parts) if any(ch in part for ch in "*?[")), len(parts))
    if i == len(parts):
        return glob.glob(pattern)
    base = pathlib.Path(*parts[:i]) if i else pathlib.Path(".")
    rest = parts[i:]
    hidden_ok = any(part.startswith(".") for part in rest)
    out = []
    try:
        for f in base.glob(str(pathlib.PurePath(*rest))):
            rel = f.relative_to(base).parts
            if hidden_ok or not any(part.startswith(".") for part in rel):
                out.append(str(f))
    except OSError:
        pass
    return sorted(out)


def discover_inputs(paths):
    """Find the cutouts (FITS, JPEG, PNG) named by paths, directories, globs and ``@list`` files.

    Parameters
    ----------
    paths : str or list of str
        Files, directories (searched recursively; symbolic links to directories are not
        followed, so link loops are harmless), glob patterns (``**`` does not follow links to
        directories either), or ``@FILE`` naming a text file with one path per line.

    Returns
    -------
    list of str
        Absolute paths, sorted and de-duplicated.

    Raises
    ------
    JobError
        If a named path does not exist, or a directory cannot be listed.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found = set()
    for p in paths:
        p = os.fspath(p)
        if p.startswith("@"):
            listing = p[1:]
            try:
                with open(listing, encoding="utf-8") as fh:
                    base = os.path.dirname(os.path.abspath(listing))
                    for line in fh:
                        line = line.strip()
                        if line and not line.startswith("#"):
                            found.add(os.path.abspath(os.path.join(base, line)))
            except OSError as exc:
                msg = f"Cannot read the input list {listing!r}: {exc.strerror}."
                raise JobError(msg) from None
        elif os.path.isdir(p):
            for root, dirs, files in os.walk(p, followlinks=False, onerror=_walk_error):
                dirs.sort()
                for f in files:
                    if is_input_file(f):
                        found.add(os.path.abspath(os.path.join(root, f)))
        elif os.path.exists(p) or os.path.islink(p):
            found.add(os.path.abspath(p))
        elif any(ch in p for ch in "*?["):
            for f in _glob_no_links(p):
                if os.path.isdir(f):
                    found.update(discover_inputs([f]))
                elif is_input_file(f):
                    found.add(os.path.abspath(f))
        else:
            msg = f"Input path {p!r} does not exist. Give FITS/JPEG/PNG files, directories, globs or @list files."
            raise JobError(msg)
    return sorted(found)


def read_input_catalogue(path):
    """Read an input catalogue (CSV or Parquet) into :class:`InputItem` objects.

    Columns: ``file`` (required; relative paths are taken relative to the catalogue's
    directory and never expanded by a shell), and optionally ``object_id``, ``ra``, ``dec``,
    ``redshift``, ``r50_arcsec`` (or ``size_arcsec``) and ``pixel_scale``.

    Parameters
    ----------
    path : str
        The catalogue file.

    Returns
    -------
    dict
        Absolute file path -> InputItem.
    """
    import pandas as pd

    try:
        if str(path).lower().endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        msg = f"Cannot read the input catalogue {path!r}: {exc}. Give a CSV or Parquet file."
        raise JobError(msg) from None
    if "file" not in df.columns:
        msg = f"The input catalogue {path!r} has no 'file' column (it has {list(df.columns)})."
        raise JobError(msg)
    base = os.path.dirname(os.path.abspath(path))
    size_col = "r50_arcsec" if "r50_arcsec" in df.columns else ("size_arcsec" if "size_arcsec" in df.columns else None)

    def val(row, col, cast=float):
        if col is None or col not in df.columns:
            return None
        v = row[col]
        if v is None or (isinstance(v, float) and not np.isfinite(v)) or pd.isna(v):
            return None
        return cast(v)

    items = {}
    for _, row in df.iterrows():
        f = os.path.abspath(os.path.join(base, str(row["file"])))
        items[f] = InputItem(
            file=f,
            object_id=val(row, "object_id", str),
            ra=val(row, "ra"),
            dec=val(row, "dec"),
            redshift=val(row, "redshift"),
            r50_arcsec=val(row, size_col),
            pixel_scale=val(row, "pixel_scale"),
        )
    return items
