"""Tests of the per-user privacy ledger on real Opacus accountants."""

import json
import logging
import math
import pickle

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from delsim.privacy import AccountingUnit, PrivacyLedger, gdp_epsilon

DELTA = 1e-5


@pytest.mark.parametrize(("mu", "count"), [(0.5, 1), (1.0, 1), (4.0, 1), (0.1, 100), (0.05, 1000), (0.3, 50), (1.0, 30)])
def test_prv_epsilon_within_stated_tolerance(mu, count):
    ledger = PrivacyLedger()
    ledger.charge("u", mu=mu, count=count)
    closed_form = gdp_epsilon(DELTA, mu * math.sqrt(count))

    epsilon = ledger.epsilon("u", delta=DELTA)

    # Opacus returns the upper end of its interval, so the exact value lies within
    # tolerance below it; 1e-9 absorbs the rounding of the closed form.
    assert epsilon >= closed_form - 1e-9
    assert epsilon <= closed_form + ledger.tolerance(epsilon)


def test_prv_tolerance_formula():
    ledger = PrivacyLedger(eps_error=0.02, eps_error_relative=1e-3)
    assert ledger.tolerance(5.0) == pytest.approx(0.04)
    assert ledger.tolerance(100.0) == pytest.approx(0.2)
    assert PrivacyLedger(accountant="rdp").tolerance(5.0) == math.inf


def test_mixed_mus_compose():
    ledger = PrivacyLedger()
    ledger.charge("u", mu=0.2, count=25)
    ledger.charge("u", mu=0.5, count=4)
    ledger.charge("u", mu=0.2, count=75)
    composed = math.sqrt(100 * 0.2**2 + 4 * 0.5**2)

    assert ledger.counter("u") == {0.2: 100, 0.5: 4}
    assert ledger.mu("u") == pytest.approx(composed)
    assert ledger.tokens("u") == 104
    epsilon = ledger.epsilon("u", delta=DELTA)
    assert gdp_epsilon(DELTA, composed) - 1e-9 <= epsilon <= gdp_epsilon(DELTA, composed) + ledger.tolerance(epsilon)


def test_history_is_opacus_format():
    ledger = PrivacyLedger()
    ledger.charge("u", mu=0.5, count=3)
    ledger.charge("u", mu=0.25, count=2)

    accountant = ledger.accountant("u")

    assert isinstance(accountant, PRVAccountant)
    assert accountant.history == [(4.0, 1.0, 2), (2.0, 1.0, 3)]


@pytest.mark.parametrize(("mu", "count"), [(0.5, 1), (1.0, 1), (0.1, 100), (2.0, 10), (0.01, 10)])
def test_rdp_upper_bounds_closed_form(mu, count):
    ledger = PrivacyLedger(accountant="rdp")
    ledger.charge("u", mu=mu, count=count)
    closed_form = gdp_epsilon(DELTA, mu * math.sqrt(count))

    epsilon = ledger.epsilon("u", delta=DELTA)

    assert isinstance(ledger.accountant("u"), RDPAccountant)
    assert epsilon >= closed_form
    # The RDP conversion is loose by a bounded factor here, not by orders of magnitude.
    assert epsilon <= 1.25 * closed_form + 0.1


def test_gdp_accountant_rejected_with_reason():
    with pytest.raises(ValueError, match="Poisson subsampling") as error:
        PrivacyLedger(accountant="gdp")
    assert "prv" in str(error.value)


def test_unknown_accountant_rejected():
    with pytest.raises(ValueError, match="'moments'"):
        PrivacyLedger(accountant="moments")


def test_identical_counters_share_accountant():
    ledger = PrivacyLedger()
    for user in range(50):
        for _ in range(10):
            ledger.charge(user, mu=0.3, count=20)
    ledger.charge("other", mu=0.3, count=100)

    epsilons = ledger.epsilons(delta=DELTA)

    assert len(epsilons) == 51
    assert len(set(epsilons[user] for user in range(50))) == 1
    assert len(ledger._accountants) == 2


def test_cache_follows_new_charges():
    ledger = PrivacyLedger()
    ledger.charge("u", mu=1.0)
    first = ledger.epsilon("u", delta=DELTA)
    ledger.charge("u", mu=1.0, count=3)

    second = ledger.epsilon("u", delta=DELTA)

    assert second > first
    assert second == pytest.approx(gdp_epsilon(DELTA, 2.0), abs=ledger.tolerance(second))


def test_unknown_user_has_spent_nothing():
    ledger = PrivacyLedger()
    assert ledger.mu("nobody") == 0.0
    assert ledger.epsilon("nobody", delta=DELTA) == 0.0
    assert ledger.users() == []


