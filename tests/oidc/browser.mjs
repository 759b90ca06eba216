// Drives Debian's Chromium (headless, through playwright-core) for the browser test of
// `cookies` (tests/e2e/test_browser.py). Reads one JSON object on the command line:
//   { chromium, api, trusted, untrusted, at, csrfCookie, csrf, prefix }
// sets the OAuth Agent's cookies (HttpOnly, SameSite=Strict) for the API's host, opens the
// trusted page and the untrusted one, calls the API from each with fetch(credentials:
// "include"), and prints what each page could see, as JSON.
import { chromium } from 'playwright-core';

const o = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: o.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-extensions'],
});
const out = {};
try {
  const context = await browser.newContext();
  const host = new URL(o.api).hostname;
  const cookie = (name, value) => ({ name, value, domain: host, path: '/', httpOnly: true, sameSite: 'Strict' });
  await context.addCookies([cookie(`${o.prefix}-at`, o.at), cookie(`${o.prefix}-csrf`, o.csrfCookie)]);
  const page = await context.newPage();
  const call = (url, init) => page.evaluate(async ([url, init]) => {
    try {
      const r = await fetch(url, { credentials: 'include', ...init });
      const text = await r.text();
      let body = null;
      try { body = JSON.parse(text); } catch { body = text; }
      return { status: r.status, body, exposed: r.headers.get('x-request-id') !== null };
    } catch (e) {
      return { error: String(e) };
    }
  }, [url, init]);
  const csrfHeader = `x-${o.prefix}-csrf`;
  await page.goto(o.trusted);
  out.trusted = {
    get: await call(`${o.api}/api/orders`, {}),
    post: await call(`${o.api}/api/orders`, {
      method: 'POST', headers: { 'content-type': 'application/json', [csrfHeader]: o.csrf }, body: '{"item": 1}',
    }),
    postWithoutCsrf: await call(`${o.api}/api/orders`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"item": 2}',
    }),
    postWrongCsrf: await call(`${o.api}/api/orders`, {
      method: 'POST', headers: { 'content-type': 'application/json', [csrfHeader]: 'wrong' }, body: '{}',
    }),
    documentCookie: await page.evaluate(() => document.cookie),
  };
  await page.goto(o.untrusted);
  out.untrusted = {
    get: await call(`${o.api}/api/orders`, {}),
    post: await call(`${o.api}/api/orders`, {
      method: 'POST', headers: { 'content-type': 'application/json', [csrfHeader]: o.csrf }, body: '{}',
    }),
  };
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
