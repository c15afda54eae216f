from optimizer.tariff import bundled_ids, load_tariff


def test_bundled_ev2a_tariff_loads_with_peak_at_16_to_21():
    assert "pge-ev2a-nem2ps-2024" in bundled_ids()
    t = load_tariff("pge-ev2a-nem2ps-2024")
    names = [t.period_names[i] for i in t.period_table[0, 0]]
    assert names[15] == "part_peak" and names[16:21] == ["peak"] * 5 and names[21] == "part_peak"