def test_unit_user_composes_everything():
    ledger = PrivacyLedger(unit=AccountingUnit.USER)
    ledger.charge("u", mu=0.5, count=16)
    ledger.charge("u", mu=0.5, count=9)
    assert ledger.mu("u") == pytest.approx(0.5 * 5.0)


def test_unit_query_takes_max_query():
    ledger = PrivacyLedger(unit="query")
    ledger.charge("u", mu=0.5, count=16)
    ledger.charge("u", mu=0.5, count=9)
    ledger.charge("u", mu=0.5, count=16)

    assert ledger.mu("u") == pytest.approx(0.5 * 4.0)
    assert ledger.counter("u") == {2.0: 2, 1.5: 1}
    assert ledger.tokens("u") == 41
    epsilon = ledger.epsilon("u", delta=DELTA)
    assert epsilon == pytest.approx(gdp_epsilon(DELTA, 2.0), abs=ledger.tolerance(epsilon))


def test_unit_token_takes_max_token():
    ledger = PrivacyLedger(unit=AccountingUnit.TOKEN)
    ledger.charge("u", mu=0.5, count=16)
    ledger.charge("u", mu=0.7, count=2)

    assert ledger.mu("u") == pytest.approx(0.7)
    assert ledger.account("u") == ((0.7, 1),)
    assert ledger.tokens("u") == 18


def test_set_unit_only_before_charges():
    ledger = PrivacyLedger()
    ledger.set_unit("query")
    assert ledger.unit is AccountingUnit.QUERY
    ledger.charge("u", mu=1.0)
    with pytest.raises(ValueError, match="already contains charges"):
        ledger.set_unit("user")


def test_state_dict_round_trip_continues_account():
    ledger = PrivacyLedger(unit="user")
    ledger.charge("a", mu=0.5, count=4)
    ledger.charge("b", mu=0.25, count=16)
    ledger.charge(7, mu=1.0)
    state = pickle.loads(pickle.dumps(ledger.state_dict()))

    restored = PrivacyLedger.from_state_dict(state)
    restored.charge("a", mu=0.5, count=12)
    ledger.charge("a", mu=0.5, count=12)

    assert restored.users() == ["a", "b", 7]
    assert restored.counter("a") == {0.5: 16}
    assert restored.mu("a") == pytest.approx(2.0)
    assert restored.tokens("b") == 16
    assert restored.epsilon("a", delta=DELTA) == ledger.epsilon("a", delta=DELTA)
    assert restored.state_dict() == ledger.state_dict()


def test_state_dict_is_json_with_string_ids():
    ledger = PrivacyLedger()
    ledger.charge("a", mu=0.5, count=4)
    state = json.loads(json.dumps(ledger.state_dict()))

    restored = PrivacyLedger()
    restored.load_state_dict(state)

    assert restored.counter("a") == {0.5: 4}


def test_load_state_dict_rejects_other_settings():
    state = PrivacyLedger(accountant="rdp").state_dict()
    with pytest.raises(ValueError, match="accountant='rdp'"):
        PrivacyLedger(accountant="prv").load_state_dict(state)
    with pytest.raises(ValueError, match="format"):
        PrivacyLedger().load_state_dict({"format": "other"})


def test_prv_overflow_falls_back_to_closed_form(caplog):
    # Composed mu = 40 gives epsilon about 820; Opacus 1.6's PRV grid overflows above about 700.
    ledger = PrivacyLedger()
    ledger.charge("u", mu=20.0, count=4)

    with caplog.at_level(logging.WARNING, logger="delsim.privacy.ledger"):
        epsilon = ledger.epsilon("u", delta=DELTA)

    assert epsilon == gdp_epsilon(DELTA, 40.0)
    assert "closed-form" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"mu": 0.0}, "mu must be"),
        ({"mu": math.inf}, "mu must be"),
        ({"mu": 1.0, "count": 0}, "count must be"),
        ({"mu": 1.0, "count": 2.5}, "count must be"),
    ],
)
def test_charge_rejects_invalid_values(kwargs, fragment):
    ledger = PrivacyLedger()
    with pytest.raises(ValueError, match=fragment):
        ledger.charge("u", **kwargs)
    assert ledger.users() == []


def test_epsilon_rejects_invalid_delta():
    ledger = PrivacyLedger()
    ledger.charge("u", mu=1.0)
    with pytest.raises(ValueError, match="delta"):
        ledger.epsilon("u", delta=0.0)
