"""Browser apps (`cookies`): the OAuth Agent's cookie names and demo key the tests share, and
cookies sealed as the agent seals them (tests/oidc/seal.mjs, Node's crypto)."""

from harness.oidc import seal_cookies

KEY = "4e4636356d65563e4c73233847503e3b21436e6f7629724950526f4b5e2e4e50"
TRUSTED = "https://www.example.com"
PREFIX = "example"
AT, CSRF, CSRF_HEADER = f"{PREFIX}-at", f"{PREFIX}-csrf", f"x-{PREFIX}-csrf"


def seal(*values, key=KEY):
    """Cookie values as the OAuth Agent writes them, one per value."""
    return seal_cookies(key, *values)


def cookies_block(**extra):
    """A `cookies` block for TRUSTED with KEY."""
    block = {"name_prefix": PREFIX, "encryption_keys": [KEY], "trusted_web_origins": [TRUSTED]}
    block.update(extra)
    return block
