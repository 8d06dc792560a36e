"""Tests of budget enforcement: reject, defer at renewal, units, state, and a property test."""

import math
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delsim.privacy import (
    AccountingUnit,
    BudgetEnforcer,
    BudgetPolicy,
    PrivacyBudget,
    PrivacyLedger,
    gdp_epsilon,
    gdp_mu,
)

DELTA = 1e-5


def make_enforcer(epsilon=8.0, unit="user", policy="reject", renewal_period_s=None):
    ledger = PrivacyLedger(unit=unit)
    budget = PrivacyBudget(epsilon=epsilon, delta=DELTA)
    enforcer = BudgetEnforcer(ledger, budget=budget, policy=policy, renewal_period_s=renewal_period_s)
    return ledger, enforcer


def test_budget_mu_is_gdp_inverse():
    budget = PrivacyBudget(epsilon=8.0, delta=DELTA)
    assert budget.mu == pytest.approx(gdp_mu(8.0, DELTA))
    assert gdp_epsilon(DELTA, budget.mu) <= 8.0


def test_reject_when_exhausted_charges_nothing():
    ledger, enforcer = make_enforcer(epsilon=8.0)
    mu_token = enforcer.budget.mu / math.sqrt(2 * 100) * 0.999

    first = enforcer.admit(user_id="u", request_id=1, mu_token=mu_token, tokens=100, time_s=0.0)
    second = enforcer.admit(user_id="u", request_id=2, mu_token=mu_token, tokens=100, time_s=1.0)
    before = ledger.state_dict()
    third = enforcer.admit(user_id="u", request_id=3, mu_token=mu_token, tokens=100, time_s=2.0)

    assert first.status == "released"
    assert second.status == "released"
    assert third.status == "rejected"
    assert third.charged_mu == 0.0
    assert third.release_time_s is None
    assert "budget exhausted" in third.reason
    assert ledger.state_dict() == before
    assert ledger.tokens("u") == 200
    assert enforcer.counts == {"released": 2, "deferred": 0, "rejected": 1}


def test_released_decision_fields():
    ledger, enforcer = make_enforcer()
    decision = enforcer.admit(user_id="u", request_id="r1", mu_token=0.1, tokens=25, time_s=3.5)

    assert decision.released
    assert decision.request_id == "r1"
    assert decision.release_time_s == 3.5
    assert decision.reason is None
    assert decision.charged_mu == pytest.approx(0.5)
    assert ledger.counter("u") == {0.1: 25}


def test_defer_releases_at_renewal_boundary():
    ledger, enforcer = make_enforcer(epsilon=8.0, policy="defer", renewal_period_s=60.0)
    # Two requests of 100 tokens fill one period.
    mu_token = enforcer.budget.mu / math.sqrt(200) * 0.999

    decisions = [
        enforcer.admit(user_id="u", request_id=index, mu_token=mu_token, tokens=100, time_s=time_s)
        for index, time_s in enumerate([5.0, 10.0, 15.0, 20.0, 25.0, 130.0])
    ]

    assert [decision.release_time_s for decision in decisions] == [5.0, 10.0, 60.0, 60.0, 120.0, 130.0]
    assert [decision.deferred for decision in decisions] == [False, False, True, True, True, False]
    assert all(decision.released for decision in decisions)
    assert ledger.tokens("u") == 600
    assert enforcer.spent_mu("u", time_s=125.0) == pytest.approx(mu_token * math.sqrt(200))


def test_defer_rejects_request_that_never_fits():
    ledger, enforcer = make_enforcer(epsilon=2.0, policy="defer", renewal_period_s=60.0)

    decision = enforcer.admit(user_id="u", request_id=1, mu_token=1.0, tokens=50, time_s=0.0)

    assert decision.status == "rejected"
    assert "never be released" in decision.reason
    assert ledger.users() == []


