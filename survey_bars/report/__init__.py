"""Visual QA: ``survey-bars inspect``, a static HTML report for a catalogue.

The report (``index.html`` and PNG figures in one directory, relative links, no JavaScript)
shows:

- counts by status, by quality flag and by error reason;
- the distributions of ``p_bar`` and of the bar lengths, and the saliency lengths compared
  with the direct-CNN lengths (and the published Bhambra et al. 2022 sweep, when present);
- galleries (random, highest ``p_bar``, most flagged, and a user ``--query``): each tile shows
  the cutout, the model input and the SmoothGrad saliency map, with the measured bar drawn
  at its position angle and length;
- the model card and the run metadata stored in the catalogue.

It is built for catalogues of millions of rows: one streaming pass over only the needed
columns (``pyarrow.parquet.ParquetFile.iter_batches``) accumulates the counts, histograms and
correlation sums, keeps a uniform sample for the scatter plots, and keeps the gallery rows
with streaming top-k selections (a uniform reservoir is a top-k on random keys). Only the
few galleried objects are read from their cutout files (FITS, JPEG or PNG; the band of
multi-band FITS files is the run's ``--band``, and colour images are shown in colour).

Examples
--------
>>> from survey_bars.report import build_report                      # doctest: +SKIP
>>> build_report("catalogue.parquet", "report/", query="p_bar > 0.9")  # doctest: +SKIP
'report/index.html'

The package: :mod:`.scan` (the streaming pass), :mod:`.maps` (saliency maps recomputed as
``process`` made them), :mod:`.figures` (summary plots), :mod:`.tiles` (gallery tiles),
:mod:`.html` (:func:`build_report`) and :mod:`.cli` (``survey-bars inspect``).
"""

from .html import build_report
from .maps import recompute_saliency
from .scan import (
           GALLERIES,
           REPORT_COLUMNS,
           REQUIRED_COLUMNS,
           CatalogueScan,
           scan_catalogue,
)

__all__ = ["GALLERIES", "REPORT_COLUMNS", "REQUIRED_COLUMNS", "CatalogueScan", "build_report", "recompute_saliency",
           "scan_catalogue"]
