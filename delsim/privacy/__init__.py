"""Privacy accounting: GDP conversions, per-user ledger on Opacus accountants, exact accounting of the quantizer."""

from delsim.privacy.budget import AdmissionDecision, BudgetEnforcer, BudgetPolicy, PrivacyBudget
from delsim.privacy.exact import GdpComparison, QuantizerLoss, compare_with_gdp, exact_delta, exact_epsilon
from delsim.privacy.gdp import compose_mu, compose_mu_counts, gdp_delta, gdp_epsilon, gdp_log_delta, gdp_mu
from delsim.privacy.ledger import ACCOUNTANTS, PrivacyLedger
from delsim.privacy.units import AccountingUnit

__all__ = [
    "ACCOUNTANTS",
    "AccountingUnit",
    "AdmissionDecision",
    "BudgetEnforcer",
    "BudgetPolicy",
    "GdpComparison",
    "PrivacyBudget",
    "PrivacyLedger",
    "QuantizerLoss",
    "compare_with_gdp",
    "compose_mu",
    "compose_mu_counts",
    "exact_delta",
    "exact_epsilon",
    "gdp_delta",
    "gdp_epsilon",
    "gdp_log_delta",
    "gdp_mu",
]
