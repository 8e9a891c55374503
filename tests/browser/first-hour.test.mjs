// The first hour of a new site, in a real browser, once on a desktop and
// once on a 360 px phone: a visitor finds the first-run page naming the
// administrator; the administrator sets the password from the link the
// server printed, logs in (landing on the notes application, with
// Notes, Settings, Admin and Log out in the header), sees the steps left,
// and invites someone; the invited person signs up, verifies by mail,
// lands on the notes, writes one, then changes their password, makes and
// revokes an API token and turns on two-factor log-in — every form
// ending on a page that says what happened, a refused one showing why
// beside its field — logs out, and Back shows nothing of theirs.
//
//   cargo build -p mantissa-notes-site && (cd tests/browser && npm ci && node --test first-hour.test.mjs)
//
// NOTES_SITE_BIN names another binary (default:
// $CARGO_TARGET_DIR/debug/mantissa-notes-site); CHROMIUM another browser.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CHROMIUM, NOTES_SITE_BIN, PHONE, clickThrough, launchChromium, logInAt, mantissa, pageWidth, serve, stopServer,
  totp,
} from './harness.mjs';
import { smtpSink } from './smtp-sink.mjs';

const SITE_NAME = 'Riverside Allotments';
const FROM = 'site@example.org';
const ADMIN_PASSWORD = 'admin-password-1234';
const CAROL = { name: 'carol', email: 'carol@example.org', password: 'carol-first-pass', newPassword: 'carol-second-pass' };
const DESKTOP = { width: 1280, height: 800 };

let work;
let browser;
const running = new Set(); // servers and sinks to stop in after()
const sites = []; // site folders, removed in after()

before(async () => {
  assert.ok(existsSync(NOTES_SITE_BIN), `${NOTES_SITE_BIN} is missing: run \`cargo build -p mantissa-notes-site\` first`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: \`apt-get install chromium\``);
  work = mkdtempSync(join(tmpdir(), 'mantissa-first-hour-'));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  for (const r of running) await r.stop().catch(() => {});
  // The screenshots stay for a person to look at; the sites go.
  for (const site of sites) rmSync(site, { recursive: true, force: true });
});


const h1 = async (page) => (await page.locator('h1').textContent()).trim();
const path = (page) => new URL(page.url()).pathname;
/** The line at the top of the page saying what the last form did. */
const said = async (page) => {
  const status = page.locator('main > [role=status]');
  return (await status.count()) ? (await status.textContent()).trim() : null;
};
/** The header's links and buttons, by name. */
const navNames = async (page) =>
  (await page.locator('header nav').getByRole('link').allTextContents())
    .concat(await page.locator('header nav').getByRole('button').allTextContents())
    .map((s) => s.trim());

/** The first http(s) link under `prefix` in a mail's (decoded) text. */
function linkIn(mail, prefix) {
  const m = mail.text.match(new RegExp(`https?://[^\\s"<>]*${prefix}[^\\s"<>]*`));
  assert.ok(m, `no ${prefix} link in the mail; its text:\n${mail.text}`);
  return m[0];
}

