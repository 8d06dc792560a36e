"""Per-user privacy ledger on Opacus accountants, grouped by GDP parameter."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
from opacus.accountants import IAccountant, PRVAccountant, RDPAccountant

from delsim.privacy.gdp import gdp_epsilon
from delsim.privacy.units import AccountingUnit

logger = logging.getLogger(__name__)

STATE_FORMAT = "delsim.privacy.ledger/1"

ACCOUNTANTS: dict[str, type[IAccountant]] = {"prv": PRVAccountant, "rdp": RDPAccountant}
"""Opacus accountants the ledger can use, by name."""

# Opacus's "gdp" accountant applies the central limit theorem for Poisson-subsampled
# DP-SGD (Bu, Dong, Long and Su 2020) and reports sqrt(exp(1/sigma^2) - 1) * sqrt(steps)
# * sample_rate as mu. Without subsampling the composition of Gaussian releases is exactly
# mu * sqrt(steps)-GDP, so that formula is wrong: in Opacus 1.6 one release at mu=1 gives
# epsilon 6.01 instead of 4.38 at delta 1e-5, and at mu=4 its root search fails.
_GDP_ACCOUNTANT_MESSAGE = (
    "accountant 'gdp' is not supported: the Opacus GaussianAccountant assumes Poisson "
    "subsampling and a central limit theorem over many steps. For a plain composition of "
    "Gaussian releases (sample_rate=1.0) its mu is sqrt(exp(mu^2) - 1) * sqrt(steps) "
    "instead of mu * sqrt(steps), so its epsilon is wrong (6.01 instead of 4.38 for one "
    "release at mu=1, delta=1e-5). Use accountant='prv' (default, tight numerical "
    "composition) or 'rdp' (an upper bound); delsim.privacy.gdp_epsilon gives the exact "
    "closed form."
)

# Orders for the RDP accountant. Without subsampling, the best order is about
# 1 + sqrt(2 ln(1/delta)) / mu, which is near 1 for large mu and in the thousands for
# mu near 1e-3; Opacus's default orders (1.1 to 63) cover neither end.
RDP_ORDERS: tuple[float, ...] = tuple(float(order) for order in 1.0 + np.logspace(-4.0, 5.0, 400))

Account = tuple[tuple[float, int], ...]
"""A user's loss as (mu, count) pairs sorted by mu: ``count`` composed mu-GDP releases."""


