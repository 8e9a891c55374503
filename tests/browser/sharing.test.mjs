// Sharing in a real browser: alice writes a note on the notes site
// (`mantissa-notes-site`: the `mantissa` command plus the testkit's notes
// offering), and its address answers 404 to an anonymous visitor and to bob
// until she shares it — with bob, then with everyone — and 404 again when
// she stops. Each person has a browser context of their own (their own
// cookies); alice's runs without JavaScript, since every page must work
// without it. The note's body carries a <script>, which must render as
// text.
//
//   cargo build -p mantissa-notes-site && (cd tests/browser && npm ci && node --test sharing.test.mjs)
//
// NOTES_SITE_BIN names another binary (default:
// target/debug/mantissa-notes-site); CHROMIUM another browser.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CHROMIUM, NOTES_SITE_BIN, PHONE, clickThrough, launchChromium, logInAt, mantissa, pageWidth, serve, stopServer,
} from './harness.mjs';

const ROOT = { name: 'root', password: 'root-password-1234' };
const ALICE = { name: 'alice', password: 'alice-password-1234' };
const BOB = { name: 'bob', password: 'bob-password-5678' };
const TITLE = 'Shopping list';
const PAYLOAD = '<script>alert("owned")</script>';
const BODY = `Milk & eggs ${PAYLOAD}`;
const NOTE_PATH = '/users/alice/shopping-list';

let work;
let server;
let browser;
const contexts = new Set();
let alice; // { context, page, problems, dialogs }, without JavaScript
let bob;
let anonymous;

const at = (path) => new URL(path, server.url).href;
const site = (args, input) => mantissa(args, input, NOTES_SITE_BIN);

/** A new context and page; page errors and dialogs are collected. */
async function openPage(options = {}) {
  const context = await browser.newContext({ viewport: PHONE, ...options });
  contexts.add(context);
  const page = await context.newPage();
  const problems = [];
  const dialogs = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('dialog', async (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    await d.dismiss();
  });
  return { context, page, problems, dialogs };
}

async function logIn(page, who, password) {
  const res = await logInAt(page, server.url, who, password);
  assert.equal(res.status(), 200, `${who} could not log in`);
  // Log-in lands on the user's first application: the notes.
  assert.equal(new URL(page.url()).pathname, '/private/notes');
}

const h1 = async (page) => (await page.locator('h1').textContent()).trim();

/** Visits the note's address as `who`; asserts the status, and on 200 the note itself. */
async function visitNote(who, expected, label) {
  const { page, dialogs, problems } = who;
  const res = await page.goto(at(NOTE_PATH));
  assert.equal(res.status(), expected, `${label}: ${NOTE_PATH} answered ${res.status()}`);
  if (expected === 404) {
    assert.equal(await h1(page), 'Not found', label);
    assert.doesNotMatch(await page.locator('body').textContent(), /Shopping|Milk/, `${label}: the 404 tells`);
    return;
  }
  assert.equal(await h1(page), TITLE, label);
  const body = page.locator('.note-body');
  assert.equal((await body.textContent()).trim(), BODY, `${label}: the body is not shown as text`);
  // The offering's own stylesheet (/static/notes/…) applies.
  assert.equal(await body.evaluate((el) => getComputedStyle(el).whiteSpace), 'pre-wrap', label);
  assert.equal(await page.locator('main script').count(), 0, `${label}: the body's <script> became an element`);
  assert.match(await page.locator('body').textContent(), /by alice/);
  assert.deepEqual(dialogs, [], `${label}: a dialog opened`);
  assert.deepEqual(problems, [], label);
}

/** The <article> of alice's note on /private/notes. */
const noteOnList = () => alice.page.locator('article.note', { hasText: TITLE });

before(async () => {
  assert.ok(existsSync(NOTES_SITE_BIN), `${NOTES_SITE_BIN} is missing: run \`cargo build -p mantissa-notes-site\` first`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: \`apt-get install chromium\``);
  work = mkdtempSync(join(tmpdir(), 'mantissa-sharing-'));
  const dir = join(work, 'site');
  site(['init', dir]);
  for (const [user, admin] of [[ROOT, true], [ALICE, false], [BOB, false]]) {
    site(['--site', dir, 'user', 'add', user.name, ...(admin ? ['--admin'] : []), '--password-stdin'], `${user.password}\n`);
  }
  server = await serve(dir, { bin: NOTES_SITE_BIN });
  browser = await launchChromium();
  alice = await openPage({ javaScriptEnabled: false });
  bob = await openPage();
  anonymous = await openPage();
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
  await stopServer(server);
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the admin console lists the notes offering next to the settings', async () => {
  const root = await openPage();
  await logIn(root.page, ROOT.name, ROOT.password);
  const res = await root.page.goto(at('/admin/offerings'));
  assert.equal(res.status(), 200);
  const names = (await root.page.locator('table tbody tr td:first-child').allTextContents()).map((t) => t.trim());
  assert.ok(names.includes('notes') && names.includes('settings'), `offerings listed: ${names}`);
  contexts.delete(root.context);
  await root.context.close();
});

