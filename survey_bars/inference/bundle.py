"""The model bundle: a directory with two ONNX graphs and a JSON model card.

A bundle holds

* ``forward.onnx``: ``image`` ``[B, 1, S, S]`` -> ``probs`` ``[B, 5]`` (columns named by the
  card's ``class_names``), ``bar_logit`` ``[B]`` and ``bar_length_direct`` ``[B]`` (full bar
  length in model-frame pixels from the direct-regression baseline);
* ``saliency.onnx``: ``image`` ``[B, 1, S, S]`` -> ``grad`` ``[B, 1, S, S]``, the gradient of
  each item's ``bar_logit`` with respect to its input frame;
* ``length_head.onnx`` (optional): ``saliency`` ``[B, 1, S, S]`` -> ``length`` ``[B]``, the
  learned length head of :mod:`survey_bars.training.head`, which reads a bar length (model-frame
  pixels) off a SmoothGrad map; the ``head`` measuring method needs it;
* ``card.json``: the model card (schema version, name, version, input shape, preprocessing
  parameters, output and class names, training command, seed and data, held-out metrics, the
  saliency length calibration, SmoothGrad defaults and the sha256 of each ONNX file).

Loading reads JSON and hashes bytes: no pickle, and no torch, anywhere in this module. The
``survey-bars models`` command lists the installed bundles.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import sys
import tempfile
from dataclasses import dataclass

from ..normalise import NormaliseConfig

__all__ = [
    "SCHEMA_VERSION",
    "DEFAULT_BUNDLE",
    "REQUIRED_KEYS",
    "BUNDLE_FILES",
    "OPTIONAL_FILES",
    "BundleError",
    "Bundle",
    "load_bundle",
    "write_card",
    "list_bundles",
    "sha256_file",
    "LENGTH_DEFINITIONS",
    "VISIBLE_BAR_FRACTION",
    "length_definition",
    "configure_parser",
    "run_cli",
]

#: The card schema this survey-bars reads and writes.
SCHEMA_VERSION = 1

#: The simulator's bars have a Ferrers profile, I = I0 (1 - m^2)^2 with m = r / a: their light
#: stays above half its peak out to m = sqrt(1 - 1/sqrt(2)), 0.541 of the formal end ``a``.
VISIBLE_BAR_FRACTION = math.sqrt(1.0 - 1.0 / math.sqrt(2.0))

#: What a bundle's bar lengths mean, as a fraction of the simulator's formal bar length (the
#: truth's ``bar_length_arcsec``: twice the end ``a`` of the profile). ``"formal"`` is that end
#: (bundle 3.0); ``"visible"`` is the extent over which the bar's own light stays above half its
#: peak, which is where astronomers mark a bar's ends by eye (issue 23).
LENGTH_DEFINITIONS = {"formal": 1.0, "visible": VISIBLE_BAR_FRACTION}
#: The bundle shipped with the package.
DEFAULT_BUNDLE = pathlib.Path(__file__).resolve().parent / "default"
#: Graph files every bundle has.
BUNDLE_FILES = ("forward.onnx", "saliency.onnx")
#: Graph files a bundle may have; when present they are listed in the card and verified.
OPTIONAL_FILES = ("length_head.onnx",)
#: Environment variable with extra bundle directories (``os.pathsep``-separated).
BUNDLE_PATH_ENV = "SURVEY_BARS_BUNDLE_PATH"
#: Keys every card must have.
#: The morphology probabilities of the forward graph's ``probs`` output, in column order (the
#: card's ``class_names``), and the catalogue columns they fill.
CLASS_NAMES = ("p_smooth", "p_disc", "p_edge_on", "p_bar", "p_spiral")

REQUIRED_KEYS = (
    "schema_version",
    "name",
    "version",
    "input_shape",
    "preprocessing",
    "inputs",
    "output_names",
    "class_names",
    "training",
    "metrics",
    "files",
    "calibration",
    "smoothgrad",
)
_CARD = "card.json"


class BundleError(ValueError):
    """A model bundle that is missing, corrupt or incompatible."""


def sha256_file(path, chunk=1 << 20):
    """Return the hex sha256 of a file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    chunk : int, optional
        Read size in bytes.

    Returns
    -------
    str
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    """A loaded model bundle.

    Attributes
    ----------
    path : pathlib.Path
        The bundle directory.
    card : dict
        The parsed ``card.json``.
    forward_path : pathlib.Path
        The forward graph.
    saliency_path : pathlib.Path
        The input-gradient graph.
    head_path : pathlib.Path or None
        The learned length head (None when the bundle has none).
    """

    path: pathlib.Path
    card: dict
    forward_path: pathlib.Path
    saliency_path: pathlib.Path
    head_path: pathlib.Path | None = None

    @property
    def name(self) -> str:
        """The bundle's name."""
        return str(self.card.get("name", ""))

    @property
    def version(self) -> str:
        """The bundle's version."""
        return str(self.card.get("version", ""))

    @property
    def preprocessing(self) -> NormaliseConfig:
        """The :class:`~survey_bars.normalise.NormaliseConfig` the model was trained with."""
        return NormaliseConfig.from_dict(self.card["preprocessing"])

    @property
    def class_names(self) -> list:
        """Names of the columns of the forward graph's ``probs`` output."""
        return list(self.card["class_names"])

    @property
    def calibration(self) -> dict:
        """Saliency bar-length calibration (empty when not calibrated)."""
        return dict(self.card.get("calibration") or {})

    @property
    def smoothgrad(self) -> dict:
        """Recommended SmoothGrad settings, e.g. ``{"samples": 16, "noise_frac": 0.05, "symmetrise": True}``.

        ``symmetrise`` (default False for cards without it) averages the gradients over the
        eight rotations/flips of the frame (see :func:`survey_bars.inference.saliency.smoothgrad_batch`).
        """
        return dict(self.card.get("smoothgrad") or {})

    @property
    def input_shape(self) -> tuple:
        """Shape of one model input, ``(1, S, S)``."""
        return tuple(int(v) for v in self.card["input_shape"])


