"""Accounting units: which releases compose into the privacy loss reported for a user."""

from __future__ import annotations

import enum
import math
from typing import TypeVar

MemberT = TypeVar("MemberT", bound=enum.Enum)


def parse_member(enum_type: type[MemberT], value: MemberT | str, kind: str) -> MemberT:
    """Convert a member's value (case-insensitive) or the member itself to a member of ``enum_type``.

    Raises
    ------
    ValueError
        If ``value`` names no member; the message lists the valid values.
    """
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(str(value).lower())
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in enum_type)
        raise ValueError(f"{kind} {value!r} is invalid; use one of {allowed}.") from None


class AccountingUnit(str, enum.Enum):
    """Granularity at which privacy is protected and losses are reported.

    A query of T tokens at per-token GDP parameter mu is recorded the same way in
    every unit. The unit decides how releases combine into a user's loss.

    Attributes
    ----------
    TOKEN
        Each token's release is its own unit: a user's loss is the loss of one
        token, the maximum per-token mu over everything the user sent.
    QUERY
        The tokens of one prompt compose, so a query of T tokens is
        mu * sqrt(T)-GDP; a user's loss is the maximum over the user's queries.
    USER
        Everything a user sends composes: sqrt(sum over tokens of mu^2)-GDP.
    """

    TOKEN = "token"
    QUERY = "query"
    USER = "user"

    @classmethod
    def parse(cls, value: AccountingUnit | str) -> AccountingUnit:
        """Convert a unit name ("token", "query", "user") or member to a member.

        Raises
        ------
        ValueError
            If ``value`` names no unit.
        """
        return parse_member(cls, value, "accounting unit")

    @property
    def composes(self) -> bool:
        """Whether units combine by GDP composition (True) or by maximum (False)."""
        return self is AccountingUnit.USER

    def unit_mu(self, mu_token: float, tokens: int) -> float:
        """GDP parameter of the units in one query of ``tokens`` tokens at ``mu_token``.

        For USER this is the composed query, mu * sqrt(T), because the whole
        query composes into the user's loss. For QUERY it is the same value, the
        loss of the one query unit. For TOKEN it is ``mu_token``, the loss of
        each token unit.
        """
        if self is AccountingUnit.TOKEN:
            return mu_token
        return mu_token * math.sqrt(tokens)
