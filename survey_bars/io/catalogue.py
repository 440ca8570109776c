"""The catalogue: schema, units, partition parts, streamed assembly and reading.

A job writes one Parquet *part* per partition into a staging directory
(``<out>.parts/``): the part goes to a temporary name, is renamed into place, and then a
``.done`` marker is written. ``--resume`` skips partitions whose marker exists and whose part
reads back. :func:`assemble` streams the parts, one row group at a time, into the final file
(or a directory of files), so the whole table is never in memory.

Units and descriptions of each column are in the Parquet *field* metadata (``unit``,
``description``); the model card, software version, run configuration and flag meanings are
in the *file* metadata under the key ``survey_bars``. :func:`read_catalogue` returns an
``astropy.table.Table`` with the units attached.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..flags import flag_table
from ..measure import catalogue_columns

__all__ = [
    "COLUMNS",
    "SCHEMA",
    "METADATA_KEY",
    "empty_row",
    "rows_to_table",
    "write_part",
    "part_paths",
    "is_done",
    "assemble",
    "read_metadata",
    "read_catalogue",
]

METADATA_KEY = b"survey_bars"

#: name -> (arrow type, unit or "", description)
COLUMNS = {
    "object_id": (pa.string(), "", "Object identifier: OBJID header keyword, input-catalogue id, or file stem."),
    "file": (pa.string(), "", "Absolute path of the input file (FITS, JPEG or PNG)."),
    "partition": (pa.int32(), "", "Index of the partition that processed the file."),
    "status": (pa.string(), "", "'ok' when the file was measured, 'error' when it could not be used."),
    "error": (pa.string(), "", "Why the file could not be used: '<reason>: <message>'; null when status is 'ok'."),
    "ra": (pa.float64(), "deg", "Right ascension (ICRS) of the cutout centre, from the WCS or the input catalogue."),
    "dec": (pa.float64(), "deg", "Declination (ICRS) of the cutout centre, from the WCS or the input catalogue."),
    "redshift": (pa.float64(), "", "Redshift from the input catalogue or the REDSHIFT/Z header keyword."),
    "pixel_scale_arcsec": (pa.float64(), "arcsec / pix", "Pixel scale of the cutout (null for an image without one: flag NO_PIXEL_SCALE)."),
    "band": (pa.string(), "", "Band the network saw: the FITS band chosen by --band or the survey default (a name, or '#k' for the k-th unnamed band), 'rgb-mean' for a colour JPEG/PNG (the mean of its channels), 'grey' for a greyscale one; null for a single-band FITS file that names none."),
    "r50_arcsec": (pa.float64(), "arcsec", "Half-light radius used for size normalisation."),
    "resample_scale": (pa.float64(), "", "Input pixels per model pixel of the normalised frame."),
    "snr": (pa.float64(), "", "Integrated signal-to-noise ratio of the segmented galaxy (from the VARIANCE/IVAR extension when the file has one, else the background noise; null for display images)."),
    "p_smooth": (pa.float32(), "", "Probability that the galaxy is smooth (elliptical-like)."),
    "p_disc": (pa.float32(), "", "Probability that the galaxy is a disc or has features (1 - p_smooth)."),
    "p_edge_on": (pa.float32(), "", "Probability that the galaxy is an edge-on disc."),
    "p_bar": (pa.float32(), "", "Calibrated probability that the galaxy has a bar."),
    "p_spiral": (pa.float32(), "", "Probability that the galaxy shows spiral arms."),
    "bar_length_arcsec": (pa.float64(), "arcsec", "Full end-to-end projected bar length, as astronomers mark a bar's ends: under the bundle's length_definition 'visible' (bundles 4.0 and later) the extent over which the bar's own light stays above half its peak ('formal', bundle 3.0: the end of its profile, about 1.85 times longer). Read off the SmoothGrad saliency map by the run's measuring method (the metadata's run_config.method; default: the bundle's learned length head, which since bundle 5.1 also learns real volunteers' lengths), calibrated on simulations and, where the bundle has it, scaled to volunteers' lengths of real bars."),
    "bar_length_err_arcsec": (pa.float64(), "arcsec", "Uncertainty of bar_length_arcsec: spread over subsets of the SmoothGrad samples, plus the calibration's systematic error (fitted on simulations, then, where the bundle has it, on real volunteer-measured bars, to cover 68 % of the lengths)."),
    "bar_pa_deg": (pa.float64(), "deg", "Bar position angle, east of north, in [0, 180)."),
    "bar_axis_ratio": (pa.float64(), "", "Minor-to-major axis ratio of the saliency bar structure."),
    **catalogue_columns(),  # the measuring methods' own columns (survey_bars.measure)
    "bar_length_direct_arcsec": (pa.float64(), "arcsec", "Bar length regressed directly by the baseline CNN (trained on the same length definition)."),
    "bar_length_kpc": (pa.float64(), "kpc", "bar_length_arcsec converted with the redshift and the run's cosmology (null without a redshift)."),
    "quality_flags": (pa.uint32(), "", "Bitmask of quality flags; see the file metadata or survey_bars.flags."),
}

SCHEMA = pa.schema(
    [
        pa.field(
            name,
            typ,
            nullable=True,
            metadata={b"unit": unit.encode(), b"description": desc.encode()},
        )
        for name, (typ, unit, desc) in COLUMNS.items()
    ]
)


def empty_row(**values):
    """Return a row dict with every column set to null, updated with ``values``.

    Parameters
    ----------
    **values
        Column values to set.

    Returns
    -------
    dict
    """
    row = {name: None for name in COLUMNS}
    unknown = set(values) - set(COLUMNS)
    if unknown:
        msg = f"Unknown catalogue columns {sorted(unknown)}."
        raise KeyError(msg)
    row.update(values)
    return row


def rows_to_table(rows):
    """Build an Arrow table with the catalogue schema from row dicts.

    Parameters
    ----------
    rows : list of dict
        Rows made with :func:`empty_row`.

    Returns
    -------
    pyarrow.Table
    """
    arrays = [pa.array([r[name] for r in rows], type=SCHEMA.field(name).type) for name in COLUMNS]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def part_paths(staging_dir, partition):
    """Return ``(part_path, done_marker_path)`` for a partition index.

    Parameters
    ----------
    staging_dir : str
        The job's staging directory.
    partition : int
        Partition index.

    Returns
    -------
    tuple of str
    """
    stem = os.path.join(staging_dir, f"part-{int(partition):06d}")
    return stem + ".parquet", stem + ".done"


@contextlib.contextmanager
def atomic_file(path, *, prefix=".tmp-", suffix=""):
    """Write a file atomically: yield a temporary path beside ``path``, then move it over ``path``.

    On success the temporary file is synced to disk and renamed to ``path`` (readers see the
    old file or the whole new one, never a part); on any failure it is removed.

    Parameters
    ----------
    path : str
        The file to write.
    prefix, suffix : str, optional
        Of the temporary file's name.

    Yields
    ------
    str
        The temporary path to write to.
    """
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=d)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _atomic_write_bytes(path, data: bytes):
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def write_part(table, staging_dir, partition, *, digest=""):
    """Write one partition's table atomically, then its done marker.

    Parameters
    ----------
    table : pyarrow.Table
        The partition's rows (catalogue schema).
    staging_dir : str
        Staging directory (created if needed).
    partition : int
        Partition index.
    digest : str, optional
        Identifier of the partition's inputs, stored in the marker so that ``--resume`` can
        tell a stale marker from a valid one.

    Returns
    -------
    str
        Path of the part file.
    """
    os.makedirs(staging_dir, exist_ok=True)
    part, done = part_paths(staging_dir, partition)
    with atomic_file(part, prefix=".tmp-part-", suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    marker = {"partition": int(partition), "rows": table.num_rows, "digest": digest}
    _atomic_write_bytes(done, json.dumps(marker).encode())
    return part


def is_done(staging_dir, partition, digest=""):
    """Whether a partition finished in an earlier run with the same inputs.

    Parameters
    ----------
    staging_dir : str
        Staging directory.
    partition : int
        Partition index.
    digest : str, optional
        Expected input digest.

    Returns
    -------
    bool
        True when the part file and its done marker exist, the marker's digest and row count
        match, and the part has this version's catalogue columns.
    """
    part, done = part_paths(staging_dir, partition)
    if not (os.path.exists(part) and os.path.exists(done)):
        return False
    try:
        with open(done) as fh:
            marker = json.load(fh)
        meta = pq.read_metadata(part)
    except (OSError, ValueError, pa.ArrowException):
        return False
    # a part written by a survey-bars with other catalogue columns is redone, not assembled
    same_columns = meta.schema.to_arrow_schema().names == SCHEMA.names
    return marker.get("digest", "") == digest and meta.num_rows == marker.get("rows") and same_columns


def _file_metadata(extra):
    meta = {
        "software": "survey-bars",
        "software_version": __version__,
        "flags": flag_table(),
        "columns": {name: {"unit": u, "description": d} for name, (_, u, d) in COLUMNS.items()},
    }
    meta.update(extra or {})
    return {METADATA_KEY: json.dumps(meta, default=str).encode()}


def _part_tables(staging_dir, partitions, schema, transform):
    """The parts' row groups in partition order, cast to ``schema`` and passed through ``transform``."""
    for p in partitions:
        part, _ = part_paths(staging_dir, p)
        pf = pq.ParquetFile(part)
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg).cast(schema)
            yield t if transform is None else transform(t).cast(schema)


