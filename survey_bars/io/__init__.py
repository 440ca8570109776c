"""Input and output: reading cutouts, finding inputs, writing the catalogue and saliency maps.

=====================  ==============================================================
:mod:`.cutout`         the :class:`Cutout`, :class:`CutoutError` and the reader interface
:mod:`.readers`        :func:`read_cutout`: the reader chosen by the file's content
:mod:`.fits`           FITS, single- or multi-band
:mod:`.image`          JPEG and PNG display images (Pillow)
:mod:`.inputs`         discovery of input files and the input catalogue
:mod:`.catalogue`      the catalogue's schema, partition parts, assembly and reading
:mod:`.saliency_maps`  the FITS saliency maps of ``--save-saliency``
=====================  ==============================================================
"""

from .cutout import DEFAULT_MAX_PIXELS, Cutout, CutoutError
from .readers import INPUT_SUFFIXES, file_stem, get_reader, is_input_file, read_cutout

__all__ = ["Cutout", "CutoutError", "DEFAULT_MAX_PIXELS", "INPUT_SUFFIXES", "file_stem", "get_reader", "is_input_file",
           "read_cutout"]
