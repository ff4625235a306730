#!/usr/bin/env python3
"""A real SAML 2.0 IdP that no one here wrote (pysaml2, from PyPI), used once per step by
tests/saml_interop.rs:

  pysaml2_idp.py metadata WORKDIR                         -> prints the IdP metadata XML
  pysaml2_idp.py respond WORKDIR SP_METADATA REDIRECT_URL [sha1] -> prints a base64 SAMLResponse

WORKDIR holds the IdP key pair (made on first use with `openssl`)."""
import base64
import os
import subprocess
import sys
import urllib.parse

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.authn_context import PASSWORD
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server

ENTITY_ID = "https://pysaml2-idp.test/metadata"
SSO_URL = "https://pysaml2-idp.test/sso"


def keypair(workdir):
    key, cert = os.path.join(workdir, "idp-key.pem"), os.path.join(workdir, "idp-cert.pem")
    if not os.path.exists(key):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=pysaml2-idp.test", "-keyout", key, "-out", cert],
            check=True, capture_output=True)
    return key, cert


def config(workdir, sp_metadata=None):
    key, cert = keypair(workdir)
    conf = {
        "entityid": ENTITY_ID,
        "service": {
            "idp": {
                "endpoints": {"single_sign_on_service": [(SSO_URL, BINDING_HTTP_REDIRECT)]},
                "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                "policy": {"default": {"lifetime": {"minutes": 15}, "attribute_restrictions": None}},
                "sign_response": False,
                "sign_assertion": True,
                "want_authn_requests_signed": False,
            }
        },
        "key_file": key,
        "cert_file": cert,
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "signing_algorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "digest_algorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
        "metadata": {"local": [sp_metadata]} if sp_metadata else {},
    }
    c = IdPConfig()
    c.load(conf)
    return c


def main():
    cmd, workdir = sys.argv[1], sys.argv[2]
    if cmd == "metadata":
        print(str(entity_descriptor(config(workdir))))
        return
    if cmd == "respond":
        sp_metadata, redirect_url = sys.argv[3], sys.argv[4]
        sha1 = len(sys.argv) > 5 and sys.argv[5] == "sha1"
        sign_alg = "http://www.w3.org/2000/09/xmldsig#rsa-sha1" if sha1 else "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
        digest_alg = "http://www.w3.org/2000/09/xmldsig#sha1" if sha1 else "http://www.w3.org/2001/04/xmlenc#sha256"
        server = Server(config=config(workdir, sp_metadata))
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(redirect_url).query))
        req = server.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT).message
        args = server.response_args(req, [BINDING_HTTP_POST])
        identity = {
            "mail": ["interop@example.com"],
            "givenName": ["Inter"],
            "sn": ["Operability"],
            "eduPersonAffiliation": ["staff", "member"],
        }
        resp = server.create_authn_response(
            identity,
            userid="interop@example.com",
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text="interop@example.com"),
            authn={"class_ref": PASSWORD, "authn_auth": ENTITY_ID},
            sign_assertion=True,
            sign_response=False,
            sign_alg=sign_alg,
            digest_alg=digest_alg,
            **args,
        )
        print(base64.b64encode(str(resp).encode()).decode())
        return
    sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
