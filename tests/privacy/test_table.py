"""Tests of the ``delsim privacy table`` command module."""

import argparse
import csv
import math

import pytest

from delsim.privacy import PrivacyLedger, exact_epsilon, gdp_epsilon
from delsim.privacy.table import BITS, DIMS, MUS, configure_parser, main


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(list(argv))


def test_table_rows_and_csv(tmp_path, capsys):
    path = tmp_path / "table.csv"

    status = main(parse("--csv", str(path), "--releases", "4"))

    assert status == 0
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(BITS) * len(DIMS) * len(MUS)
    tolerance = PrivacyLedger().tolerance
    for row in rows:
        bits, dim, mu = int(row["bits"]), int(row["dim"]), float(row["mu"])
        gdp = float(row["epsilon_gdp"])
        assert gdp == pytest.approx(gdp_epsilon(1e-5, mu * 2.0))
        assert gdp - 1e-9 <= float(row["epsilon_ledger"]) <= gdp + tolerance(float(row["epsilon_ledger"]))
        exact = exact_epsilon(1e-5, bits=bits, mu=mu, clip=0.05, dim=dim, releases=4)
        assert float(row["epsilon_exact"]) == pytest.approx(exact)
        assert row["gdp_understates"] == str(exact > gdp)
    assert "eps_exact" in capsys.readouterr().out


def test_table_marks_invalid_settings(tmp_path, capsys):
    path = tmp_path / "table.csv"

    status = main(parse("--sparsity", "0.05", "--clip", "1.0", "--csv", str(path)))

    assert status == 0
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    invalid = [(int(row["bits"]), int(row["dim"]), float(row["mu"])) for row in rows if row["note"]]
    assert (1, 32, 4.0) in invalid
    assert (1, 32, 8.0) in invalid
    assert (8, 128, 0.5) not in invalid
    assert all("below clip" in row["note"] for row in rows if row["note"])
    assert all(row["epsilon_exact"] == "" for row in rows if row["note"])
    understated = [row for row in rows if row["gdp_understates"] == "True"]
    assert understated, "sparsity 0.05 should show settings where GDP understates"
    assert "below clip" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("--delta", "0"), "--delta"),
        (("--clip", "-1"), "--clip"),
        (("--sparsity", "1.5"), "--sparsity"),
        (("--releases", "0"), "--releases"),
    ],
)
def test_table_rejects_invalid_options(argv, fragment, capsys):
    assert main(parse(*argv)) == 2
    assert fragment in capsys.readouterr().err


def test_table_rdp_column_is_upper_bound(tmp_path):
    path = tmp_path / "table.csv"
    assert main(parse("--accountant", "rdp", "--csv", str(path))) == 0
    with path.open() as handle:
        for row in csv.DictReader(handle):
            assert float(row["epsilon_ledger"]) >= float(row["epsilon_gdp"])
            assert math.isfinite(float(row["epsilon_ledger"]))
