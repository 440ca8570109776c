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
