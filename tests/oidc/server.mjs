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
//     x-e2e-client-cert (URL-encoded PEM), as a TLS-terminating proxy in front would pass it.
// The signing key (ES256, the only one) is made at start. Usage: node server.mjs PORT. Prints "READY <issuer>".
import { generateKeyPairSync } from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node server.mjs PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'op-es256-1', alg: 'ES256', use: 'sig' };

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
      client_id: 'gateway',
      client_secret: 'gateway-secret-for-e2e-tests',
      grant_types: [],
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
  scopes: ['read', 'write'],
  features: {
    devInteractions: { enabled: false },
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
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
