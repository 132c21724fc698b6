"""Checks one Web Push request the way a user agent and a push service would, with implementations that are not
agora's: the body is decrypted with `http_ece` (RFC 8188/8291, Mozilla's), the VAPID JWT verified with PyJWT
against the `k=` key (RFC 8292).

Reads a JSON object on stdin:
  body           base64 of the request body
  ua_private     base64url of the user agent's P-256 private scalar (32 bytes)
  auth           base64url of the 16-byte auth secret
  authorization  the Authorization header, or null
  audience       the origin the JWT must name
Prints {"plaintext": ..., "claims": ..., "k": ...}; exits 1 with {"error": ...} when anything fails.
"""

import base64
import json
import sys
import time

import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def main():
    request = json.load(sys.stdin)
    out = {}
    private = ec.derive_private_key(int.from_bytes(b64url(request["ua_private"]), "big"), ec.SECP256R1())
    plaintext = http_ece.decrypt(
        base64.b64decode(request["body"]),
        private_key=private,
        auth_secret=b64url(request["auth"]),
        version="aes128gcm",
    )
    out["plaintext"] = plaintext.decode("utf-8")
    header = request.get("authorization")
    if header is not None:
        scheme, _, params = header.partition(" ")
        if scheme != "vapid":
            raise ValueError("not a vapid Authorization header: " + scheme)
        fields = dict(part.strip().split("=", 1) for part in params.split(","))
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url(fields["k"]))
        claims = jwt.decode(
            fields["t"],
            public,
            algorithms=["ES256"],
            audience=request["audience"],
            options={"require": ["exp", "aud", "sub"]},
        )
        if claims["exp"] > time.time() + 24 * 3600:
            raise ValueError("exp more than 24 h ahead")
        out["claims"] = claims
        out["k"] = fields["k"]
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # every failure is the test's answer, printed for the Rust side
        print(json.dumps({"error": "%s: %s" % (type(error).__name__, error)}))
        sys.exit(1)
