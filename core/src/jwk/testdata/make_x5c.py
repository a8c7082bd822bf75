#!/usr/bin/env python3
"""Writes x5c.json: public JWKs with real self-signed (or CA-signed) certificates of the
same keys, for the x5c/x5t tests in core/src/jwk/x5c_tests.rs. Run once, offline, and commit the
output; the private keys are thrown away. Needs the `cryptography` package and the `openssl`
CLI (only for the compressed-point P-256 certificate, which `cryptography` cannot make).

    python3 core/src/jwk/testdata/make_x5c.py > core/src/jwk/testdata/x5c.json
"""
import base64, datetime, hashlib, json, os, subprocess, tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def uint(n):
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def jwk_of(pub):
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return {"kty": "RSA", "n": b64u(uint(nums.n)), "e": b64u(uint(nums.e))}
    if isinstance(pub, ec.EllipticCurvePublicKey):
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[pub.curve.name]
        size = (pub.curve.key_size + 7) // 8
        nums = pub.public_numbers()
        return {"kty": "EC", "crv": crv, "x": b64u(nums.x.to_bytes(size, "big")),
                "y": b64u(nums.y.to_bytes(size, "big"))}
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    crv = "Ed25519" if isinstance(pub, ed25519.Ed25519PublicKey) else "Ed448"
    return {"kty": "OKP", "crv": crv, "x": b64u(raw)}


def cert(key, name, issuer_key=None, issuer_name=None):
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or name)])
    signer = issuer_key or key
    algo = None if isinstance(signer, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) \
        else hashes.SHA256()
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650)))
    return builder.sign(signer, algo).public_bytes(serialization.Encoding.DER)


def entry(key, ders):
    return {"jwk": jwk_of(key.public_key()),
            "x5c": [base64.b64encode(d).decode() for d in ders],
            "x5t": b64u(hashlib.sha1(ders[0]).digest()),
            "x5t#S256": b64u(hashlib.sha256(ders[0]).digest())}


def compressed_p256():
    with tempfile.TemporaryDirectory() as d:
        key, crt = os.path.join(d, "k.pem"), os.path.join(d, "c.der")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)
        run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        run("openssl", "ec", "-in", key, "-conv_form", "compressed", "-out", key)
        run("openssl", "req", "-new", "-x509", "-key", key, "-subj", "/CN=p256-compressed",
            "-days", "3650", "-outform", "DER", "-out", crt)
        priv = serialization.load_pem_private_key(open(key, "rb").read(), None)
        der = open(crt, "rb").read()
        return entry(priv, [der])


rsa_key = rsa.generate_private_key(65537, 2048)
ca_key = rsa.generate_private_key(65537, 2048)
other_rsa = rsa.generate_private_key(65537, 2048)
p256 = ec.generate_private_key(ec.SECP256R1())
p384 = ec.generate_private_key(ec.SECP384R1())
edk = ed25519.Ed25519PrivateKey.generate()
ed448k = ed448.Ed448PrivateKey.generate()

out = {
    # RSA-2048 leaf signed by an RSA CA: x5c = [leaf, CA].
    "rsa": entry(rsa_key, [cert(rsa_key, "rsa-leaf", ca_key, "test-ca"), cert(ca_key, "test-ca")]),
    "rsa_other": entry(other_rsa, [cert(other_rsa, "rsa-other")]),
    "p256": entry(p256, [cert(p256, "p256")]),
    "p256_compressed": compressed_p256(),
    "p384": entry(p384, [cert(p384, "p384")]),
    "ed25519": entry(edk, [cert(edk, "ed25519")]),
    "ed448": entry(ed448k, [cert(ed448k, "ed448")]),
}
print(json.dumps(out, indent=1))