for (const [label, viewport] of [['desktop', DESKTOP], ['360 px phone', PHONE]]) {
  test(`first hour on a ${label}: a new site's first run through to an invited user using the notes`, async (t) => {
    const dir = join(work, label.replace(/\W+/g, '-'));
    sites.push(dir);
    const sink = await smtpSink();
    running.add({ stop: () => sink.close() });
    const site = (args, input) => mantissa(['--site', dir, ...args], input, NOTES_SITE_BIN);
    mantissa(['init', dir], '', NOTES_SITE_BIN);
    site(['site', 'set', 'name', SITE_NAME]);
    site(['mail', 'set', '--from', FROM, '--relay', `127.0.0.1:${sink.port}`]);
    const server = await serve(dir, { bin: NOTES_SITE_BIN });
    running.add({ stop: () => stopServer(server) });
    const at = (p) => new URL(p, server.url).href;
    const setup = server.stdout().match(/Set the administrator's password \(once\): (\S+)/);
    assert.ok(setup, `serve printed no set-up link:\n${server.stdout()}`);
    const setupLink = at(new URL(setup[1]).pathname);

    const problems = [];
    const open = async () => {
      const context = await browser.newContext({ viewport });
      const page = await context.newPage();
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      return { context, page };
    };
    /** A full-page screenshot in the temp folder, for a person to look at. */
    const shot = async (page, name) => {
      const file = join(work, `first-hour-${viewport.width}-${name}.png`);
      await page.screenshot({ path: file, fullPage: true });
      t.diagnostic(`screenshot: ${file}`);
    };
    /** On the phone, no page scrolls sideways. */
    const fits = async (page, where) => {
      if (viewport !== PHONE) return;
      const { width, why } = await pageWidth(page);
      assert.ok(width <= PHONE.width, `${where} is ${width} px wide at ${PHONE.width} px; ${why}`);
    };

    // 1. A visitor on the new site: what it is, and what its administrator does next.
    const visitor = await open();
    let res = await visitor.page.goto(server.url);
    assert.equal(res.status(), 200);
    assert.equal(await h1(visitor.page), SITE_NAME);
    const firstRun = visitor.page.locator('section.first-run');
    assert.match(await firstRun.locator('h2').textContent(), /Welcome to your new site/);
    assert.equal((await firstRun.locator('strong').first().textContent()).trim(), 'admin', 'the administrator\'s user name');
    assert.match(await firstRun.textContent(), /Set the administrator's password/);
    assert.match(await firstRun.textContent(), /Add a port with your domain/);
    assert.match(await firstRun.textContent(), /Choose how people join/);
    assert.match(await firstRun.textContent(), /Invite people/);
    assert.deepEqual(await navNames(visitor.page), ['Log in'], 'sign-up is closed on a new site');
    await fits(visitor.page, 'the first-run page');
    await shot(visitor.page, 'first-run');

    // 2. The administrator sets the password from the printed link, and logs in.
    const admin = await open();
    await admin.page.goto(setupLink);
    assert.equal(await h1(admin.page), 'Choose a password');
    await admin.page.getByLabel(/^New password/).fill(ADMIN_PASSWORD);
    res = await clickThrough(admin.page, admin.page.getByRole('button', { name: 'Set password' }));
    assert.equal(res.status(), 200);
    assert.equal(path(admin.page), '/login');
    assert.match(await said(admin.page), /^Your new password is set/);
    res = await logInAt(admin.page, server.url, 'admin', ADMIN_PASSWORD);
    assert.equal(res.status(), 200);
    assert.equal(path(admin.page), '/private/notes', 'log-in lands on the first application');
    assert.deepEqual(await navNames(admin.page), ['Notes', 'Settings', 'Admin', 'Log out']);
    assert.equal(await admin.page.locator('header nav a[aria-current=page]').textContent(), 'Notes');
    await fits(admin.page, '/private/notes');

    // The front page now shows the administrator what is left, and the
    // visitor the ordinary front page.
    await admin.page.goto(server.url);
    let steps = admin.page.locator('section.first-run li');
    assert.match(await steps.nth(0).textContent(), /Set the administrator's password — done/);
    assert.doesNotMatch(await steps.nth(2).textContent(), /— done/);
    await visitor.page.reload();
    assert.equal(await visitor.page.locator('section.first-run').count(), 0, 'visitors see the steps only until the password is set');
    assert.match(await visitor.page.locator('main').textContent(), /Notes/, 'the front page names what one can do');

    // 3. The administrator chooses invitations and invites someone.
    site(['signup', 'set', 'invitation']);
    const invitation = new URL(site(['signup', 'invite']).trim());
    await admin.page.reload();
    steps = admin.page.locator('section.first-run li');
    assert.match(await steps.nth(2).textContent(), /Choose how people join — done/);
    await fits(admin.page, 'the first-run steps');

    // 4. The invited person signs up, verifies by mail and lands on the notes.
    const carol = await open();
    const { page } = carol;
    await page.goto(at(invitation.pathname + invitation.search));
    await page.getByLabel('User name').fill(CAROL.name);
    await page.getByLabel('Email').fill(CAROL.email);
    await page.getByLabel(/^Password/).fill(CAROL.password);
    res = await clickThrough(page, page.getByRole('button', { name: 'Sign up' }));
    assert.equal(res.status(), 200);
    assert.equal(await said(page), 'We sent you a link. Follow it to activate your account.');
    const mail = await sink.next((m) => m.to.includes(CAROL.email));
    await page.goto(at(new URL(linkIn(mail, '/verify/')).pathname));
    await clickThrough(page, page.getByRole('button', { name: 'Verify my address' }));
    assert.equal(await said(page), 'Your email address is verified. Log in to start.');
    res = await logInAt(page, server.url, CAROL.name, CAROL.password);
    assert.equal(res.status(), 200);
    assert.equal(path(page), '/private/notes');
    assert.deepEqual(await navNames(page), ['Notes', 'Settings', 'Log out'], 'no Admin link for a user');
    await fits(page, 'the invited user\'s notes');

    // Using the application: the list says what the form did.
    await page.getByLabel('Title').fill('Seed order');
    await page.getByLabel('Note').fill('Broad beans, 2 packets');
    res = await clickThrough(page, page.getByRole('button', { name: 'Save and publish' }));
    assert.equal(res.status(), 200);
    assert.match(await said(page) ?? '(nothing said)', /^Note saved and published/);
    assert.equal(await page.locator('article.note h3', { hasText: 'Seed order' }).count(), 1);
    // A note without a title: the form again, with what was typed and why.
    await page.getByLabel('Note').fill('kept text');
    await page.getByLabel('Title').fill(' ');
    res = await clickThrough(page, page.getByRole('button', { name: 'Save and publish' }));
    assert.equal(res.status(), 422);
    assert.equal(await page.getByLabel('Note').inputValue(), 'kept text');
    assert.equal((await page.locator('#note-title-error').textContent()).trim(), 'A note needs a title.');

    // 5. Settings: a wrong current password is told beside its field.
    await clickThrough(page, page.locator('header').getByRole('link', { name: 'Settings' }));
    assert.equal(path(page), '/private/settings');
    await page.getByLabel('Current password').fill('not my password');
    await page.getByLabel(/^New password/).fill(CAROL.newPassword);
    res = await clickThrough(page, page.getByRole('button', { name: 'Change password' }));
    assert.equal(res.status(), 422);
    assert.equal((await page.locator('#current-error').textContent()).trim(), 'The current password is wrong.');
    assert.equal(await page.getByLabel('Current password').getAttribute('aria-invalid'), 'true');
    assert.equal(await page.getByLabel('Current password').inputValue(), '', 'a password is never sent back');
    await page.getByLabel('Current password').fill(CAROL.password);
    await page.getByLabel(/^New password/).fill(CAROL.newPassword);
    res = await clickThrough(page, page.getByRole('button', { name: 'Change password' }));
    assert.equal(res.status(), 200);
    assert.equal(path(page), '/private/settings');
    assert.equal(await said(page), 'Password changed. Your other sessions have ended.');

    // A token is shown once, in a field to select and copy.
    await page.getByLabel('Name', { exact: true }).fill('phone');
    await clickThrough(page, page.getByRole('button', { name: 'Make a token' }));
    const token = page.getByLabel(/Your new token/);
    assert.match(await token.inputValue(), /^mt_/);
    assert.equal(await token.getAttribute('readonly'), '');
    await fits(page, 'the settings with a new token');
    // Revoking it asks first.
    await clickThrough(page, page.getByRole('link', { name: 'Revoke…' }));
    assert.equal(await h1(page), 'Revoke the token \u201cphone\u201d?');
    await fits(page, 'the confirmation');
    await clickThrough(page, page.getByRole('button', { name: 'Revoke the token' }));
    assert.equal(path(page), '/private/settings');
    assert.match(await said(page), /^The token was revoked/);
    assert.equal(await page.getByRole('link', { name: 'Revoke…' }).count(), 0);

    // Two-factor set-up: a QR code beside the key, the site as issuer, and
    // a mistyped code keeps the same key.
    await clickThrough(page, page.getByRole('button', { name: 'Set up two-factor log-in' }));
    assert.equal(path(page), '/private/settings');
    assert.equal(await page.locator('.qr svg').count(), 1, 'no QR code');
    const key = (await page.locator('#two-factor ~ p code').first().textContent()).trim();
    const otpauth = await page.getByRole('link', { name: 'Open it in the app' }).getAttribute('href');
    assert.match(otpauth, new RegExp(`issuer=${encodeURIComponent(SITE_NAME).replace(/%20/g, '(%20|\\+)')}`), otpauth);
    await fits(page, 'the two-factor set-up');
    await shot(page, 'two-factor');
    await page.getByLabel('Code', { exact: true }).fill('000000');
    res = await clickThrough(page, page.getByRole('button', { name: 'Turn on' }));
    assert.equal(res.status(), 422);
    assert.match(await page.locator('#totp-code-error').textContent(), /not right/);
    assert.equal((await page.locator('#two-factor ~ p code').first().textContent()).trim(), key, 'a new key after a typo');
    await page.getByLabel('Code', { exact: true }).fill(totp(key, Math.floor(Date.now() / 30_000)));
    await clickThrough(page, page.getByRole('button', { name: 'Turn on' }));
    assert.equal(path(page), '/private/settings');
    assert.equal(await said(page), 'Two-factor log-in is on.');

    // 6. Log out: the front page says so, and Back shows nothing of hers.
    await page.goto(at('/private/notes'));
    await clickThrough(page, page.locator('header').getByRole('button', { name: 'Log out' }));
    assert.equal(path(page), '/');
    assert.equal(await said(page), 'You have logged out.');
    assert.deepEqual(await navNames(page), ['Log in']);
    await page.goBack();
    await page.waitForLoadState('load');
    const back = await page.locator('body').textContent();
    assert.doesNotMatch(back, /Seed order|Broad beans/, `Back after log-out showed her notes at ${page.url()}`);
    assert.notEqual(path(page), '/private/notes', 'Back after log-out stayed on the notes');

    await shot(page, 'logged-out');

    // 7. In dark mode the form fields are dark too, their text light.
    const dark = await browser.newContext({ viewport, colorScheme: 'dark' });
    const night = await dark.newPage();
    await night.goto(at('/login'));
    const rgb = (css) => css.match(/\d+/g).slice(0, 3).map(Number);
    const light = (css) => rgb(css).reduce((a, b) => a + b, 0) / 3;
    for (const field of [night.getByLabel('User name or email'), night.getByLabel('Password', { exact: true })]) {
      const { bg, fg } = await field.evaluate((el) => ({ bg: getComputedStyle(el).backgroundColor, fg: getComputedStyle(el).color }));
      assert.ok(light(bg) < 80, `a field's background is ${bg} in dark mode`);
      assert.ok(light(fg) > 170, `a field's text is ${fg} in dark mode`);
    }
    const body = await night.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.ok(light(body) < 80, `the page is ${body} in dark mode`);
    await dark.close();
    assert.deepEqual(problems, []);
    for (const c of [visitor, admin, carol]) await c.context.close();
  });
}
