"""Admission of requests against per-user budgets and the per-user privacy report of a run."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
from tqdm.auto import tqdm

from delsim.privacy import (
    AccountingUnit,
    BudgetEnforcer,
    BudgetPolicy,
    PrivacyBudget,
    PrivacyLedger,
    exact_epsilon,
    gdp_epsilon,
)
from delsim.runtime.spec import MechanismSpec
from delsim.scenario.schema import PrivacySection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admission:
    """The budget decision for one request."""

    request_id: int
    status: str
    release_s: float
    reason: str | None
    charged_mu: float


def make_enforcer(section: PrivacySection) -> tuple[PrivacyLedger, BudgetEnforcer]:
    """Create the ledger and the budget enforcer that a scenario's privacy section configures."""
    ledger = PrivacyLedger(accountant=section.accountant, unit=section.unit)
    budget = None if section.budget is None else PrivacyBudget(epsilon=section.budget.epsilon, delta=section.budget.delta)
    enforcer = BudgetEnforcer(
        ledger,
        budget=budget,
        unit=AccountingUnit.parse(section.unit),
        policy=BudgetPolicy.parse(section.on_exhausted),
        renewal_period_s=section.renewal_period_s,
    )
    return ledger, enforcer


def admit_requests(enforcer: BudgetEnforcer, requests: list[dict], mu_token: float) -> dict[int, Admission]:
    """Admit requests in arrival order; each needs request_id, user_id, tokens and arrival_s."""
    admissions = {}
    for request in tqdm(requests, desc="admission", unit="req", leave=False):
        decision = enforcer.admit(
            user_id=request["user_id"],
            request_id=request["request_id"],
            mu_token=mu_token,
            tokens=request["tokens"],
            time_s=request["arrival_s"],
        )
        admissions[request["request_id"]] = Admission(
            request["request_id"],
            decision.status,
            decision.release_time_s if decision.release_time_s is not None else float("nan"),
            decision.reason,
            decision.charged_mu,
        )
        if decision.status != "released":
            logger.info("request %d of %s %s: %s", request["request_id"], request["user_id"], decision.status, decision.reason)
    return admissions


def user_report(
    ledger: PrivacyLedger,
    requests: pd.DataFrame,
    mechanism: MechanismSpec,
    section: PrivacySection,
) -> pd.DataFrame:
    """Build one row per user: requests, tokens released, GDP mu and epsilon three ways.

    ``epsilon_gdp`` is the closed-form conversion of the composed mu, ``epsilon_ledger`` comes
    from the Opacus accountant, and ``epsilon_exact`` from the privacy-loss distribution of the
    quantizer actually run (tokens charged under the accounting unit). ``gdp_understates`` is
    true where the exact figure exceeds the GDP one.
    """
    rows = []
    delta = section.delta
    released = requests[requests["admission"] == "released"]
    for user_id, group in requests.groupby("user_id", sort=True):
        mine = released[released["user_id"] == user_id]
        mu = ledger.mu(user_id) if len(mine) else 0.0
        epsilon_ledger = ledger.epsilon(user_id, delta=delta) if len(mine) else 0.0
        epsilon_gdp = gdp_epsilon(delta, mu) if mu > 0 else 0.0
        releases = _exact_releases(section.unit, mine["prompt_tokens"])
        epsilon_exact = float("nan")
        if section.exact and releases > 0:
            epsilon_exact = exact_epsilon(
                delta, bits=mechanism.bits, mu=mechanism.mu, clip=mechanism.clip, dim=mechanism.dim,
                sparsity=mechanism.sparsity, releases=releases,
            )
        rows.append(
            {
                "user_id": user_id,
                "client_id": int(group["client_id"].iloc[0]),
                "device_class": group["device_class"].iloc[0],
                "requests": len(group),
                "released": len(mine),
                "rejected": int((group["admission"] == "rejected").sum()),
                "deferred": int((group["release_s"] > group["arrival_s"]).sum()),
                "tokens_released": int(mine["prompt_tokens"].sum()),
                "unit": section.unit,
                "mu_gdp": mu,
                "delta": delta,
                "epsilon_gdp": epsilon_gdp,
                "epsilon_ledger": epsilon_ledger,
                "epsilon_exact": epsilon_exact,
                "gdp_understates": bool(epsilon_exact > epsilon_gdp) if epsilon_exact == epsilon_exact else False,
                "accountant": section.accountant,
            }
        )
    return pd.DataFrame(rows)


def _exact_releases(unit: str, tokens: pd.Series) -> int:
    """Return the number of token releases that compose under the accounting unit."""
    if tokens.empty:
        return 0
    if unit == "token":
        return 1
    if unit == "query":
        return int(tokens.max())
    return int(tokens.sum())