def assemble(staging_dir, partitions, out, *, metadata=None, rows_per_file=1_000_000, transform=None):
    """Stream the parts into the final catalogue.

    Parameters
    ----------
    staging_dir : str
        Staging directory holding ``part-NNNNNN.parquet`` files.
    partitions : list of int
        The partitions to include, in order.
    out : str
        A ``.parquet`` file, or a directory (ending in ``/`` or existing as one) that receives
        ``catalogue-NNNNN.parquet`` files of at most ``rows_per_file`` rows each.
    metadata : dict, optional
        Extra file metadata (model card, run configuration).
    rows_per_file : int, optional
        Rows per output file when ``out`` is a directory.
    transform : callable, optional
        Applied to each row group (a ``pyarrow.Table``) before it is written, e.g. to set
        flags that need the whole job (duplicate ids).

    Returns
    -------
    int
        The number of rows written.
    """
    schema = SCHEMA.with_metadata(_file_metadata(metadata))
    as_dir = out.endswith(os.sep) or os.path.isdir(out)
    total = 0
    if as_dir:
        os.makedirs(out, exist_ok=True)
        tmpdir = tempfile.mkdtemp(prefix=".tmp-catalogue-", dir=out)
        writer, idx, in_file = None, 0, 0
        try:
            for t in _part_tables(staging_dir, partitions, schema, transform):
                if writer is None or in_file >= rows_per_file:
                    if writer is not None:
                        writer.close()
                        idx += 1
                    writer = pq.ParquetWriter(os.path.join(tmpdir, f"catalogue-{idx:05d}.parquet"), schema, compression="zstd")
                    in_file = 0
                writer.write_table(t)
                in_file += t.num_rows
                total += t.num_rows
            if writer is None:
                writer = pq.ParquetWriter(os.path.join(tmpdir, "catalogue-00000.parquet"), schema, compression="zstd")
            writer.close()
            for name in sorted(os.listdir(tmpdir)):
                os.replace(os.path.join(tmpdir, name), os.path.join(out, name))
        finally:
            for name in os.listdir(tmpdir):
                os.unlink(os.path.join(tmpdir, name))
            os.rmdir(tmpdir)
        return total

    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    with atomic_file(out, prefix=".tmp-catalogue-", suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for t in _part_tables(staging_dir, partitions, schema, transform):
                writer.write_table(t)
                total += t.num_rows
    return total


def read_metadata(path):
    """Return the ``survey_bars`` file metadata of a catalogue as a dict.

    Parameters
    ----------
    path : str
        Catalogue file, or a directory of catalogue files.

    Returns
    -------
    dict
    """
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".parquet"))
        path = os.path.join(path, files[0])
    schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        msg = f"{path!r} has no survey-bars metadata; is it a survey-bars catalogue?"
        raise ValueError(msg)
    return json.loads(raw)


def read_catalogue(path, columns=None):
    """Read a catalogue as an astropy Table with units.

    Parameters
    ----------
    path : str
        Catalogue file or directory.
    columns : list of str, optional
        Columns to read (default: all).

    Returns
    -------
    astropy.table.Table
    """
    import astropy.units as u
    from astropy.table import Table

    table = pq.read_table(path, columns=columns)
    out = Table()
    for name in table.column_names:
        field = table.schema.field(name)
        md = field.metadata or {}
        col = table.column(name).to_numpy(zero_copy_only=False)
        out[name] = col
        unit = md.get(b"unit", b"").decode()
        if unit:
            out[name].unit = u.Unit(unit)
        desc = md.get(b"description", b"").decode()
        if desc:
            out[name].description = desc
    out.meta.update(read_metadata(path))
    return out
