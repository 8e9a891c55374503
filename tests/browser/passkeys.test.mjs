// Passkeys in a real browser: a person logs in with a password, adds a
// passkey on /private/settings, logs out, signs in with the passkey (no
// user name, no password) and lands signed in with a new session id;
// then removes it, and signing in with it fails with a clear message.
// Without JavaScript the passkey buttons are not shown and the password
// log-in works as before.
//
// The authenticator is Chromium's virtual one (CDP's WebAuthn domain):
// CTAP2, built in ("internal"), keeping discoverable credentials, with
// user verification that always succeeds — a laptop's fingerprint reader
// that always says yes.
//
// WebAuthn refuses IP addresses, so the server listens on 127.0.0.1 but is
// reached, and knows itself (`serve --url`), as http://localhost:PORT/;
// Chromium counts localhost as a secure context even over plain http.
//
//   cargo build -p mantissa && (cd tests/browser && npm ci && node --test passkeys.test.mjs)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BIN, CHROMIUM, PHONE, clickThrough, freePort, launchChromium, logInAt, mantissa, pageWidth, serve, stopServer,
} from './harness.mjs';

const SESSION_COOKIE = 'mantissa_session';
const CAROL = { name: 'carol', password: 'carol-password-1234' };
const EXPIRED = 'this passkey request has expired or was already used; please try again';
const UNKNOWN = 'this passkey is not registered on this site (it may have been removed); log in with your password';

let work; // temp folder: site, screenshot
let server; // { proc, url, exited, stdout(), stderr() }
let origin; // http://localhost:PORT
let browser;
let carol; // { context, page, problems, cdp, authenticatorId }

const at = (path) => new URL(path, origin).href;
const h1 = async (page) => (await page.locator('h1').textContent()).trim();
const path = (page) => new URL(page.url()).pathname;

const logIn = (page, who, password) => logInAt(page, origin, who, password);

const logOut = (page) => clickThrough(page, page.locator('header').getByRole('button', { name: 'Log out' }));

async function sessionCookie(context) {
  return (await context.cookies(origin)).find((c) => c.name === SESSION_COOKIE);
}

/** The visible alert's text, or null. */
async function alertText(page) {
  const alert = page.getByRole('alert');
  return (await alert.count()) ? (await alert.textContent()).trim() : null;
}

/**
 * A browser context and page with Chromium's virtual authenticator. Console
 * errors, page errors and CSP violations go to `problems`, except the
 * console's note of the 4xx answers the tests expect (401 for a refused
 * sign-in, 400 for a replayed one).
 */
async function openPage(options = {}) {
  const context = await browser.newContext({ viewport: PHONE, ...options });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    if (/the server responded with a status of 40[01]/.test(m.text())) return;
    problems.push(`console ${m.type()}: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { context, page, problems, cdp, authenticatorId };
}

before(async () => {
  assert.ok(existsSync(BIN), `${BIN} is missing: run \`cargo build -p mantissa\` first`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: \`apt-get install chromium\``);
  work = mkdtempSync(join(tmpdir(), 'mantissa-passkeys-'));
  const site = join(work, 'site');
  mantissa(['init', site]);
  mantissa(['--site', site, 'user', 'add', CAROL.name, '--password-stdin'], `${CAROL.password}\n`);
  const port = await freePort();
  origin = `http://localhost:${port}`;
  server = await serve(site, { listen: `127.0.0.1:${port}`, url: `${origin}/` });
  assert.match(server.stdout(), new RegExp(`^Reached at ${origin}/ `, 'm'));
  browser = await launchChromium();
});

after(async () => {
  await carol?.context.close().catch(() => {});
  await browser?.close();
  await stopServer(server, 'SIGTERM');
  if (work) rmSync(join(work, 'site'), { recursive: true, force: true });
});

