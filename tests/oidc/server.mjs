// A real OpenID Provider for the end-to-end tests: panva's oidc-provider (OpenID Certified),
// configured by nobody but its own defaults plus what the tests need:
//   - RFC 7662 introspection and RFC 9701 signed introspection responses,
//   - the client_credentials grant for the client "app" (it gets the opaque access tokens),
//   - the confidential client "gateway" (the filter) that introspects, with ES256-signed
//     introspection responses when it asks for them (Accept: application/token-introspection+jwt),
//   - revocation (RFC 7009),
//   - DPoP (RFC 9449, on by default in oidc-provider 9): a token request with a DPoP proof gets
//     a token bound to the proof's key (introspection answers cnf.jkt and token_type DPoP),
//   - certificate-bound tokens (RFC 8705) for the client "mtls-app": the provider is plain
//     HTTP here, so the client certificate reaches it as the test's own header
//     x-e2e-client-cert (URL-encoded PEM), as a TLS-terminating proxy in front would pass it,
//   - a sign-in for the client "web" (authorization code with PKCE) through the provider's own
//     development interactions, driven by plain HTTP requests, and OpenID Connect
//     Back-Channel Logout 1.0 to its backchannel_logout_uri when the user signs out at
//     end_session. The gateway's listener port is known only once Envoy runs: the tests set
//     the URI with POST /_e2e/backchannel?uri=... (this wrapper's only test hook),
//   - token exchange (RFC 8693), a grant registered with registerGrantType for the client
//     "gateway": the subject token is an access token this provider issued (found in its own
//     store) or a JWT it signed; the token issued is a JWT for the requested audience (one of
//     AUDIENCES), with the requested scope (a subset of the subject's), valid 300 s. An unknown
//     audience is invalid_target, a scope beyond the subject's invalid_scope, an unknown or
//     expired subject invalid_grant.
// The signing key (ES256, the only one) is made at start. Usage: node server.mjs PORT. Prints "READY <issuer>".
import { createECDH, createPrivateKey, createPublicKey } from 'node:crypto';

import { SignJWT, jwtVerify } from 'jose';
import Provider, { errors } from 'oidc-provider';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node server.mjs PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// Made with ECDH, not generateKeyPairSync: Node 20 can deadlock exporting a generated key as a
// JWK when a garbage collection finalizes the generation job at that moment (seen in CI: the
// export holding the key's mutex, the job's destructor waiting for it; READY never came).
const ecdh = createECDH('prime256v1');
ecdh.generateKeys();
const point = ecdh.getPublicKey(); // 0x04 || x || y
const scalar = ecdh.getPrivateKey();
const b64u = (bytes) => Buffer.from(bytes).toString('base64url');
const jwk = {
  kty: 'EC',
  crv: 'P-256',
  x: b64u(point.subarray(1, 33)),
  y: b64u(point.subarray(33, 65)),
  d: b64u(Buffer.concat([Buffer.alloc(32 - scalar.length), scalar])),
};
const privateKey = createPrivateKey({ key: jwk, format: 'jwk' });
const signingKey = { ...jwk, kid: 'op-es256-1', alg: 'ES256', use: 'sig' };

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';
const AUDIENCES = ['orders-api', 'billing-api', 'split-api'];
const publicKey = createPublicKey(privateKey);

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'app',
      client_secret: 'app-secret-for-e2e-tests',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'read write',
    },
    {
      client_id: 'mtls-app',
      client_secret: 'mtls-app-secret-for-e2e-tests',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'read write',
      tls_client_certificate_bound_access_tokens: true,
    },
    {
      client_id: 'web',
      client_secret: 'web-secret-for-e2e-tests',
      application_type: 'native',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1:9/cb'],
      post_logout_redirect_uris: ['http://127.0.0.1:9/bye'],
      scope: 'openid read write',
      backchannel_logout_uri: 'http://127.0.0.1:9/_bcl',
      backchannel_logout_session_required: true,
    },
    {
      client_id: 'gateway',
      client_secret: 'gateway-secret-for-e2e-tests',
      grant_types: [TOKEN_EXCHANGE],
      response_types: [],
      redirect_uris: [],
    },
  ],
  jwks: { keys: [signingKey] },
  // The only key is ES256: every signed response uses it (the default would be RS256).
  clientDefaults: {
    id_token_signed_response_alg: 'ES256',
    introspection_signed_response_alg: 'ES256',
  },
  scopes: ['openid', 'read', 'write'],
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    jwtIntrospection: { enabled: true },
    revocation: { enabled: true },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      getCertificate(ctx) {
        const pem = ctx.get('x-e2e-client-cert');
        return pem ? decodeURIComponent(pem) : undefined;
      },
    },
  },
  enabledJWA: {
    dPoPSigningAlgValues: ['ES256', 'Ed25519', 'EdDSA', 'RS256', 'PS256'],
  },
  ttl: { ClientCredentials: 600 },
  // Everything here is on loopback, which the provider's outgoing requests refuse by default
  // (SSRF protection): its back-channel logout calls reach the gateway on 127.0.0.1.
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
});