def test_reject_with_renewal_names_renewal_time():
    _, enforcer = make_enforcer(epsilon=8.0, renewal_period_s=100.0)
    mu_token = enforcer.budget.mu / 10.0 * 0.999
    assert enforcer.admit(user_id="u", request_id=1, mu_token=mu_token, tokens=100, time_s=150.0).released

    decision = enforcer.admit(user_id="u", request_id=2, mu_token=mu_token, tokens=100, time_s=160.0)
    later = enforcer.admit(user_id="u", request_id=3, mu_token=mu_token, tokens=100, time_s=200.0)

    assert decision.status == "rejected"
    assert "renews at t=200 s" in decision.reason
    assert later.released


def test_no_budget_releases_everything():
    ledger = PrivacyLedger()
    enforcer = BudgetEnforcer(ledger, budget=None)
    for index in range(20):
        decision = enforcer.admit(user_id="u", request_id=index, mu_token=5.0, tokens=500, time_s=float(index))
        assert decision.released
    assert ledger.tokens("u") == 20 * 500
    assert enforcer.remaining_mu("u", time_s=0.0) == math.inf


def test_query_unit_checks_each_query():
    ledger, enforcer = make_enforcer(epsilon=8.0, unit="query")
    budget_mu = enforcer.budget.mu
    mu_token = budget_mu / 10.0 * 0.999

    many = [enforcer.admit(user_id="u", request_id=i, mu_token=mu_token, tokens=100, time_s=float(i)) for i in range(20)]
    too_big = enforcer.admit(user_id="u", request_id=99, mu_token=mu_token, tokens=101, time_s=30.0)

    assert all(decision.released for decision in many)
    assert too_big.status == "rejected"
    assert ledger.mu("u") <= budget_mu


def test_token_unit_checks_each_token():
    ledger, enforcer = make_enforcer(epsilon=8.0, unit=AccountingUnit.TOKEN)
    budget_mu = enforcer.budget.mu

    small = enforcer.admit(user_id="u", request_id=1, mu_token=budget_mu * 0.99, tokens=5000, time_s=0.0)
    large = enforcer.admit(user_id="u", request_id=2, mu_token=budget_mu * 1.01, tokens=1, time_s=1.0)

    assert small.released
    assert large.status == "rejected"
    assert ledger.mu("u") == pytest.approx(budget_mu * 0.99)


def test_enforcer_sets_unit_on_empty_ledger():
    ledger = PrivacyLedger()
    enforcer = BudgetEnforcer(ledger, budget=None, unit="query")
    assert ledger.unit is AccountingUnit.QUERY
    assert enforcer.unit is AccountingUnit.QUERY


def test_enforcer_unit_mismatch_with_charged_ledger():
    ledger = PrivacyLedger()
    ledger.charge("u", mu=1.0)
    with pytest.raises(ValueError, match="accounting unit"):
        BudgetEnforcer(ledger, budget=None, unit="token")


def test_defer_needs_renewal_period():
    with pytest.raises(ValueError, match="renewal_period_s"):
        BudgetEnforcer(PrivacyLedger(), budget=PrivacyBudget(1.0, DELTA), policy=BudgetPolicy.DEFER)


def test_out_of_order_arrival_rejected():
    _, enforcer = make_enforcer()
    enforcer.admit(user_id="u", request_id=1, mu_token=0.1, tokens=1, time_s=10.0)
    with pytest.raises(ValueError, match="order of arrival"):
        enforcer.admit(user_id="u", request_id=2, mu_token=0.1, tokens=1, time_s=5.0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"mu_token": 0.0}, "mu_token"),
        ({"tokens": 0}, "tokens"),
        ({"time_s": -1.0}, "time_s"),
        ({"time_s": math.nan}, "time_s"),
    ],
)
def test_admit_rejects_invalid_values(kwargs, fragment):
    _, enforcer = make_enforcer()
    request = {"user_id": "u", "request_id": 1, "mu_token": 0.1, "tokens": 5, "time_s": 0.0}
    request.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        enforcer.admit(**request)


@pytest.mark.parametrize(("epsilon", "delta"), [(0.0, 1e-5), (-1.0, 1e-5), (1.0, 0.0), (1.0, 1.0)])
def test_budget_rejects_invalid_values(epsilon, delta):
    with pytest.raises(ValueError, match="budget"):
        PrivacyBudget(epsilon=epsilon, delta=delta)