def _fail(path, what, todo):
    msg = f"Model bundle {str(path)!r}: {what} {todo}"
    raise BundleError(msg)


def _read_card(path):
    card_path = path / _CARD
    if not card_path.is_file():
        _fail(path, f"has no {_CARD}.", "A bundle is a directory made by `survey-bars train` or "
              "`survey-bars export`; pass that directory, or re-export the model.")
    try:
        text = card_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(path, f"{_CARD} cannot be read ({exc}).", "Check the file's permissions, or re-export the bundle.")
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(path, f"{_CARD} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).",
              "The card was damaged or edited by hand; restore it or re-export the bundle.")
    if not isinstance(card, dict):
        _fail(path, f"{_CARD} holds a JSON {type(card).__name__}, not an object.", "Re-export the bundle.")
    return card


def _check_card(path, card):
    version = card.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        _fail(path, f"the card's schema_version is {version!r}, not an integer.",
              f"This survey-bars reads schema version {SCHEMA_VERSION}; re-export the bundle.")
    if version != SCHEMA_VERSION:
        if version > SCHEMA_VERSION:
            todo = "It was made by a newer survey-bars: upgrade survey-bars to use it."
        else:
            todo = "It was made by an older survey-bars: re-export it with `survey-bars export`."
        _fail(path, f"has card schema_version {version}, but this survey-bars reads version {SCHEMA_VERSION}.", todo)
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        _fail(path, f"the card lacks the keys {missing}.", "The card is incomplete; re-export the bundle.")
    files = card["files"]
    if not isinstance(files, dict) or any(f not in files for f in BUNDLE_FILES):
        _fail(path, f"the card's 'files' must map {list(BUNDLE_FILES)} to sha256 digests; got {files!r}.",
              "Re-export the bundle.")
    shape = card["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        _fail(path, f"the card's input_shape {shape!r} is not [channels, size, size].", "Re-export the bundle.")
    try:
        cfg = NormaliseConfig.from_dict(card["preprocessing"])
    except (TypeError, ValueError) as exc:
        _fail(path, f"the card's preprocessing parameters are unusable ({exc}).",
              "Upgrade survey-bars or re-export the bundle.")
    if cfg.size != shape[-1]:
        _fail(path, f"the preprocessing frame size {cfg.size} differs from input_shape {shape}.",
              "The card is inconsistent; re-export the bundle.")
    if not isinstance(card["class_names"], list) or not card["class_names"]:
        _fail(path, "the card's class_names must be a non-empty list.", "Re-export the bundle.")
    for key in ("calibration", "smoothgrad", "metrics", "training"):
        if not isinstance(card[key], dict):
            _fail(path, f"the card's {key!r} must be a JSON object, not {type(card[key]).__name__}.",
                  "Fix the card or re-export the bundle.")


def load_bundle(path=None, *, verify=True):
    """Load a model bundle, checking its card and the integrity of its files.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The bundle directory (or its ``card.json``). None loads the shipped default bundle.
    verify : bool, optional
        Compare each ONNX file's sha256 with the card (recommended; costs a read of the files).

    Returns
    -------
    Bundle

    Raises
    ------
    BundleError
        When the directory, the card or a graph is missing, the card is not valid JSON, its
        schema version is not :data:`SCHEMA_VERSION`, a required key is missing, or a file's
        hash differs from the card. The message says what is wrong and what to do.
    """
    p = DEFAULT_BUNDLE if path is None else pathlib.Path(os.fspath(path)).expanduser()
    if p.name == _CARD and p.is_file():
        p = p.parent
    p = p.resolve()
    if not p.exists():
        if path is None:
            _fail(p, "the default bundle is not installed.",
                  "Reinstall survey-bars, or build it with `python -m survey_bars.training.build_default`.")
        _fail(p, "does not exist.", "Check the path, or list the installed bundles with `survey-bars models`.")
    if not p.is_dir():
        _fail(p, "is not a directory.", "A bundle is a directory holding card.json, forward.onnx and saliency.onnx.")
    card = _read_card(p)
    _check_card(p, card)
    paths = {}
    for fname in BUNDLE_FILES + tuple(f for f in OPTIONAL_FILES if f in card["files"]):
        fpath = p / fname
        if not fpath.is_file():
            _fail(p, f"the graph {fname} is missing.", "The bundle is incomplete; copy it again or re-export it.")
        if verify:
            digest = sha256_file(fpath)
            expected = str(card["files"][fname]).lower()
            if digest != expected:
                _fail(p, f"{fname} is corrupt or was changed: its sha256 is {digest[:12]}..., the card says "
                      f"{expected[:12]}....", "Copy the bundle again, or re-export it; if you changed the graph "
                      "on purpose, record it with survey_bars.inference.bundle.write_card().")
        paths[fname] = fpath
    return Bundle(path=p, card=card, forward_path=paths["forward.onnx"], saliency_path=paths["saliency.onnx"],
                  head_path=paths.get("length_head.onnx"))


def length_definition(card):
    """What a bundle's bar lengths mean: the card's ``length_definition``, or ``"formal"``.

    Training, calibration and evaluation on simulations multiply the simulator's true length by
    ``fraction_of_formal`` before comparing, so that a bundle's lengths and its checks agree.

    Parameters
    ----------
    card : dict
        A bundle's card.

    Returns
    -------
    dict
        ``name`` (a key of :data:`LENGTH_DEFINITIONS`) and ``fraction_of_formal``.

    Raises
    ------
    BundleError
        For a name this survey-bars does not know.
    """
    name = ((card or {}).get("length_definition") or {}).get("name", "formal")
    if name not in LENGTH_DEFINITIONS:
        msg = (f"The card's length_definition {name!r} is not one of {sorted(LENGTH_DEFINITIONS)}; "
               "upgrade survey-bars or use a bundle made by this version.")
        raise BundleError(msg)
    return {"name": name, "fraction_of_formal": LENGTH_DEFINITIONS[name]}


def write_card(bundle_dir, card):
    """Write a bundle's ``card.json`` atomically, recording the current hash of each graph.

    Parameters
    ----------
    bundle_dir : str or os.PathLike
        The bundle directory, holding ``forward.onnx`` and ``saliency.onnx``.
    card : dict
        The card. Its ``files`` entry is replaced by the sha256 of the graphs on disk (the
        optional ones of :data:`OPTIONAL_FILES` when present), and ``schema_version`` is set
        to :data:`SCHEMA_VERSION`.

    Raises
    ------
    BundleError
        When a graph file is missing.
    """
    d = pathlib.Path(os.fspath(bundle_dir))
    card = dict(card)
    files = {}
    for fname in BUNDLE_FILES:
        fpath = d / fname
        if not fpath.is_file():
            _fail(d, f"has no {fname}, so its card cannot be written.", "Export the graphs first.")
        files[fname] = sha256_file(fpath)
    for fname in OPTIONAL_FILES:
        if (d / fname).is_file():
            files[fname] = sha256_file(d / fname)
    card["files"] = files
    card["schema_version"] = SCHEMA_VERSION
    text = json.dumps(card, indent=2, sort_keys=False, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".card-", suffix=".json.tmp", dir=d)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a card is world-readable
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, d / _CARD)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _candidate_dirs(extra_dirs=()):
    """Yield bundle directories: the default, ``$SURVEY_BARS_BUNDLE_PATH`` and ``extra_dirs``.

    A directory that holds a ``card.json`` is a bundle; otherwise its sub-directories that hold
    one are.
    """
    roots = [DEFAULT_BUNDLE]
    env = os.environ.get(BUNDLE_PATH_ENV, "")
    roots += [pathlib.Path(s) for s in env.split(os.pathsep) if s]
    roots += [pathlib.Path(os.fspath(s)) for s in extra_dirs]
    seen = set()
    for root in roots:
        root = root.expanduser()
        cands = []
        if (root / _CARD).is_file() or root == DEFAULT_BUNDLE:
            cands = [root]
        elif root.is_dir():
            cands = sorted(c for c in root.iterdir() if (c / _CARD).is_file())
        else:
            cands = [root]
        for c in cands:
            key = str(c.resolve())
            if key not in seen:
                seen.add(key)
                yield c