// RFC 8693 §2: what the subject token is worth, then a JWT for the API asked for.
async function subjectOf(ctx, token, type) {
  if (type === TYPE_ACCESS_TOKEN) {
    const found = (await ctx.oidc.provider.ClientCredentials.find(token))
      || (await ctx.oidc.provider.AccessToken.find(token));
    if (!found || found.isExpired) return undefined;
    return { sub: found.accountId || found.clientId, clientId: found.clientId, scope: found.scope || '' };
  }
  if (type === TYPE_JWT) {
    try {
      const { payload } = await jwtVerify(token, publicKey, { issuer });
      return { sub: payload.sub, clientId: payload.client_id, scope: payload.scope || '' };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

provider.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
  const params = ctx.oidc.params;
  if (params.requested_token_type && params.requested_token_type !== TYPE_JWT) {
    throw new errors.InvalidRequest('only JWTs are issued');
  }
  const subject = await subjectOf(ctx, params.subject_token, params.subject_token_type);
  if (!subject) throw new errors.InvalidGrant('subject token unknown, expired or not verifiable');
  if (!params.audience || !AUDIENCES.includes(params.audience)) {
    throw new errors.InvalidTarget('unknown audience');
  }
  const granted = subject.scope.split(' ').filter(Boolean);
  const asked = (params.scope || subject.scope).split(' ').filter(Boolean);
  if (!asked.every((s) => granted.includes(s))) throw new errors.InvalidScope('scope beyond the subject token');
  const scope = asked.join(' ');
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: subject.sub, client_id: subject.clientId, scope, exchanged: true };
  if (params.resource) claims.resource = params.resource;
  const jwt = await new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', kid: signingKey.kid, typ: 'at+jwt' })
    .setIssuer(issuer).setAudience(params.audience).setIssuedAt(now).setExpirationTime(now + 300)
    .setJti(`x-${now}-${Math.random().toString(36).slice(2)}`)
    .sign(privateKey);
  ctx.body = {
    access_token: jwt, issued_token_type: TYPE_JWT, token_type: 'N_A', expires_in: 300, scope,
  };
}, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'scope', 'resource']);

provider.on('backchannel.error', (ctx, err, client) => {
  console.log(`backchannel.error ${client.clientId}: ${err.message} ${err.cause ? (err.cause.code || err.cause.message) : ''}`);
});
provider.on('backchannel.success', (ctx, client) => {
  console.log(`backchannel.success ${client.clientId}`);
});

// The test hook: where the client "web" is told of logouts (the gateway's listener).
provider.use(async (ctx, next) => {
  if (ctx.path === '/_e2e/backchannel' && ctx.method === 'POST') {
    const client = await provider.Client.find('web');
    client.backchannelLogoutUri = String(ctx.query.uri);
    ctx.status = 204;
    return;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
