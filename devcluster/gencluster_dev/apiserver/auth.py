"""Bearer-token authentication: the admin token and ServiceAccount tokens (TokenRequest).

Pure core: tokens are issued and checked against a clock and a lookup passed in, so the API
server decides in one place who a request is (and, later, what it may do). A ServiceAccount
token names the account's uid; once that account is gone (or replaced by a new one with the
same name) its tokens stop working, as bound tokens do in Kubernetes.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Identity:
    """Who made a request (user.Info in Kubernetes terms)."""

    username: str
    groups: tuple[str, ...]
    uid: str = ""


@dataclass(frozen=True)
class IssuedToken:
    namespace: str
    service_account: str
    service_account_uid: str
    expires: datetime


ADMIN = "admin"
ServiceAccountUidLookup = Callable[[str, str], str | None]


class Authenticator:
    """Maps bearer tokens to identities."""

    def __init__(self, admin_token: str) -> None:
        self._admin_token = admin_token
        self._issued: dict[str, IssuedToken] = {}

    def issue(
        self,
        namespace: str,
        service_account: str,
        service_account_uid: str,
        now: datetime,
        expiration_seconds: int,
    ) -> tuple[str, datetime]:
        """A new token for a ServiceAccount and its expiry."""
        token = "sa-" + secrets.token_urlsafe(32)
        expires = now + timedelta(seconds=expiration_seconds)
        self._issued[token] = IssuedToken(namespace, service_account, service_account_uid,
                                          expires)
        return token, expires

    def authenticate(
        self, header: str | None, now: datetime, lookup_sa_uid: ServiceAccountUidLookup
    ) -> Identity | None:
        """The identity behind an `Authorization` header, or None if it proves nothing."""
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        token = token.strip()
        if secrets.compare_digest(token, self._admin_token):
            return Identity(ADMIN, ("system:masters", "system:authenticated"))
        issued = self._issued.get(token)
        if issued is None:
            return None
        if now >= issued.expires:
            del self._issued[token]
            return None
        if lookup_sa_uid(issued.namespace, issued.service_account) != issued.service_account_uid:
            return None
        return Identity(
            f"system:serviceaccount:{issued.namespace}:{issued.service_account}",
            (
                "system:serviceaccounts",
                f"system:serviceaccounts:{issued.namespace}",
                "system:authenticated",
            ),
            issued.service_account_uid,
        )

    def issued_tokens(self) -> dict[str, IssuedToken]:
        """Every live token (for persistence across restarts)."""
        return dict(self._issued)

    def restore(self, token: str, issued: IssuedToken) -> None:
        self._issued[token] = issued

    def revoke_service_account(self, namespace: str, name: str) -> None:
        """Forget every token of a deleted ServiceAccount."""
        for token, issued in list(self._issued.items()):
            if issued.namespace == namespace and issued.service_account == name:
                del self._issued[token]