test('alice (without JavaScript) writes a note: it is published at an address only she can see', async () => {
  await logIn(alice.page, ALICE.name, ALICE.password);
  await alice.page.goto(at('/private/notes'));
  assert.equal(await h1(alice.page), 'Notes');
  // `user add` installed the product: the notes offering's welcome note.
  assert.equal(await alice.page.locator('article.note h3', { hasText: 'Welcome' }).count(), 1);

  await alice.page.getByLabel('Title').fill(TITLE);
  await alice.page.getByLabel('Note', { exact: true }).fill(BODY);
  const res = await clickThrough(alice.page, alice.page.getByRole('button', { name: 'Save and publish' }));
  assert.equal(res.status(), 200);
  assert.equal(new URL(alice.page.url()).pathname, '/private/notes/');
  const link = noteOnList().locator('a.note-url');
  assert.equal(await link.getAttribute('href'), NOTE_PATH);
  assert.match(await noteOnList().textContent(), /only you can see it/);

  await visitNote(alice, 200, 'alice, its owner');
  await visitNote(anonymous, 404, 'an anonymous visitor');
  await logIn(bob.page, BOB.name, BOB.password);
  await visitNote(bob, 404, 'bob, before it is shared');
});

test('shared with bob: bob sees it, an anonymous visitor still gets 404', async () => {
  await alice.page.goto(at('/private/notes'));
  await noteOnList().getByLabel('with one user').check();
  await noteOnList().getByLabel('User name').fill(BOB.name);
  const res = await clickThrough(alice.page, noteOnList().getByRole('button', { name: 'Share', exact: true }));
  assert.equal(res.status(), 200);
  assert.match(await noteOnList().locator('ul.shares').textContent(), /Shared with bob \(view\)/);

  await visitNote(bob, 200, 'bob, shared with him');
  await visitNote(anonymous, 404, 'an anonymous visitor, shared with bob only');
});

test('shared with everyone: the anonymous visitor sees it too', async () => {
  await alice.page.goto(at('/private/notes'));
  await noteOnList().getByLabel('with everyone').check();
  const res = await clickThrough(alice.page, noteOnList().getByRole('button', { name: 'Share', exact: true }));
  assert.equal(res.status(), 200);
  const shares = await noteOnList().locator('ul.shares li').allTextContents();
  assert.equal(shares.length, 2, `shares listed: ${shares}`);

  await visitNote(anonymous, 200, 'an anonymous visitor, shared with everyone');
  await visitNote(bob, 200, 'bob, shared with him and everyone');
});

test('alice stops sharing: 404 again for bob and for the anonymous visitor', async () => {
  await alice.page.goto(at('/private/notes'));
  for (const label of ['everyone', 'bob']) {
    const res = await clickThrough(
      alice.page,
      noteOnList().getByRole('button', { name: `Stop sharing with ${label}` }),
    );
    assert.equal(res.status(), 200);
  }
  assert.equal(await noteOnList().locator('ul.shares').count(), 0);
  assert.match(await noteOnList().textContent(), /only you can see it/);

  await visitNote(anonymous, 404, 'an anonymous visitor, after the shares stopped');
  await visitNote(bob, 404, 'bob, after the shares stopped');
  await visitNote(alice, 200, 'alice, still');
});

test('/private/notes and a shared note at 360 px: no sideways scroll', async () => {
  await alice.page.goto(at('/private/notes'));
  let { width, why } = await pageWidth(alice.page);
  assert.ok(width <= PHONE.width, `/private/notes is ${width} px wide: ${why}`);
  await alice.page.goto(at(NOTE_PATH));
  ({ width, why } = await pageWidth(alice.page));
  assert.ok(width <= PHONE.width, `${NOTE_PATH} is ${width} px wide: ${why}`);
});
