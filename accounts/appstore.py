"""App Store sign-in: is this a live purchase of our app, signed by Apple, and whose is it?

The body a client posts is a StoreKit 2 signed transaction (a JWS) or, from older apps, a base64 app receipt.
A JWS is verified with Apple's App Store Server Library (`SignedDataVerifier`) against Apple's root
certificates, for `APP_BUNDLE_ID` (and `APP_APPLE_ID` in production), in production then sandbox, as Pico AI
Proxy does. A receipt is not trusted at all: only its transaction id is read from it, and the transaction is
asked of the App Store Server API (with the App Store Connect key `IAP_*`), whose signed answer is then
verified the same way. Expired and revoked purchases are refused.

Apple's `Xcode` and `LocalTesting` environments carry no Apple signature: the library does not check one,
so anyone could forge them. They are accepted only with `APP_STORE_ALLOW_XCODE=true`.

Everything here is synchronous (the library is): the gateway runs it in a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests
from appstoreserverlibrary.api_client import APIException, AppStoreServerAPIClient
from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.models.JWSTransactionDecodedPayload import JWSTransactionDecodedPayload
from appstoreserverlibrary.receipt_utility import ReceiptUtility
from appstoreserverlibrary.signed_data_verifier import SignedDataVerifier, VerificationException, VerificationStatus

from accounts.signin_users import SignInRefused

log = logging.getLogger("poolgate.signin")


@dataclass(frozen=True, slots=True)
class AppStoreConfig:
    bundle_id: str
    app_apple_id: int  # 0: unknown, production purchases cannot be verified
    roots: tuple[bytes, ...]
    online_checks: bool = True
    allow_xcode: bool = False
    api_url: str = ""  # the App Store Server API's base URL; "": Apple's, per environment
    iap_private_key: str = ""
    iap_key_id: str = ""
    iap_issuer_id: str = ""


@dataclass(frozen=True, slots=True)
class Purchase:
    subject: str  # who it is: the appAccountToken the app set, else the original transaction id
    environment: str
    product_id: str
    expires_ms: int  # 0: does not expire (not a subscription)


class AppStoreSignIn:
    def __init__(self, config: AppStoreConfig) -> None:
        self._config = config
        environments = [Environment.SANDBOX]
        if config.app_apple_id:
            environments.insert(0, Environment.PRODUCTION)
        if config.allow_xcode:
            environments += [Environment.XCODE, Environment.LOCAL_TESTING]
        self._verifiers = [
            SignedDataVerifier(list(config.roots), config.online_checks, env, config.bundle_id,
                               config.app_apple_id or None)
            for env in environments
        ]
        self._receipts = ReceiptUtility()

    def verify(self, body: str, now_ms: int) -> Purchase:
        """The live purchase `body` proves (a signed transaction or an app receipt), or SignInRefused."""
        body = body.strip()
        if body.startswith("eyJ") and body.count(".") == 2:
            transaction = self._verified(body)
        else:
            transaction = self._verified(self._look_up_receipt(body))
        if transaction.revocationDate is not None:
            raise SignInRefused(401, "This purchase was refunded or revoked.")
        expires = transaction.expiresDate or 0
        if expires and expires <= now_ms:
            raise SignInRefused(401, "This subscription has expired.")
        subject = transaction.appAccountToken or transaction.originalTransactionId
        if not subject:
            raise SignInRefused(401, "This transaction names no purchase.")
        return Purchase(str(subject), str(transaction.rawEnvironment or ""), str(transaction.productId or ""),
                        expires)

    def _verified(self, jws: str) -> JWSTransactionDecodedPayload:
        """The transaction, verified in the first environment that accepts it (production, then sandbox)."""
        worst = VerificationStatus.VERIFICATION_FAILURE
        for verifier in self._verifiers:
            try:
                return verifier.verify_and_decode_signed_transaction(jws)
            except VerificationException as problem:
                # Bundle and environment are checked after the signature: they say more than "not signed".
                if problem.status == VerificationStatus.INVALID_APP_IDENTIFIER or (
                        problem.status == VerificationStatus.INVALID_ENVIRONMENT
                        and worst != VerificationStatus.INVALID_APP_IDENTIFIER):
                    worst = problem.status
                elif problem.status == VerificationStatus.RETRYABLE_VERIFICATION_FAILURE:
                    raise SignInRefused(503, "Apple could not be asked about this purchase; try again.") from None
            except Exception as problem:  # a payload the library cannot even read
                log.info("App Store sign-in: unreadable transaction (%s)", type(problem).__name__)
        if worst == VerificationStatus.INVALID_APP_IDENTIFIER:
            raise SignInRefused(401, "This purchase is for another app.")
        if worst == VerificationStatus.INVALID_ENVIRONMENT:
            raise SignInRefused(401, "This purchase is from an App Store environment this proxy does not accept.")
        raise SignInRefused(401, "This purchase is not signed by Apple (bad signature or certificate chain).")

    def _look_up_receipt(self, receipt: str) -> str:
        """A legacy app receipt's transaction, as the App Store Server API signs it (not yet verified)."""
        try:
            transaction_id = self._receipts.extract_transaction_id_from_app_receipt(receipt)
        except ValueError:
            raise SignInRefused(400, "The body is neither a signed App Store transaction nor an app receipt.") \
                from None
        if not transaction_id:
            raise SignInRefused(401, "This app receipt holds no in-app purchase.")
        c = self._config
        if not (c.iap_private_key and c.iap_key_id and c.iap_issuer_id):
            raise SignInRefused(401, "This proxy cannot look up app receipts: send the signed transaction "
                                     "(StoreKit 2) instead.")
        environments = [Environment.PRODUCTION, Environment.SANDBOX] if c.app_apple_id else [Environment.SANDBOX]
        for env in environments:
            client = _ApiClient(c.api_url, c.iap_private_key.replace("\\n", "\n").encode(), c.iap_key_id,
                                c.iap_issuer_id, c.bundle_id, env)
            try:
                signed = client.get_transaction_info(transaction_id).signedTransactionInfo
            except APIException as problem:
                if problem.http_status_code == 404:
                    continue  # not in this environment: a sandbox purchase is tried there next, as Pico does
                log.warning("App Store Server API answered %s to a receipt look-up", problem.http_status_code)
                raise SignInRefused(502, "The App Store could not look up this purchase; try again.") from None
            except requests.RequestException as problem:
                log.warning("App Store Server API unreachable: %s", type(problem).__name__)
                raise SignInRefused(502, "The App Store could not be reached; try again.") from None
            if signed:
                return signed
        raise SignInRefused(401, "The App Store knows no such purchase.")


class _ApiClient(AppStoreServerAPIClient):
    """The library's client, pointed at `APP_STORE_API_URL` when set (a test's fake API, a mirror)."""

    def __init__(self, base_url: str, signing_key: bytes, key_id: str, issuer_id: str, bundle_id: str,
                 environment: Environment) -> None:
        super().__init__(signing_key, key_id, issuer_id, bundle_id, environment)
        if base_url:
            self._base_url = base_url.rstrip("/")
