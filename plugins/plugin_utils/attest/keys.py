# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signing and verifying keys: ECDSA P-256, as PEM files or PEM text (a value kept in Ansible Vault).

A private key is read from PKCS#8 or SEC 1 PEM (encrypted with a password or not), or from cosign's
encrypted format, so a team's existing cosign key signs here too: PEM type "ENCRYPTED COSIGN PRIVATE
KEY" (or "ENCRYPTED SIGSTORE PRIVATE KEY"), whose body is JSON holding an scrypt KDF's parameters and
salt, a NaCl secretbox nonce, and the secretbox of the PKCS#8 DER key. Public keys are PEM "PUBLIC KEY".

A key is named by its key ID: sha256 of its public key's DER (SubjectPublicKeyInfo), which is what
signatures carry as keyid and what history shows as the signer.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, sha256_hex

try:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
except ImportError:  # reported when a key is opened, so ansible-doc and modules that sign nothing work without it
    ec = None  # type: ignore[assignment]

COSIGN_PEM_TYPES = ("ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY")
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.S)
SCRYPT = {"N": 32768, "r": 8, "p": 1}  # what cosign writes and what every reader of its keys accepts
MAX_SCRYPT_N = 1 << 20  # a larger N in a key file would take gigabytes of memory to open
SALT_BYTES = 32
KEY_ID_SHOWN = 12


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + sha256_hex(der)


def short_key_id(identifier: str | None) -> str:
    """sha256:abcdef... -> abcdef012345, the form history and messages show."""
    return (identifier or "").split(":", 1)[-1][:KEY_ID_SHOWN] or "-"


@dataclass(frozen=True)
class SigningKey:
    private: ec.EllipticCurvePrivateKey
    keyid: str

    def sign(self, data: bytes) -> bytes:
        """The DER ECDSA-SHA256 signature of data."""
        return self.private.sign(data, ec.ECDSA(hashes.SHA256()))

    @property
    def public(self) -> VerifyKey:
        return VerifyKey(self.private.public_key(), self.keyid, "the signing key")


@dataclass(frozen=True)
class VerifyKey:
    public: ec.EllipticCurvePublicKey
    keyid: str
    source: str  # where it came from, for messages: a file name or "key 2 of trust.keys"

    def verifies(self, signature: bytes, data: bytes) -> bool:
        try:
            self.public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def pem(self) -> str:
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def require_crypto() -> None:
    """Signing and verifying need the Python packages of requirements.txt on the controller."""
    if ec is None or importlib.util.find_spec("nacl") is None:
        raise InfraError("Signing and verifying need the Python packages cryptography and PyNaCl on the controller; "
                         "install the collection's requirements (pip install -r requirements.txt).")


def key_text(value: str, option: str, basedir: str) -> tuple[str, str]:
    """(PEM text, where it came from) of an option that holds either PEM text or a path to a PEM file."""
    require_crypto()
    if "-----BEGIN " in value:
        return value, f"the PEM text in {option}"
    path = os.path.normpath(os.path.join(basedir, os.path.expanduser(value)))
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read(), path
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not a PEM text file"
        raise InfraError(f"Cannot read the key {option} names ({path}): {reason}; give a PEM file or the PEM "
                         "text itself (for example from Ansible Vault).") from None


def pem_blocks(text: str) -> list[tuple[str, bytes]]:
    blocks = []
    for match in PEM_BLOCK.finditer(text):
        try:
            blocks.append((match.group(1), base64.b64decode("".join(match.group(2).split()), validate=True)))
        except ValueError:
            continue
    return blocks


