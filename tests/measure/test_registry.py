"""The registry of bar-measuring methods: names, auto, calibrations, columns."""

import numpy as np
import pytest

from survey_bars import measure
from survey_bars.io.catalogue import COLUMNS
from survey_bars.measure import MapMeasures, MeasuringMethod, calibration_for, get_method, resolve_method
from survey_bars.inference.saliency import SmoothGradResult


def test_built_in_methods_are_registered_in_order():
    assert measure.method_names() == ("head", "moments", "bhambra2022", "profile")
    assert measure.run_methods() == ("auto", "head", "moments", "bhambra2022", "profile")
    for name in measure.method_names():
        m = get_method(name)
        assert m.name == name and m.version >= 1 and m.summary


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of auto, head, moments, bhambra2022, profile"):
        get_method("isophote")


def test_register_refuses_taken_or_reserved_names():
    class Auto(MeasuringMethod):
        name = "auto"

    class Again(MeasuringMethod):
        name = "moments"

    for cls in (Auto, Again):
        with pytest.raises(ValueError, match="reserved or taken"):
            measure.register(cls())


def test_auto_takes_the_head_only_when_the_bundle_has_one():
    assert resolve_method({"files": {"length_head.onnx": "x"}}, "auto") == "head"
    assert resolve_method({"files": {}}, "auto") == "moments"
    assert resolve_method({}, "bhambra2022") == "bhambra2022"


def test_calibration_version_is_checked_for_every_method():
    for name in ("moments", "bhambra2022", "profile"):
        m = get_method(name)
        card = {"calibration": {name: {"slope": 1.0, "measurement_version": m.version + 1}}}
        with pytest.raises(ValueError, match="measurement version"):
            calibration_for(card, name)
        card["calibration"][name]["measurement_version"] = m.version
        assert calibration_for(card, name)["slope"] == 1.0
    with pytest.raises(ValueError, match="learned length head"):
        calibration_for({}, "head")


def test_each_methods_columns_are_in_the_catalogue_schema():
    cols = list(COLUMNS)
    for name in measure.method_names():
        for col in get_method(name).columns:
            assert col in cols
    # the methods' columns sit together, in registry order, before the direct CNN's
    own = list(measure.catalogue_columns())
    i = cols.index(own[0])
    assert cols[i : i + len(own)] == own
    assert cols[i + len(own)] == "bar_length_direct_arcsec"


def test_map_measures_measure_each_method_once():
    calls = []

    class Counting(MeasuringMethod):
        name = "counting"

        def measure(self, saliency):
            calls.append(1)
            return measure.measure_moments(saliency)

    m = np.zeros((32, 32))
    m[15:17, 8:24] = 1.0
    res = SmoothGradResult(map=m, subsets=np.stack([m, m]))
    counting = Counting()
    mm = MapMeasures(res, lambda name: counting)
    a = mm.get("counting")
    assert mm.get("counting") is a
    assert mm.subset_lengths("counting") == mm.subset_lengths("counting")
    assert len(calls) == 3  # the map once, each of the two subsets once


def test_the_head_reads_no_single_map():
    with pytest.raises(NotImplementedError, match="raw_lengths"):
        get_method("head").measure(np.zeros((8, 8)))


def test_map_methods_are_those_that_read_one_map():
    assert measure.map_methods() == ("moments", "bhambra2022", "profile")
    from survey_bars.training.calibrate import CLI_DEFAULTS

    assert set(measure.map_methods()) <= set(CLI_DEFAULTS) and {"head", "head-errors"} <= set(CLI_DEFAULTS)
