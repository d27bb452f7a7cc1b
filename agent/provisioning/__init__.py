"""``homehub provision``: give a hub its identity, its platform and its patient, then prove
the result against the platform (docs/provisioning.md).

    steps     the step plan, what each step reports, and the two provisioning errors
    bundle    the depot's provisioning bundle file: format, size limit, strict parsing
    identity  the hub's key, its CSR, and importing the issued certificate and CA chain
    token_key    a PKCS#11 hub's signing key, made and kept in its token
    signing_csr  that key's certificate request, signed inside the token
    settings  the configuration keys provisioning sets, written once, validated first
    check     the provisioning check message and the platform's confirmation (sans-I/O)
    proof     the TLS handshake and the signed check over the hub's own uplink
    runner    the steps in order, each reporting as it ends
"""
