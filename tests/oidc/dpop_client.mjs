// A DPoP client for the end-to-end tests, made of panva's `dpop` package (RFC 9449, from npm):
// the proofs the filter checks come from a library nobody here wrote.
// Reads one JSON request per line on stdin, answers one JSON line on stdout:
//   {"op": "key", "alg": "ES256" | "Ed25519" | "RS256" | "PS256"}
//       -> {"id": N, "jkt": "<RFC 7638 thumbprint>", "jwk": {public JWK}}
//   {"op": "proof", "id": N, "htm": "GET", "htu": "http://...", "token"?: "...", "nonce"?: "...",
//    "extra"?: {more claims}}
//       -> {"proof": "<compact JWS>"}
// Errors answer {"error": "..."}.
import { createInterface } from 'node:readline';

import { calculateThumbprint, generateKeyPair, generateProof } from 'dpop';

const keys = [];

async function handle(req) {
  if (req.op === 'key') {
    const pair = await generateKeyPair(req.alg, { extractable: true });
    keys.push(pair);
    const jwk = await crypto.subtle.exportKey('jwk', pair.publicKey);
    return { id: keys.length - 1, jkt: await calculateThumbprint(pair.publicKey), jwk };
  }
  if (req.op === 'proof') {
    const pair = keys[req.id];
    if (!pair) throw new Error(`no key ${req.id}`);
    const proof = await generateProof(pair, req.htu, req.htm, req.nonce, req.token, req.extra);
    return { proof };
  }
  throw new Error(`unknown op ${req.op}`);
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let answer;
  try {
    answer = await handle(JSON.parse(line));
  } catch (e) {
    answer = { error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