class PrivacyLedger:
    """Per-user privacy accounts of mu-GDP releases, evaluated with an Opacus accountant.

    Each charge is one query: ``count`` releases (tokens) at GDP parameter ``mu``.
    A mu-GDP release is the Gaussian mechanism with sensitivity 1 and noise
    standard deviation 1/mu, so it enters Opacus as
    ``step(noise_multiplier=1/mu, sample_rate=1.0)``. The accounting unit decides
    which releases compose (see :class:`AccountingUnit`).

    Releases are grouped: a user holds a counter {mu: count}, and the user's
    Opacus history is ``[(1/mu, 1.0, count), ...]`` in increasing mu. Users with
    identical counters share one accountant and one cached epsilon per delta, so
    100,000 users with thousands of releases each cost one accountant evaluation
    per distinct counter.

    Parameters
    ----------
    accountant
        ``"prv"`` (default) selects the PRV accountant of Gopi, Lee and
        Wutschitz (2021), which brackets the true epsilon. ``"rdp"`` selects
        Renyi DP, an upper bound that lies 2 to 14 percent above the closed form
        for one release at mu from 0.01 to 30 and delta 1e-5 or 1e-10. ``"gdp"``
        raises ValueError because the Opacus GaussianAccountant assumes
        Poisson subsampling.
    unit
        Accounting unit, a member of :class:`AccountingUnit` or its name.
    eps_error
        Absolute epsilon accuracy requested from the PRV accountant.
    eps_error_relative
        Relative accuracy: the PRV accountant runs at
        ``max(eps_error, eps_error_relative * epsilon)``, where epsilon is the
        closed-form value. The Opacus 1.6 PRV grid has about
        ``(epsilon + 3) * sqrt(2 * steps * ln(12000 / delta)) / eps_error``
        points, so a fixed absolute error makes large compositions slow: 18 to
        34 s for 50,000 steps at epsilon 109 with eps_error 0.01, against 2 s
        with eps_error 0.1, on a shared 2-core CPU (docs/benchmarks.md).

    Notes
    -----
    Opacus's PRV accountant handles sample_rate=1.0: its density evaluates
    log(1 - sample_rate) = -inf, which only raises numpy warnings, and those are
    silenced here. With the PRV accountant, the returned epsilon is Opacus's upper estimate:
    the true epsilon lies in ``[result - tolerance(result), result]``, see
    :meth:`tolerance`. Opacus 1.6 computes ``exp(epsilon)`` in float64 on the PRV
    grid, so it returns inf or raises for epsilon above about 700, and it raises
    for a delta too small for its grid. In those cases the ledger returns the
    closed form :func:`gdp_epsilon` of the composed mu, which is exact for a
    composition of Gaussian releases, and logs a warning.
    """

    def __init__(
        self,
        *,
        accountant: str = "prv",
        unit: AccountingUnit | str = AccountingUnit.USER,
        eps_error: float = 0.01,
        eps_error_relative: float = 1e-3,
    ) -> None:
        self.accountant_name = _check_accountant(accountant)
        self.unit = AccountingUnit.parse(unit)
        if not eps_error > 0.0:
            raise ValueError(f"eps_error must be > 0, got {eps_error!r}; 0.01 is the Opacus default.")
        if not eps_error_relative >= 0.0:
            raise ValueError(f"eps_error_relative must be >= 0, got {eps_error_relative!r}.")
        self.eps_error = float(eps_error)
        self.eps_error_relative = float(eps_error_relative)

        self._counters: dict[Hashable, dict[float, int]] = {}
        self._tokens: dict[Hashable, int] = {}
        self._accountants: dict[Account, IAccountant] = {}
        self._epsilon_cache: dict[tuple[Account, float], float] = {}

        self.fallbacks = 0
        """Epsilon evaluations where the accountant failed and the GDP closed form was used."""

    def set_unit(self, unit: AccountingUnit | str) -> None:
        """Change the accounting unit of a ledger that has no charges yet.

        Raises
        ------
        ValueError
            If the ledger already contains charges, which were grouped under the old unit.
        """
        unit = AccountingUnit.parse(unit)
        if unit is self.unit:
            return
        if self._counters:
            raise ValueError(
                f"cannot change the accounting unit from {self.unit.value!r} to {unit.value!r}: the ledger "
                f"already contains charges of {len(self._counters)} users; build a new PrivacyLedger(unit={unit.value!r})."
            )
        logger.info("privacy ledger accounting unit set to %r", unit.value)
        self.unit = unit

    # Recording releases.

    def charge(self, user_id: Hashable, *, mu: float, count: int = 1) -> None:
        """Record one query of ``count`` releases (tokens) at per-release GDP parameter ``mu``.

        Parameters
        ----------
        user_id
            Any hashable user identifier.
        mu
            GDP parameter of each release (> 0, finite).
        count
            Number of releases in the query (>= 1).
        """
        # This is the per-request hot path (about 1e8 calls in the ledger benchmark),
        # so the checks are ordered to cost little for a float mu and an int count.
        if not 0.0 < mu < math.inf:
            raise ValueError(f"mu must be a finite number > 0, got {mu!r} for user {user_id!r}.")
        if (count.__class__ is not int and not isinstance(count, (int, np.integer))) or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r} for user {user_id!r}.")
        mu = float(mu)
        count = int(count)

        counter = self._counters.get(user_id)
        if counter is None:
            counter = self._counters[user_id] = {}
            self._tokens[user_id] = count
        else:
            self._tokens[user_id] += count

        if self.unit is AccountingUnit.QUERY:
            query_mu = mu * math.sqrt(count)
            counter[query_mu] = counter.get(query_mu, 0) + 1
        else:
            counter[mu] = counter.get(mu, 0) + count

    # Reading accounts.

    def users(self) -> list[Hashable]:
        """User ids with at least one charge, in the order of their first charge."""
        return list(self._counters)

    def tokens(self, user_id: Hashable) -> int:
        """Number of releases (tokens) charged to ``user_id``; 0 for an unknown user."""
        return self._tokens.get(user_id, 0)

    def counter(self, user_id: Hashable) -> dict[float, int]:
        """Copy of the user's counter: per-token mu to tokens (TOKEN, USER) or query mu to queries (QUERY)."""
        return dict(self._counters.get(user_id, {}))

    def account(self, user_id: Hashable) -> Account:
        """Return the (mu, count) pairs whose composition is the user's loss under the ledger's unit.

        USER composes the whole counter. TOKEN and QUERY keep only the largest
        unit, ``((max mu, 1),)``. A user with no charges has the empty account.
        """
        counter = self._counters.get(user_id)
        if not counter:
            return ()
        if self.unit is AccountingUnit.USER:
            return tuple(sorted(counter.items()))
        return ((max(counter), 1),)

    def mu(self, user_id: Hashable) -> float:
        """GDP parameter of the user's loss (exact for Gaussian releases); 0.0 for an unknown user."""
        return math.sqrt(sum(count * mu * mu for mu, count in self.account(user_id)))

    def accountant(self, user_id: Hashable) -> IAccountant:
        """Build a new Opacus accountant whose history is the user's account."""
        accountant = ACCOUNTANTS[self.accountant_name]()
        accountant.history = _history(self.account(user_id))
        return accountant

    def epsilon(self, user_id: Hashable, *, delta: float) -> float:
        """Compute the user's epsilon at ``delta`` with the ledger's Opacus accountant.

        Parameters
        ----------
        user_id
            User identifier; an unknown user has epsilon 0.0.
        delta
            Target delta in (0, 1).

        Returns
        -------
        float
            epsilon >= 0, cached per (account, delta).
        """
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {delta!r}.")
        return self._account_epsilon(self.account(user_id), float(delta))

    def epsilons(self, *, delta: float, user_ids: Iterable[Hashable] | None = None) -> dict[Hashable, float]:
        """Compute epsilon at ``delta`` for many users (all users by default), once per distinct account."""
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {delta!r}.")
        ids = self._counters if user_ids is None else user_ids
        return {user_id: self._account_epsilon(self.account(user_id), float(delta)) for user_id in ids}

    def tolerance(self, epsilon: float) -> float:
        """Width of the interval the PRV accountant guarantees below a returned ``epsilon``.

        Opacus returns the upper end of an interval of width about
        ``2 * eps_error`` around its estimate, so the true epsilon lies in
        ``[epsilon - tolerance, epsilon]``. For the RDP accountant no such width
        is known and this returns inf.
        """
        if self.accountant_name != "prv":
            return math.inf
        return 2.0 * max(self.eps_error, self.eps_error_relative * epsilon)

    def _account_epsilon(self, account: Account, delta: float) -> float:
        if not account:
            return 0.0
        key = (account, delta)
        cached = self._epsilon_cache.get(key)
        if cached is not None:
            return cached

        accountant = self._accountants.get(account)
        if accountant is None:
            accountant = self._accountants[account] = ACCOUNTANTS[self.accountant_name]()
            accountant.history = _history(account)
        epsilon = self._evaluate(accountant, account, delta)
        self._epsilon_cache[key] = epsilon
        return epsilon

    def _evaluate(self, accountant: IAccountant, account: Account, delta: float) -> float:
        composed_mu = math.sqrt(sum(count * mu * mu for mu, count in account))
        closed_form = gdp_epsilon(delta, composed_mu)

        # Opacus's PRV densities take log(1 - sample_rate) = log(0) at sample_rate=1.0
        # and its RDP search warns at the ends of the order grid; both are harmless here.
        with warnings.catch_warnings(), np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            try:
                if isinstance(accountant, PRVAccountant):
                    eps_error = max(self.eps_error, self.eps_error_relative * closed_form)
                    epsilon = accountant.get_epsilon(delta, eps_error=eps_error)
                else:
                    epsilon = accountant.get_epsilon(delta, alphas=list(RDP_ORDERS))
            except (RuntimeError, ValueError) as error:
                self._log_fallback(f"failed ({error})", composed_mu, delta, closed_form)
                return closed_form

        if not math.isfinite(epsilon):
            self._log_fallback(f"returned {epsilon}", composed_mu, delta, closed_form)
            return closed_form
        return float(epsilon)

    def _log_fallback(self, what: str, composed_mu: float, delta: float, closed_form: float) -> None:
        # Large runs hit this once per distinct account, so only the first one is a warning.
        self.fallbacks += 1
        level = logging.WARNING if self.fallbacks == 1 else logging.DEBUG
        logger.log(
            level,
            "%s accountant %s for composed mu=%.6g at delta=%.3g; using the closed-form GDP epsilon %.6g, "
            "exact for Gaussian releases%s",
            self.accountant_name, what, composed_mu, delta, closed_form,
            " (later fallbacks are logged at DEBUG and counted in PrivacyLedger.fallbacks)" if self.fallbacks == 1 else "",
        )

    # Saving and restoring.

    def state_dict(self) -> dict[str, Any]:
        """Return the ledger's settings and every user's counter as plain Python objects.

        The result pickles (``torch.save``) and, with string user ids, converts
        to JSON. Caches are not saved; they are rebuilt on demand.
        """
        return {
            "format": STATE_FORMAT,
            "accountant": self.accountant_name,
            "unit": self.unit.value,
            "eps_error": self.eps_error,
            "eps_error_relative": self.eps_error_relative,
            "accounts": [
                [user_id, [[mu, count] for mu, count in counter.items()], self._tokens[user_id]]
                for user_id, counter in self._counters.items()
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace every account with those in ``state`` (from :meth:`state_dict`).

        Raises
        ------
        ValueError
            If ``state`` has another format, accountant or unit than this ledger.
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"ledger state format {state.get('format')!r} is invalid; expected {STATE_FORMAT!r}.")
        for field, current in (("accountant", self.accountant_name), ("unit", self.unit.value)):
            if state.get(field) != current:
                raise ValueError(
                    f"ledger state has {field}={state.get(field)!r} but this ledger uses {current!r}; "
                    f"build the ledger with {field}={state.get(field)!r} or use PrivacyLedger.from_state_dict."
                )

        counters: dict[Hashable, dict[float, int]] = {}
        tokens: dict[Hashable, int] = {}
        for user_id, pairs, user_tokens in state["accounts"]:
            counters[user_id] = {float(mu): int(count) for mu, count in pairs}
            tokens[user_id] = int(user_tokens)
        self._counters = counters
        self._tokens = tokens
        self.eps_error = float(state["eps_error"])
        self.eps_error_relative = float(state["eps_error_relative"])
        self._accountants.clear()
        self._epsilon_cache.clear()
        logger.info("loaded privacy ledger state with %d users", len(counters))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> PrivacyLedger:
        """Build a ledger with the settings and accounts stored in ``state``."""
        ledger = cls(
            accountant=state.get("accountant", "prv"),
            unit=state.get("unit", AccountingUnit.USER),
            eps_error=state.get("eps_error", 0.01),
            eps_error_relative=state.get("eps_error_relative", 1e-3),
        )
        ledger.load_state_dict(state)
        return ledger


def _check_accountant(name: str) -> str:
    name = str(name).lower()
    if name == "gdp":
        raise ValueError(_GDP_ACCOUNTANT_MESSAGE)
    if name not in ACCOUNTANTS:
        raise ValueError(f"accountant {name!r} is invalid; use one of {sorted(ACCOUNTANTS)}.")
    return name


def _history(account: Account) -> list[tuple[float, float, int]]:
    return [(1.0 / mu, 1.0, count) for mu, count in account]
