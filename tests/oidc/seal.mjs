// Seals values as Curity's OAuth Agent writes its cookies (its test helper does the same):
// base64url without padding of version byte 1, a random 12-byte IV, the AES-256-GCM ciphertext
// and its 16-byte tag. Usage: node seal.mjs <64 hex key> <value>...: one cookie value per line.
import crypto from 'node:crypto';

const [keyHex, ...values] = process.argv.slice(2);
const key = Buffer.from(keyHex, 'hex');
for (const value of values) {
  const iv = crypto.randomBytes(12);
  const cipher = crypto.createCipheriv('aes-256-gcm', key, iv);
  const sealed = Buffer.concat([cipher.update(Buffer.from(value)), cipher.final()]);
  const all = Buffer.concat([Buffer.from([1]), iv, sealed, cipher.getAuthTag()]);
  console.log(all.toString('base64url'));
}
