"""DSSE envelopes signed with a bench's key: its Ethereum recorder key, or a standard key.

securesystemslib does the envelope itself (pre-authentication encoding, the
JSON form, threshold verification). This module adds the one kind of key it
lacks: a bench's Ethereum account (secp256k1, eth_account), so the key that
records runs on chain also signs their evidence, and nothing new has to be
provisioned on a bench.

The Ethereum scheme (keytype ``secp256k1``, scheme ``eth-personal-sign``):

- the signature is EIP-191 ``personal_sign`` (version 0x45) over the DSSE PAE
  bytes: ``Account.sign_message(encode_defunct(pae))``, 65 bytes r || s || v.
  It is chosen over a raw keccak-hash signature because it is what wallets,
  clef, KMS-backed signers and ``ecrecover``-based contracts can produce and
  check, and its prefix keeps the signature from ever being valid for a
  transaction or any other hash the key signs;
- the key id is the account's checksummed address, and the public "key" is that
  address: verification recovers the address from the signature and compares it.

A bench may instead sign with a standard key (ed25519, ECDSA P-256, RSA):
securesystemslib's ``CryptoSigner`` signs and its ``SSlibKey`` verifies; see
``signer_from_pem`` and ``key_from_pem``.

Importing this module registers the Ethereum key and signer in
securesystemslib's registries (``Key.from_dict`` and ``Signer.from_priv_key_uri``
find them), as securesystemslib documents for custom keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils import is_address, to_checksum_address
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import (
    KEY_FOR_TYPE_AND_SCHEME,
    SIGNER_FOR_URI_SCHEME,
    CryptoSigner,
    Key,
    SecretsHandler,
    Signature,
    Signer,
    SSlibKey,
)

from twinloop.errors import ConfigError

ETH_KEYTYPE = "secp256k1"
ETH_SCHEME = "eth-personal-sign"
#: Private key URIs for ``Signer.from_priv_key_uri``: ``ethkey:env:NAME`` (a hex key in an
#: environment variable, as ``TWINLOOP_RECORDER_KEY``) or ``ethkey:PATH`` (a file holding one,
#: as the embedded chain's ``dev-recorder.key``).
ETH_URI_SCHEME = "ethkey"


def recover_address(signature: Signature, data: bytes) -> str | None:
    """The checksummed address whose key made ``signature`` over ``data``, or None if it is malformed."""
    try:
        raw = bytes.fromhex(signature.signature)
        return Account.recover_message(encode_defunct(primitive=data), signature=raw)
    except (ValueError, TypeError, BadSignature):
        return None


class EthereumKey(Key):
    """An Ethereum account as a securesystemslib public key: ``keyval`` holds its address."""

    def __init__(self, keyid: str, keytype: str, scheme: str, keyval: dict[str, Any],
                 unrecognized_fields: dict[str, Any] | None = None) -> None:
        address = keyval.get("address")
        if not isinstance(address, str) or not is_address(address):
            raise ValueError(f"an {ETH_SCHEME} key needs an Ethereum 'address', not {address!r}")
        if (keytype, scheme) != (ETH_KEYTYPE, ETH_SCHEME):
            raise ValueError(f"EthereumKey is {ETH_KEYTYPE}/{ETH_SCHEME}, not {keytype}/{scheme}")
        super().__init__(keyid, keytype, scheme, {"address": to_checksum_address(address)},
                         unrecognized_fields)

    @classmethod
    def from_address(cls, address: str) -> EthereumKey:
        """The key of ``address``; its key id is the checksummed address."""
        if not is_address(address):
            raise ValueError(f"{address!r} is not an Ethereum address")
        checksummed = to_checksum_address(address)
        return cls(checksummed, ETH_KEYTYPE, ETH_SCHEME, {"address": checksummed})

    @property
    def address(self) -> str:
        """The account's checksummed address."""
        return str(self.keyval["address"])

    @classmethod
    def from_dict(cls, keyid: str, key_dict: dict[str, Any]) -> EthereumKey:
        keytype, scheme, keyval = cls._from_dict(key_dict)
        return cls(keyid, keytype, scheme, keyval, key_dict)

    def to_dict(self) -> dict[str, Any]:
        return self._to_dict()

    def verify_signature(self, signature: Signature, data: bytes) -> None:
        """Raise unless ``signature`` over ``data`` recovers to this key's address."""
        if signature.keyid != self.keyid:
            raise VerificationError(f"keyid mismatch: key {self.keyid}, signature {signature.keyid}")
        recovered = recover_address(signature, data)
        if recovered is None:
            raise UnverifiedSignatureError(f"signature for {self.address} is not a valid "
                                           "65-byte secp256k1 signature")
        if recovered != self.address:
            raise UnverifiedSignatureError(f"signature recovers to {recovered}, not {self.address}")


