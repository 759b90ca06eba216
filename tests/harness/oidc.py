"""Parts nobody here wrote, run for the end-to-end tests: panva's oidc-provider (OpenID
Certified, `tests/oidc/server.mjs`) and panva's `dpop` client (`tests/oidc/dpop_client.mjs`),
both from npm (`npm ci` in tests/oidc; scripts/test.sh does it)."""

import base64
import hashlib
import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from harness.envoy import ROOT, closed_port

OIDC_DIR = ROOT / "tests" / "oidc"
APP = ("app", "app-secret-for-e2e-tests")
WEB = ("web", "web-secret-for-e2e-tests")
WEB_REDIRECT = "http://127.0.0.1:9/cb"
MTLS_APP = ("mtls-app", "mtls-app-secret-for-e2e-tests")
GATEWAY = ("gateway", "gateway-secret-for-e2e-tests")


def node():
    path = shutil.which("node")
    assert path, "Node.js is needed for oidc-provider and dpop (scripts/lib.sh installs it)"
    assert (OIDC_DIR / "node_modules" / "oidc-provider").is_dir() and \
        (OIDC_DIR / "node_modules" / "dpop").is_dir(), "run `npm ci` in tests/oidc (scripts/test.sh does)"
    return path


class OpenIdProvider:
    def __init__(self, workdir: Path):
        self.port = closed_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "oidc-provider.log"
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([node(), "server.mjs", str(self.port)], cwd=OIDC_DIR,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if "READY" in self.log_path.read_text():
                return self
            assert self.proc.poll() is None, self.log_path.read_text()
            time.sleep(0.1)
        self.proc.kill()  # not left behind, holding its port, when the fixture fails
        raise RuntimeError(f"oidc-provider not ready:\n{self.log_path.read_text()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()

    def post(self, path, form, client, accept="application/json", headers=()):
        basic = base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
        req = urllib.request.Request(
            self.issuer + path, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"authorization": f"Basic {basic}", "accept": accept,
                     "content-type": "application/x-www-form-urlencoded", **dict(headers)})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{path}: {e.code} {e.read().decode()}") from None

    def token(self, scope="read", dpop=None, cert_pem=None, client=None):
        """A client_credentials access token (opaque). `dpop`: a (DpopClient, key) pair whose
        key the token is bound to (RFC 9449); `cert_pem`: the client certificate the token is
        bound to (RFC 8705, client "mtls-app")."""
        headers = []
        if dpop:
            client_, key = dpop
            headers.append(("dpop", client_.proof(key, "POST", self.issuer + "/token")))
        if cert_pem:
            headers.append(("x-e2e-client-cert", urllib.parse.quote(cert_pem)))
            client = client or MTLS_APP
        answer = json.loads(self.post("/token", {"grant_type": "client_credentials", "scope": scope},
                                      client or APP, headers=headers))
        return answer["access_token"]

    def set_backchannel_logout(self, uri):
        """Where the provider posts the client "web"'s logout tokens (the gateway)."""
        req = urllib.request.Request(f"{self.issuer}/_e2e/backchannel?uri={urllib.parse.quote(uri)}",
                                     data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 204

    def sign_in(self, user, scope="openid read"):
        """A user signs in to the client "web" through the provider's own interactions
        (authorization code with PKCE, RFC 7636), driven by plain HTTP requests. Returns a
        `Browser` holding the session, with the tokens of the code exchange in `.tokens`."""
        b = Browser()
        verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urllib.parse.urlencode({
            "client_id": WEB[0], "response_type": "code", "redirect_uri": WEB_REDIRECT,
            "scope": scope, "state": "s", "code_challenge": challenge,
            "code_challenge_method": "S256", "prompt": "consent"})
        url = f"{self.issuer}/auth?{query}"
        for _ in range(10):
            status, location, _ = b.go(url)
            assert status in (302, 303), f"{url}: {status}"
            if location.startswith(WEB_REDIRECT):
                break
            url = urllib.parse.urljoin(self.issuer, location)
            if "/interaction/" in url:
                page_status, _, page = b.go(url)
                assert page_status == 200, page
                prompt = "login" if 'name="login"' in page else "consent"
                form = {"prompt": prompt, "login": user, "password": "any"} \
                    if prompt == "login" else {"prompt": prompt}
                status, location, _ = b.go(url, form)
                assert status in (302, 303), f"interaction {prompt}: {status}"
                url = urllib.parse.urljoin(self.issuer, location)
        else:
            raise AssertionError("the sign-in never reached the redirect URI")
        code = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)["code"][0]
        b.tokens = json.loads(self.post("/token", {
            "grant_type": "authorization_code", "code": code, "redirect_uri": WEB_REDIRECT,
            "code_verifier": verifier}, WEB))
        return b

    def sign_out(self, browser):
        """The user signs out at end_session (RP-initiated logout, confirmed): the provider
        posts its logout tokens (back-channel logout) before it answers."""
        hint = browser.tokens["id_token"]
        query = urllib.parse.urlencode({"id_token_hint": hint, "client_id": WEB[0]})
        status, _, page = browser.go(f"{self.issuer}/session/end?{query}")
        assert status == 200, page
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', page).group(1)
        status, _, page = browser.go(f"{self.issuer}/session/end/confirm",
                                     {"xsrf": xsrf, "logout": "yes"})
        assert status in (200, 302, 303), page

    def introspect(self, token):
        return json.loads(self.post("/token/introspection", {"token": token}, GATEWAY))

    def revoke(self, token):
        self.post("/token/revocation", {"token": token}, APP)


class Browser:
    """Cookies and manual redirects: what a browser does for a sign-in, and nothing more."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), Browser._NoRedirect)
        self.tokens = {}

    def go(self, url, form=None):
        """GET (or POST `form`): (status, Location, body)."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(url, data=data, method="POST" if form is not None else "GET")
        try:
            with self.opener.open(req, timeout=10) as r:
                return r.status, r.headers.get("location", ""), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("location", ""), e.read().decode()


class DpopClient:
    """Keys and DPoP proofs made by panva's `dpop` package, in one Node process."""

    def __init__(self):
        self.proc = subprocess.Popen([node(), "dpop_client.mjs"], cwd=OIDC_DIR, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert "error" not in answer, answer
        return answer

    def key(self, alg="ES256"):
        """A new key pair: a dict with its `id`, `jkt` (RFC 7638 thumbprint) and public `jwk`."""
        return self._ask(op="key", alg=alg)

    def proof(self, key, htm, htu, token=None, nonce=None, extra=None):
        req = {"op": "proof", "id": key["id"], "htm": htm, "htu": htu}
        for name, value in (("token", token), ("nonce", nonce), ("extra", extra)):
            if value is not None:
                req[name] = value
        return self._ask(**req)["proof"]

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def seal_cookies(key_hex, *values):
    """Cookie values as an OAuth Agent writes them (tests/oidc/seal.mjs: Node's crypto,
    AES-256-GCM in Curity's format), one per value."""
    out = subprocess.run([node(), "seal.mjs", key_hex, *values], cwd=OIDC_DIR, check=True,
                         capture_output=True, text=True, timeout=30).stdout.split()
    assert len(out) == len(values)
    return out
