from survey_bars.flags import FLAG_DESCRIPTIONS, Flag, describe, flag_table


def test_every_flag_documented_and_unique():
    values = [int(f) for f in Flag]
    assert len(set(values)) == len(values)
    assert all(v & (v - 1) == 0 for v in values)  # single bits
    assert set(FLAG_DESCRIPTIONS) == {f.name for f in Flag}


def test_describe_and_table():
    v = Flag.LOW_SNR | Flag.TRUNCATED
    assert describe(int(v)) == ["LOW_SNR", "TRUNCATED"]
    assert describe(0) == []
    table = flag_table()
    assert table[0]["bit"] == 0 and table[0]["name"] == "NO_WCS"
    assert all(t["value"] == 1 << t["bit"] for t in table)


def test_readme_flag_table_matches_the_code():
    """The README's quality_flags table is the documentation users read: it must not drift."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (\d+) \| `([A-Z_]+)` \| (.+?) \|$", readme, flags=re.MULTILINE)
    assert [(int(b), int(v), n, d) for b, v, n, d in rows] == [
        (t["bit"], t["value"], t["name"], t["description"]) for t in flag_table()]


def test_flag_descriptions_quote_the_pipeline_thresholds():
    from survey_bars import pipeline as pl

    d = FLAG_DESCRIPTIONS
    assert f"below {pl.LOW_SNR:g}" in d["LOW_SNR"]
    assert f"{100 * pl.NAN_CENTRE_FRAC:g} %" in d["NAN_NEAR_CENTRE"]
    assert f"{100 * pl.OFF_CENTRE_FRAC:g} %" in d["OFF_CENTRE"]
    assert f"{100 * pl.TRUNCATED_FRAC:g} %" in d["TRUNCATED"]
    assert f"factor {pl.LARGE_RESAMPLING:g}" in d["LARGE_RESAMPLING"]
    assert f"between {pl.P_BAR_AMBIGUOUS[0]:g} and {pl.P_BAR_AMBIGUOUS[1]:g}" in d["P_BAR_AMBIGUOUS"]


def test_readme_column_table_matches_the_schema():
    """The README's column table is what users query by: every column, unit and description, in order."""
    import re
    from pathlib import Path

    from survey_bars.io.catalogue import COLUMNS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| column | unit | description |"):]
    table = table[: table.index("\n\n")]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| ([^|]*?) \| (.+?) \|$", table, flags=re.MULTILINE)
    assert [(n, u.strip(), d) for n, u, d in rows] == [(n, unit, desc) for n, (_, unit, desc) in COLUMNS.items()]