class EthereumSigner(Signer):
    """Signs with an eth_account key (the bench's recorder account)."""

    SCHEME = ETH_URI_SCHEME

    def __init__(self, account: LocalAccount) -> None:
        self._account = account
        self._public_key = EthereumKey.from_address(account.address)

    @property
    def public_key(self) -> EthereumKey:
        return self._public_key

    def sign(self, payload: bytes) -> Signature:
        """EIP-191 personal_sign over ``payload`` (for DSSE: the PAE bytes)."""
        signed = self._account.sign_message(encode_defunct(primitive=payload))
        return Signature(self._public_key.keyid, bytes(signed.signature).hex())

    @classmethod
    def from_priv_key_uri(cls, priv_key_uri: str, public_key: Key,
                          secrets_handler: SecretsHandler | None = None) -> EthereumSigner:
        """The signer for ``ethkey:env:NAME`` or ``ethkey:PATH``; it must match ``public_key``."""
        scheme, _, rest = priv_key_uri.partition(":")
        if scheme != cls.SCHEME or not rest:
            raise ValueError(f"EthereumSigner does not support {priv_key_uri!r}")
        if rest.startswith("env:"):
            secret = os.environ.get(rest[4:])
            if not secret:
                raise ValueError(f"{priv_key_uri}: ${rest[4:]} is not set")
        else:
            secret = Path(rest).read_text(encoding="ascii")
        signer = cls(Account.from_key(secret.strip()))
        if not isinstance(public_key, EthereumKey) or public_key.address != signer.public_key.address:
            raise ValueError(f"{priv_key_uri} holds the key of {signer.public_key.address}, "
                             f"not of {getattr(public_key, 'address', public_key.keyid)}")
        return signer


KEY_FOR_TYPE_AND_SCHEME[(ETH_KEYTYPE, ETH_SCHEME)] = EthereumKey
SIGNER_FOR_URI_SCHEME[ETH_URI_SCHEME] = EthereumSigner


def signer_from_pem(private_pem: bytes) -> CryptoSigner:
    """A standard-key signer (ed25519, ECDSA P-256/384/521, RSA-PSS) from an unencrypted PKCS#8 PEM."""
    return CryptoSigner(load_pem_private_key(private_pem, password=None))


def key_from_pem(public_pem: bytes) -> SSlibKey:
    """The public key (and its default securesystemslib key id) from a SubjectPublicKeyInfo PEM."""
    return SSlibKey.from_crypto(load_pem_public_key(public_pem))


def key_from_pem_file(path: Path, option: str = "--public-key") -> SSlibKey:
    """The public key in a PEM file; a ConfigError naming ``option`` and the file if it cannot be read as one."""
    try:
        return key_from_pem(Path(path).read_bytes())
    except OSError as err:
        raise ConfigError(f"{option} {path}: cannot read it: {err.strerror or err}") from err
    except ValueError as err:
        raise ConfigError(f"{option} {path}: not a PEM public key: {err}") from err


def expected_key(signer: str | Key) -> Key:
    """The key to verify against: an Ethereum address (the chain's recorder) or a public key."""
    if isinstance(signer, Key):
        return signer
    return EthereumKey.from_address(signer)


def describe(key: Key) -> str:
    """How messages name a key: its address, or its type and the start of its key id."""
    if isinstance(key, EthereumKey):
        return key.address
    return f"{key.keytype} key {key.keyid[:16]}"


def sign(payload: bytes, payload_type: str, signer: Signer,
         envelope: Envelope | None = None) -> Envelope:
    """``envelope`` (or a new one for ``payload``) with ``signer``'s signature added."""
    if envelope is None or envelope.payload != payload or envelope.payload_type != payload_type:
        envelope = Envelope(payload, payload_type, {})
    envelope.sign(signer)
    return envelope


def check_signature(envelope: Envelope, key: Key) -> tuple[bool, str]:
    """Whether ``key`` signed ``envelope``; if not, which attack or fault the signatures show.

    securesystemslib's threshold verification decides; the rest only explains a
    failure: a signature under the key's id that does not verify means the
    payload was changed after signing (or the signature was forged); without
    one, the envelope was signed by someone else.
    """
    who = describe(key)
    try:
        envelope.verify([key], 1)
    except VerificationError:
        pass
    else:
        return True, f"signed by {who}"
    pae = envelope.pae()
    own = envelope.signatures.get(key.keyid)
    if own is not None:
        recovered = recover_address(own, pae) if isinstance(key, EthereumKey) else None
        also = f" (it recovers to {recovered})" if recovered else ""
        return False, (f"the signature by {who} does not verify over this payload{also}: the "
                       "statement was changed after it was signed, or the signature is forged")
    if not envelope.signatures:
        return False, f"the envelope has no signature; expected one by {who}"
    signers = []
    for sig in envelope.signatures.values():
        if is_address(sig.keyid):
            recovered = recover_address(sig, pae)
            signers.append(sig.keyid if recovered == to_checksum_address(sig.keyid)
                           else f"{sig.keyid} (claimed; the signature recovers to {recovered})")
        else:
            signers.append(f"key {sig.keyid[:16]}")
    return False, f"signed by {', '.join(signers)}, not by {who}: re-signed by another key"
