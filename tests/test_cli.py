"""The command line: optional extras that are not installed."""

from __future__ import annotations

import sys

import pytest

from survey_bars import cli


@pytest.mark.parametrize("command", ["export", "train"])
def test_train_and_export_without_torch_say_what_to_install(command, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a worker-only install
    for mod in ("survey_bars.models.export", "survey_bars.models.train"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    args = {"export": ["export", "--help"], "train": ["train", "--data", "nowhere", "--out", "nowhere"]}[command]
    try:
        code = cli.main(args)
    except SystemExit as exc:  # --help of a command whose module imported fine
        code = exc.code
    err = capsys.readouterr().err
    if command == "export":  # imports torch at module level: even --help needs it
        assert code == 2 and "survey-bars export: needs torch" in err and 'survey-bars[train]' in err
    else:  # imports torch when it trains
        assert code == 2 and "needs torch" in err and 'survey-bars[train]' in err


def test_a_missing_module_that_is_not_an_extra_is_a_real_error():
    assert cli.missing_extra_message("process", ModuleNotFoundError("no", name="numpy")) is None
    assert "survey-bars[qa]" in cli.missing_extra_message("inspect", ModuleNotFoundError("no", name="matplotlib.pyplot"))