def _p256_private(key: Any, where: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InfraError(f"The key in {where} is not an ECDSA P-256 key; sign with an ECDSA P-256 key "
                         "(openssl ecparam -name prime256v1 -genkey, or cosign generate-key-pair).")
    return key


def load_signing_key(value: str, password: str | None, basedir: str, option: str = "signing_key") -> SigningKey:
    """The private key an option gives (PEM text or a file), opened with password when it is encrypted."""
    text, where = key_text(value, option, basedir)
    blocks = pem_blocks(text)
    cosign = next((body for kind, body in blocks if kind in COSIGN_PEM_TYPES), None)
    if cosign is not None:
        der = open_cosign_key(cosign, password or "", where)
        key = serialization.load_der_private_key(der, None)
    else:
        try:
            key = serialization.load_pem_private_key(text.encode("ascii"), password.encode() if password else None)
        except TypeError:
            raise InfraError(f"The key in {where} is encrypted; give its password in "
                             f"{option}_password.") from None
        except (ValueError, UnsupportedAlgorithm):
            raise InfraError(f"The key in {where} cannot be opened: it is not a PEM private key, or "
                             f"{option}_password is wrong.") from None
    private = _p256_private(key, where)
    return SigningKey(private, key_id(private.public_key()))


def load_verify_key(value: str, basedir: str, source: str) -> VerifyKey:
    """A public key (PEM PUBLIC KEY) from PEM text or a file; source names it in messages."""
    text, where = key_text(value, source, basedir)
    try:
        public = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise InfraError(f"{source} ({where}) is not a PEM public key; give the PUBLIC KEY that pairs with the "
                         "signing key (cosign.pub, or openssl ec -pubout).") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
        raise InfraError(f"{source} ({where}) is not an ECDSA P-256 public key.")
    return VerifyKey(public, key_id(public), where if where.startswith("/") else source)


# cosign's encrypted private keys ---------------------------------------------------------------------
def _scrypt_key(password: str, salt: bytes, params: dict[str, int]) -> bytes:
    return Scrypt(salt=salt, length=32, n=params["N"], r=params["r"], p=params["p"]).derive(password.encode())


def open_cosign_key(body: bytes, password: str, where: str) -> bytes:
    """The PKCS#8 DER key inside cosign's encrypted format."""
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    try:
        sealed = json.loads(body)
        kdf, cipher = sealed["kdf"], sealed["cipher"]
        params = {name: int(kdf["params"][name]) for name in ("N", "r", "p")}
        salt, nonce = base64.b64decode(kdf["salt"]), base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(sealed["ciphertext"])
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise ValueError(f"{kdf['name']} with {cipher['name']}")
    except (ValueError, KeyError, TypeError) as error:
        raise InfraError(f"The cosign key in {where} is damaged or of an unknown kind ({error}).") from None
    if not 1 < params["N"] <= MAX_SCRYPT_N or params["N"] & (params["N"] - 1) or not 0 < params["r"] * params["p"] < 64:
        raise InfraError(f"The cosign key in {where} asks for scrypt parameters {params}, beyond what a key needs.")
    try:
        return SecretBox(_scrypt_key(password, salt, params)).decrypt(ciphertext, nonce)
    except CryptoError:
        raise InfraError(f"The cosign key in {where} cannot be opened with the password given; check "
                         "signing_key_password (cosign's COSIGN_PASSWORD).") from None


def cosign_private_key_pem(private: ec.EllipticCurvePrivateKey, password: str) -> str:
    """private in cosign's encrypted format (what cosign generate-key-pair writes)."""
    from nacl.secret import SecretBox
    from nacl.utils import random

    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    salt, nonce = os.urandom(SALT_BYTES), random(SecretBox.NONCE_SIZE)
    sealed = SecretBox(_scrypt_key(password, salt, SCRYPT)).encrypt(der, nonce).ciphertext
    body = json.dumps({"kdf": {"name": "scrypt", "params": SCRYPT, "salt": base64.b64encode(salt).decode()},
                       "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
                       "ciphertext": base64.b64encode(sealed).decode()}).encode()
    encoded = base64.b64encode(body).decode()
    lines = [encoded[start:start + 64] for start in range(0, len(encoded), 64)]
    return "\n".join([f"-----BEGIN {COSIGN_PEM_TYPES[0]}-----", *lines, f"-----END {COSIGN_PEM_TYPES[0]}-----", ""])


def new_key_pair(password: str | None = None) -> tuple[str, str]:
    """(private key PEM, public key PEM) of a fresh P-256 key: cosign's format with a password, else PKCS#8."""
    require_crypto()
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    if password is not None:
        return cosign_private_key_pem(private, password), public
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode(), public
