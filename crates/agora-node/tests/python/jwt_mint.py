"""Client tokens for the node's tests, minted by an independent library (PyJWT, with `cryptography`).

Reads one JSON request on stdin, prints one JSON answer on stdout:

  {"op": "keys", "dir": "/scratch"}
      -> writes es256.pem / es256.pub.pem (P-256) and eddsa.pem / eddsa.pub.pem (Ed25519) into dir;
         answers {"es256_public": path, "es256_private": path, "eddsa_public": path, "eddsa_private": path}
  {"op": "mint", "tokens": [{"alg": "HS256"|"ES256"|"EdDSA"|"none"|"HS256-with-pem",
                             "key": secret or private PEM path (for HS256-with-pem: the public PEM path),
                             "claims": {...}, "exp_in": s, "nbf_in": s, "iat_in": s}, ...]}
      -> {"tokens": ["<jwt>", ...]}; *_in are seconds from now (negative: in the past), written as exp/nbf/iat.

"HS256-with-pem" is the classic key-confusion attack: an HS256 token whose HMAC key is the issuer's public key PEM.
PyJWT itself refuses to HMAC with a PEM (it knows the attack), so that one is assembled by hand.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def write_pair(directory, name, private_key):
    private = os.path.join(directory, name + ".pem")
    public = os.path.join(directory, name + ".pub.pem")
    with open(private, "wb") as f:
        f.write(private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(public, "wb") as f:
        f.write(private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(spec):
    now = int(time.time())
    claims = dict(spec.get("claims", {}))
    for field in ("exp", "nbf", "iat"):
        if field + "_in" in spec:
            claims[field] = now + int(spec[field + "_in"])
    alg = spec["alg"]
    if alg == "none":
        return jwt.encode(claims, None, algorithm="none")
    if alg == "HS256-with-pem":
        with open(spec["key"], "rb") as f:
            pem = f.read()
        message = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
        signature = hmac.new(pem, message.encode(), hashlib.sha256).digest()
        return message + "." + b64(signature)
    if alg == "HS256":
        return jwt.encode(claims, spec["key"], algorithm="HS256")
    with open(spec["key"], "rb") as f:
        private = serialization.load_pem_private_key(f.read(), password=None)
    return jwt.encode(claims, private, algorithm=alg)


def main():
    request = json.load(sys.stdin)
    if request["op"] == "keys":
        es_private, es_public = write_pair(request["dir"], "es256", ec.generate_private_key(ec.SECP256R1()))
        ed_private, ed_public = write_pair(request["dir"], "eddsa", ed25519.Ed25519PrivateKey.generate())
        answer = {"es256_private": es_private, "es256_public": es_public,
                  "eddsa_private": ed_private, "eddsa_public": ed_public}
    else:
        answer = {"tokens": [mint(spec) for spec in request["tokens"]]}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test prints it
        json.dump({"error": "%s: %s" % (type(e).__name__, e)}, sys.stdout)