def test_state_dict_resumes_spending():
    ledger, enforcer = make_enforcer(epsilon=8.0, policy="defer", renewal_period_s=60.0)
    mu_token = enforcer.budget.mu / math.sqrt(200) * 0.999
    for index, time_s in enumerate([1.0, 2.0, 3.0]):
        enforcer.admit(user_id="u", request_id=index, mu_token=mu_token, tokens=100, time_s=time_s)
    state = enforcer.state_dict()

    _, resumed = make_enforcer(epsilon=8.0, policy="defer", renewal_period_s=60.0)
    resumed.load_state_dict(state)
    decision = resumed.admit(user_id="u", request_id=3, mu_token=mu_token, tokens=100, time_s=4.0)
    original = enforcer.admit(user_id="u", request_id=3, mu_token=mu_token, tokens=100, time_s=4.0)

    # Period 0 is full and period 1 contains one deferred request, so the fourth joins it.
    assert decision.release_time_s == 60.0
    assert decision == original
    assert resumed.ledger.tokens("u") == 400
    assert resumed.state_dict() == enforcer.state_dict()


def test_state_dict_rejects_other_settings():
    _, enforcer = make_enforcer(epsilon=8.0)
    _, other = make_enforcer(epsilon=4.0)
    with pytest.raises(ValueError, match="budget"):
        other.load_state_dict(enforcer.state_dict())


requests_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),  # user
        st.floats(min_value=0.0, max_value=50.0),  # inter-arrival time in seconds
        st.floats(min_value=0.005, max_value=3.0),  # mu per token
        st.integers(min_value=1, max_value=300),  # tokens
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=120, deadline=None)
@given(
    requests=requests_strategy,
    epsilon=st.floats(min_value=0.5, max_value=30.0),
    unit=st.sampled_from(list(AccountingUnit)),
    policy=st.sampled_from(list(BudgetPolicy)),
    renewal_period_s=st.one_of(st.none(), st.floats(min_value=1.0, max_value=200.0)),
)
def test_budget_never_exceeded(requests, epsilon, unit, policy, renewal_period_s):
    if policy is BudgetPolicy.DEFER and renewal_period_s is None:
        renewal_period_s = 60.0
    ledger = PrivacyLedger(unit=unit)
    budget = PrivacyBudget(epsilon=epsilon, delta=DELTA)
    enforcer = BudgetEnforcer(ledger, budget=budget, policy=policy, renewal_period_s=renewal_period_s)

    time_s = 0.0
    spent = defaultdict(float)  # (user, period) -> spending in the enforcer's own measure
    released_tokens = defaultdict(int)
    for index, (user, gap_s, mu_token, tokens) in enumerate(requests):
        time_s += gap_s
        tokens_before = ledger.tokens(user)
        decision = enforcer.admit(user_id=user, request_id=index, mu_token=mu_token, tokens=tokens, time_s=time_s)

        if not decision.released:
            assert ledger.tokens(user) == tokens_before
            assert decision.charged_mu == 0.0
            assert decision.reason
            continue
        released_tokens[user] += tokens
        assert decision.release_time_s >= time_s
        period = 0 if renewal_period_s is None else math.floor(decision.release_time_s / renewal_period_s)
        if decision.deferred:
            assert decision.release_time_s == pytest.approx(period * renewal_period_s)
        unit_mu = mu_token if unit is AccountingUnit.TOKEN else mu_token * math.sqrt(tokens)
        if unit.composes:
            spent[user, period] += unit_mu**2
        else:
            spent[user, period] = max(spent[user, period], unit_mu)

    for (user, period), value in spent.items():
        mu_spent = math.sqrt(value) if unit.composes else value
        assert mu_spent <= budget.mu * (1.0 + 1e-12)
        assert gdp_epsilon(DELTA, mu_spent) <= epsilon * (1.0 + 1e-9)
    for user, tokens in released_tokens.items():
        assert ledger.tokens(user) == tokens
    if renewal_period_s is None:
        for user in ledger.users():
            assert gdp_epsilon(DELTA, ledger.mu(user)) <= epsilon * (1.0 + 1e-9)
