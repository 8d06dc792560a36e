"""Per-user privacy budgets enforced at admission time, in virtual time."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from delsim.privacy.gdp import gdp_epsilon, gdp_mu
from delsim.privacy.ledger import PrivacyLedger
from delsim.privacy.units import AccountingUnit, parse_member

logger = logging.getLogger(__name__)

STATE_FORMAT = "delsim.privacy.budget/1"


@dataclass(frozen=True)
class PrivacyBudget:
    """A per-user (epsilon, delta) budget and its GDP equivalent.

    Attributes
    ----------
    epsilon
        Budget epsilon, > 0.
    delta
        Budget delta, in (0, 1).
    mu
        The largest GDP parameter that is (epsilon, delta)-DP, computed once.
    """

    epsilon: float
    delta: float
    mu: float = field(init=False)

    def __post_init__(self) -> None:
        if not (self.epsilon > 0.0 and math.isfinite(self.epsilon)):
            raise ValueError(f"budget epsilon must be a finite number > 0, got {self.epsilon!r}.")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"budget delta must lie in (0, 1), got {self.delta!r}; 1e-5 is typical.")
        object.__setattr__(self, "mu", gdp_mu(self.epsilon, self.delta))


class BudgetPolicy(str, enum.Enum):
    """Action taken on a request that would exceed the user's budget.

    Attributes
    ----------
    REJECT
        The request is rejected and charges nothing.
    DEFER
        The request is released at the start of the first renewal period in
        which it fits; it is rejected only if it can never fit.
    """

    REJECT = "reject"
    DEFER = "defer"

    @classmethod
    def parse(cls, value: BudgetPolicy | str) -> BudgetPolicy:
        """Convert a policy name ("reject", "defer") or member to a member."""
        return parse_member(cls, value, "budget policy")


@dataclass(frozen=True)
class AdmissionDecision:
    """Outcome of one request at the budget enforcer.

    Attributes
    ----------
    user_id, request_id
        The identifiers passed to :meth:`BudgetEnforcer.admit`.
    status
        ``"released"`` or ``"rejected"``.
    release_time_s
        Virtual time of the release in seconds: the arrival time, or the start
        of a later renewal period for a deferred request; None when rejected.
    reason
        Why the request was rejected; None when released.
    charged_mu
        Query-level GDP parameter charged, mu_token * sqrt(tokens); 0.0 when rejected.
    deferred
        Whether the request was released at the start of a later renewal period.
    """

    user_id: Hashable
    request_id: Hashable
    status: Literal["released", "rejected"]
    release_time_s: float | None
    reason: str | None
    charged_mu: float
    deferred: bool = False

    @property
    def released(self) -> bool:
        """Whether the request was released (now or deferred)."""
        return self.status == "released"


class BudgetEnforcer:
    """Admit requests against per-user budgets and charge released ones to a ledger.

    The (epsilon, delta) budget is converted once to the largest GDP parameter
    mu_budget that is (epsilon, delta)-DP. A request fits when the user's
    composed GDP parameter in the current renewal period stays at most
    mu_budget: sqrt(spent^2 + T * mu_token^2) for the USER unit, and
    mu_token * sqrt(T) (QUERY) or mu_token (TOKEN) alone for the other units,
    whose loss is a maximum over units. This is exact for GDP composition: a
    composition is (epsilon, delta)-DP if and only if its composed mu is at most
    mu_budget. It bounds the GDP model of the mechanism, not the exact loss of
    the quantizer (see :func:`delsim.privacy.compare_with_gdp`).

    Requests must be admitted in order of arrival per user. A released request
    is charged to the ledger when it is admitted, also when it is deferred, so
    the ledger includes deferred releases before their release time.

    Parameters
    ----------
    ledger
        Ledger that receives the charges of released requests.
    budget
        Per-user budget; None releases everything (no enforcement).
    unit
        Accounting unit; None takes the ledger's unit. Another unit is set on
        the ledger, which raises ValueError if the ledger already has charges.
    policy
        :class:`BudgetPolicy` for requests that do not fit.
    renewal_period_s
        Length of a renewal period in virtual seconds; the budget resets at
        every multiple of it. None means the budget never renews. DEFER needs
        a renewal period.
    """

    def __init__(
        self,
        ledger: PrivacyLedger,
        *,
        budget: PrivacyBudget | None,
        unit: AccountingUnit | str | None = None,
        policy: BudgetPolicy | str = BudgetPolicy.REJECT,
        renewal_period_s: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.budget = budget
        self.unit = ledger.unit if unit is None else AccountingUnit.parse(unit)
        if self.unit is not ledger.unit:
            ledger.set_unit(self.unit)
        self.policy = BudgetPolicy.parse(policy)
        if renewal_period_s is not None and not (renewal_period_s > 0.0 and math.isfinite(renewal_period_s)):
            raise ValueError(f"renewal_period_s must be a finite number > 0 or None, got {renewal_period_s!r}.")
        if self.policy is BudgetPolicy.DEFER and renewal_period_s is None:
            raise ValueError(
                "policy 'defer' needs renewal_period_s: without renewal a request that does not fit "
                "never fits later; set renewal_period_s or use policy 'reject'."
            )
        self.renewal_period_s = None if renewal_period_s is None else float(renewal_period_s)

        # Per user: renewal period index -> spending in that period, as a sum of
        # squared mu (USER) or the largest unit mu (TOKEN, QUERY).
        self._spent: dict[Hashable, dict[int, float]] = {}
        self._last_time_s: dict[Hashable, float] = {}
        self.counts: dict[str, int] = {"released": 0, "deferred": 0, "rejected": 0}

    def admit(
        self,
        *,
        user_id: Hashable,
        request_id: Hashable,
        mu_token: float,
        tokens: int,
        time_s: float,
    ) -> AdmissionDecision:
        """Release, defer or reject one request of ``tokens`` tokens at ``mu_token`` per token.

        Parameters
        ----------
        user_id
            User sending the request.
        request_id
            Identifier copied into the decision.
        mu_token
            GDP parameter of each token's release (> 0).
        tokens
            Number of tokens in the request (>= 1).
        time_s
            Arrival time in virtual seconds (>= 0), not earlier than this user's
            previous request.

        Returns
        -------
        AdmissionDecision
            The decision; a released request is charged to the ledger.
        """
        if not (mu_token > 0.0 and math.isfinite(mu_token)):
            raise ValueError(f"mu_token must be a finite number > 0, got {mu_token!r} for request {request_id!r}.")
        if not isinstance(tokens, int) or tokens < 1:
            raise ValueError(f"tokens must be an integer >= 1, got {tokens!r} for request {request_id!r}.")
        if not (time_s >= 0.0 and math.isfinite(time_s)):
            raise ValueError(f"time_s must be a finite number >= 0, got {time_s!r} for request {request_id!r}.")
        last_time_s = self._last_time_s.get(user_id, 0.0)
        if time_s < last_time_s:
            raise ValueError(
                f"time_s={time_s!r} of request {request_id!r} is earlier than user {user_id!r}'s previous "
                f"request at {last_time_s!r}; admit each user's requests in order of arrival."
            )
        self._last_time_s[user_id] = float(time_s)

        if self.budget is None:
            return self._release(user_id, request_id, mu_token, tokens, float(time_s), deferred=False)

        unit_mu = self.unit.unit_mu(mu_token, tokens)
        if unit_mu > self.budget.mu:
            return self._reject(
                user_id, request_id,
                f"request needs mu={unit_mu:.6g} per {self.unit.value}, more than the whole budget "
                f"mu={self.budget.mu:.6g} (epsilon={self.budget.epsilon:g}, delta={self.budget.delta:g}); "
                "it can never be released",
            )

        budget_mu = self.budget.mu
        period = self._period(time_s)
        spent = self._prune(user_id, period)
        if self._fits(spent.get(period, 0.0), unit_mu, budget_mu):
            self._spend(spent, period, unit_mu)
            return self._release(user_id, request_id, mu_token, tokens, float(time_s), deferred=False)

        if self.policy is BudgetPolicy.REJECT:
            reason = self._exhausted_reason(self.budget, spent.get(period, 0.0), unit_mu, period)
            return self._reject(user_id, request_id, reason)

        # Only deferred requests book future periods, so the search ends after the
        # last booked period at the latest, where the request fits because
        # unit_mu <= budget_mu. DEFER always has a renewal period.
        later = period + 1
        while not self._fits(spent.get(later, 0.0), unit_mu, budget_mu):
            later += 1
        self._spend(spent, later, unit_mu)
        release_time_s = max(float(time_s), later * cast(float, self.renewal_period_s))
        logger.debug("deferred request %r of user %r to period %d (t=%.3f s)", request_id, user_id, later, release_time_s)
        return self._release(user_id, request_id, mu_token, tokens, release_time_s, deferred=True)

    def spent_mu(self, user_id: Hashable, *, time_s: float) -> float:
        """GDP parameter the user has spent in the renewal period that contains ``time_s``."""
        spent = self._spent.get(user_id, {}).get(self._period(time_s), 0.0)
        return math.sqrt(spent) if self.unit.composes else spent

    def remaining_mu(self, user_id: Hashable, *, time_s: float) -> float:
        """GDP parameter the user can still spend in the period of ``time_s``; inf without a budget.

        For the TOKEN and QUERY units every unit up to mu_budget fits, so this
        is mu_budget whatever was spent.
        """
        if self.budget is None:
            return math.inf
        if not self.unit.composes:
            return self.budget.mu
        spent = self._spent.get(user_id, {}).get(self._period(time_s), 0.0)
        return math.sqrt(max(self.budget.mu**2 - spent, 0.0))

    # Internal steps of admit.

    def _period(self, time_s: float) -> int:
        if self.renewal_period_s is None:
            return 0
        return int(math.floor(time_s / self.renewal_period_s))

    def _prune(self, user_id: Hashable, period: int) -> dict[int, float]:
        spent = self._spent.setdefault(user_id, {})
        for old in [index for index in spent if index < period]:
            del spent[old]
        return spent

    def _fits(self, spent: float, unit_mu: float, budget_mu: float) -> bool:
        if self.unit.composes:
            return spent + unit_mu * unit_mu <= budget_mu * budget_mu
        return unit_mu <= budget_mu

    def _spend(self, spent: dict[int, float], period: int, unit_mu: float) -> None:
        if self.unit.composes:
            spent[period] = spent.get(period, 0.0) + unit_mu * unit_mu
        else:
            spent[period] = max(spent.get(period, 0.0), unit_mu)

    def _exhausted_reason(self, budget: PrivacyBudget, spent: float, unit_mu: float, period: int) -> str:
        spent_mu = math.sqrt(spent) if self.unit.composes else spent
        spent_epsilon = gdp_epsilon(budget.delta, spent_mu) if spent_mu > 0.0 else 0.0
        reason = (
            f"budget exhausted: spent mu={spent_mu:.6g} (epsilon={spent_epsilon:.4g}), request mu={unit_mu:.6g}, "
            f"budget mu={budget.mu:.6g} (epsilon={budget.epsilon:g}, delta={budget.delta:g})"
        )
        if self.renewal_period_s is not None:
            reason += f"; the budget renews at t={(period + 1) * self.renewal_period_s:g} s"
        return reason

    def _release(
        self, user_id: Hashable, request_id: Hashable, mu_token: float, tokens: int, release_time_s: float,
        *, deferred: bool,
    ) -> AdmissionDecision:
        self.ledger.charge(user_id, mu=mu_token, count=tokens)
        self.counts["released"] += 1
        if deferred:
            self.counts["deferred"] += 1
        return AdmissionDecision(
            user_id=user_id, request_id=request_id, status="released", release_time_s=release_time_s,
            reason=None, charged_mu=mu_token * math.sqrt(tokens), deferred=deferred,
        )

    def _reject(self, user_id: Hashable, request_id: Hashable, reason: str) -> AdmissionDecision:
        self.counts["rejected"] += 1
        logger.debug("rejected request %r of user %r: %s", request_id, user_id, reason)
        return AdmissionDecision(
            user_id=user_id, request_id=request_id, status="rejected", release_time_s=None,
            reason=reason, charged_mu=0.0,
        )

    # Saving and restoring.

    def state_dict(self) -> dict[str, Any]:
        """Return settings, per-period spending, last arrival times, counts and the ledger's state."""
        return {
            "format": STATE_FORMAT,
            "budget": None if self.budget is None else {"epsilon": self.budget.epsilon, "delta": self.budget.delta},
            "unit": self.unit.value,
            "policy": self.policy.value,
            "renewal_period_s": self.renewal_period_s,
            "spent": [[user_id, [[period, value] for period, value in spent.items()]] for user_id, spent in self._spent.items()],
            "last_time_s": [[user_id, time_s] for user_id, time_s in self._last_time_s.items()],
            "counts": dict(self.counts),
            "ledger": self.ledger.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore spending, arrival times, counts and the ledger from :meth:`state_dict`.

        Raises
        ------
        ValueError
            If ``state`` has another format or other settings than this enforcer.
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"budget state format {state.get('format')!r} is invalid; expected {STATE_FORMAT!r}.")
        current = self.state_dict()
        for name in ("budget", "unit", "policy", "renewal_period_s"):
            if state.get(name) != current[name]:
                raise ValueError(
                    f"budget state has {name}={state.get(name)!r} but this enforcer uses {current[name]!r}; "
                    "build the enforcer with the saved settings."
                )

        self.ledger.load_state_dict(state["ledger"])
        self._spent = {user_id: {int(period): float(value) for period, value in spent} for user_id, spent in state["spent"]}
        self._last_time_s = {user_id: float(time_s) for user_id, time_s in state["last_time_s"]}
        self.counts = {name: int(value) for name, value in state["counts"].items()}
        logger.info("loaded budget state for %d users", len(self._spent))