test('add a passkey on /private/settings: listed by name, and a discoverable credential on the authenticator', async (t) => {
  carol = await openPage();
  const { page, cdp, authenticatorId, problems } = carol;
  const res = await logIn(page, CAROL.name, CAROL.password);
  assert.equal(res.status(), 200, `${await alertText(page)}`);
  assert.equal(await h1(page), `Settings for ${CAROL.name}`);
  assert.equal(await page.getByText('You have no passkeys yet.').count(), 1);

  await page.getByLabel('Name of the new passkey').fill('laptop');
  await clickThrough(page, page.getByRole('button', { name: 'Add a passkey' }));
  assert.equal(path(page), '/private/settings', `${await alertText(page)}`);
  assert.equal((await page.getByRole('status').textContent()).trim(), 'Your passkey was added.');
  const item = page.locator('li', { hasText: 'laptop' });
  assert.equal(await item.count(), 1, 'no list item for the passkey');
  assert.match(await item.textContent(), /added just now, not used yet/);
  // The exact time is there too, in UTC, on hover.
  assert.match(await item.locator('time').first().getAttribute('title'), /^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/);

  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  assert.equal(credentials.length, 1);
  assert.equal(credentials[0].isResidentCredential, true, 'the passkey is not discoverable');
  assert.equal(credentials[0].rpId, 'localhost');

  // The list and its Remove button fit a phone.
  const shot = join(work, 'settings-passkeys-360.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.diagnostic(`screenshot: ${shot}`);
  const { width, why } = await pageWidth(page);
  assert.ok(width <= PHONE.width, `page is ${width} px wide at a ${PHONE.width} px viewport; ${why}`);
  assert.deepEqual(problems, []);
});

let signInBody; // the JSON the script posted to finish a sign-in

test('log out, then "Sign in with a passkey" (no user name): lands on /private/settings with a new session id', async () => {
  const { context, page, problems } = carol;
  const before = await sessionCookie(context);
  await logOut(page);
  assert.equal(await sessionCookie(context), undefined);

  await page.goto(at('/login'));
  page.on('request', (r) => {
    if (r.url().endsWith('/login/passkey/finish')) signInBody = r.postData();
  });
  await clickThrough(page, page.getByRole('button', { name: 'Sign in with a passkey' }));
  assert.equal(path(page), '/private/settings', `${await alertText(page)}`);
  assert.equal(await h1(page), `Settings for ${CAROL.name}`);
  const after = await sessionCookie(context);
  assert.ok(after, 'no session cookie after a passkey sign-in');
  assert.notEqual(after.value, before.value, 'the session id did not change');
  assert.equal(after.httpOnly, true);
  assert.match(await page.locator('li', { hasText: 'laptop' }).textContent(), /last used (just now|\d+ minutes? ago)/);
  assert.deepEqual(problems, []);
});

test('the signed answer, posted again, is refused: a challenge works once', async () => {
  const { page, problems } = carol;
  assert.ok(signInBody, 'the sign-in request was not seen');
  await page.goto(at('/login'));
  const replay = await page.evaluate(async (body) => {
    const token = document.querySelector('#passkey-sign-in input[name="csrf_token"]').value;
    const r = await fetch('/login/passkey/finish', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': token },
      body,
    });
    return { status: r.status, body: await r.json() };
  }, signInBody);
  assert.deepEqual(replay, { status: 400, body: { error: EXPIRED } });
  assert.deepEqual(problems, []);
});

test('remove the passkey: signing in with it then fails, saying so, and stays on /login', async (t) => {
  const { page, problems } = carol;
  await page.goto(at('/private/settings'));
  const item = page.locator('li', { hasText: 'laptop' });
  // Its button asks first, on a page of its own.
  await clickThrough(page, item.getByRole('link', { name: 'Remove…' }));
  assert.equal((await page.locator('h1').textContent()).trim(), 'Remove the passkey \u201claptop\u201d?');
  const removed = await clickThrough(page, page.getByRole('button', { name: 'Remove the passkey' }));
  assert.equal(removed.status(), 200);
  assert.equal((await page.getByRole('status').textContent()).trim(), 'The passkey was removed.');
  assert.equal(await page.getByText('You have no passkeys yet.').count(), 1);

  await logOut(page);
  await page.goto(at('/login'));
  // The authenticator still holds it; the site no longer knows it.
  const answered = page.waitForResponse((r) => r.url().endsWith('/login/passkey/finish'));
  await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
  assert.equal((await answered).status(), 401);
  const alert = page.locator('#passkey-sign-in').getByRole('alert');
  await alert.waitFor();
  const said = (await alert.textContent()).trim();
  assert.equal(said, UNKNOWN.charAt(0).toUpperCase() + UNKNOWN.slice(1));
  assert.equal(path(page), '/login');
  assert.equal(await sessionCookie(carol.context), undefined, 'signed in with a removed passkey');
  const shot = join(work, 'login-passkey-refused-360.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.diagnostic(`screenshot: ${shot}`);

  // The password still works.
  await logIn(page, CAROL.name, CAROL.password);
  assert.equal(await h1(page), `Settings for ${CAROL.name}`);
  assert.deepEqual(problems, []);
});

test('without JavaScript the passkey buttons are not shown, and password log-in works as before', async () => {
  const context = await browser.newContext({ viewport: PHONE, javaScriptEnabled: false });
  try {
    const page = await context.newPage();
    await page.goto(at('/login'));
    assert.equal(await page.getByRole('button', { name: 'Sign in with a passkey' }).count(), 0);
    const res = await logIn(page, CAROL.name, CAROL.password);
    assert.equal(res.status(), 200);
    assert.equal(await h1(page), `Settings for ${CAROL.name}`);
    assert.equal(await page.getByRole('button', { name: 'Add a passkey' }).count(), 0);
    // (Playwright's text locators skip <noscript>; innerText is what is shown.)
    assert.match(await page.locator('main').innerText(), /Adding a passkey needs JavaScript\./);
  } finally {
    await context.close();
  }
});