def list_bundles(extra_dirs=(), *, verify=True):
    """Return the loadable bundles: the default one, those on ``$SURVEY_BARS_BUNDLE_PATH`` and in ``extra_dirs``.

    Parameters
    ----------
    extra_dirs : iterable of str or os.PathLike, optional
        Bundle directories, or directories whose sub-directories are bundles.
    verify : bool, optional
        Verify the hashes of each bundle's files.

    Returns
    -------
    list of Bundle
        Bundles that failed to load are left out (``survey-bars models`` reports them).
    """
    out = []
    for d in _candidate_dirs(extra_dirs):
        try:
            out.append(load_bundle(d, verify=verify))
        except BundleError:
            continue
    return out


def configure_parser(parser):
    """Add the ``survey-bars models`` arguments to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="extra bundle directories, or directories of bundles, to list")
    parser.add_argument("--json", action="store_true", help="print the cards as JSON")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 checks")


def _summary(b):
    m = b.card.get("metrics", {})
    bits = [f"{b.name} {b.version}", f"  path: {b.path}",
            f"  input: {list(b.input_shape)}  classes: {', '.join(b.class_names)}"]
    keys = ("bar_auc_discs", "bar_auc", "ece_bar", "ece_morph", "ece_spiral", "direct_length_pearson_r",
            "direct_length_median_rel_err")
    shown = [f"{k}={m[k]:.3g}" for k in keys if isinstance(m.get(k), (int, float))]
    ci = m.get("bar_auc_discs_ci95")
    if shown and isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        shown.insert(1, f"(95% interval {ci[0]:.3f}-{ci[1]:.3f})")
    if shown:
        bits.append("  held-out: " + " ".join(shown))
    ev = (b.card.get("evaluation") or {}).get("metrics") or {}
    ci = ev.get("bar_auc_discs_ci95")
    if isinstance(ev.get("bar_auc_discs"), (int, float)) and isinstance(ci, list) and len(ci) == 2 \
            and all(isinstance(v, (int, float)) for v in ci):
        bits.append(f"  evaluation ({ev.get('n')} galaxies): bar_auc_discs={ev['bar_auc_discs']:.3g} "
                    f"(95% interval {ci[0]:.3f}-{ci[1]:.3f}, {ev.get('n_discs')} discs)")
    tr = b.card.get("training", {})
    if tr.get("command"):
        bits.append(f"  trained by: {tr['command']}")
    calib = b.calibration or {}
    real = [k for k, v in calib.items() if isinstance(v, dict) and v.get("real")]
    bits.append(f"  saliency calibration: {', '.join(calib) or 'none'}"
                + (f"; fitted to real bars: {', '.join(real)}" if real else ""))
    try:
        d = length_definition(b.card)
        bits.append(f"  bar lengths: {d['name']} ({d['fraction_of_formal']:.3f} of the simulator's formal length)")
    except BundleError as exc:
        bits.append(f"  bar lengths: {exc}")
    bits.append(f"  length head: {'yes (the default measuring method, --method auto)' if b.head_path else 'no (--method auto measures with moments)'}")
    return "\n".join(bits)


def run_cli(args):
    """Run ``survey-bars models``: list bundles and their cards.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments from :func:`configure_parser`.

    Returns
    -------
    int
        0 when every listed bundle loaded, 1 otherwise.
    """
    verify = not getattr(args, "no_verify", False)
    good, bad = [], []
    for d in _candidate_dirs(args.paths):
        try:
            good.append(load_bundle(d, verify=verify))
        except BundleError as exc:
            bad.append((str(d), str(exc)))
    if args.json:
        doc = {"bundles": [{"path": str(b.path), "card": b.card} for b in good],
               "errors": [{"path": p, "error": e} for p, e in bad]}
        print(json.dumps(doc, indent=2))
    else:
        for b in good:
            print(_summary(b))
        for p, e in bad:
            print(f"{p}: NOT LOADABLE: {e}", file=sys.stderr)
        if not good and not bad:
            print("No model bundles found.", file=sys.stderr)
    return 1 if bad else 0
