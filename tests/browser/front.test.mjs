// Mantissa's default site in a real browser: Debian's headless Chromium,
// driven by playwright-core, against the real `mantissa serve` binary.
//
//   cargo build -p mantissa && (cd tests/browser && npm ci && npm test)
//
// MANTISSA_BIN names another binary (default: target/debug/mantissa);
// CHROMIUM another browser (default: /usr/bin/chromium). The 360 px
// screenshot is written under the OS temp folder; its path is printed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, CHROMIUM, PHONE, launchChromium, mantissa, pageWidth, serve, stopServer } from './harness.mjs';

// A name that must be escaped in HTML, so that the page shows it as text.
const SITE_NAME = 'Tide & Tally <test>';
const PAGE_BUDGET = 50 * 1024; // the front page and all its subresources
const MIN_TARGET = 44; // CSS px, each side of every link, button and input

let work; // temp folder: site, browser profile, screenshot
let server; // { proc, url, exited: Promise<{code, signal}>, stderr: () => string }
let browser;



/** A new context and page; console errors, page errors and CSP violations collected. */
async function openPage(options = {}) {
  const context = await browser.newContext({ viewport: PHONE, ...options });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    problems.push(`console ${m.type()}: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // Recorded by the browser itself, whether or not the page runs scripts of
  // its own (an init script is injected by the driver, outside the page's CSP).
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`);
    });
  });
  return { context, page, problems };
}


/** Every visible link, button and input smaller than MIN_TARGET in either direction. */
function smallTargets(page) {
  return page.evaluate((min) => {
    const out = [];
    for (const el of document.querySelectorAll('a[href], button, input, select, textarea, summary, [role=button]')) {
      if (el.type === 'hidden') continue;
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue; // not rendered
      // A control's label is part of its tap target (a checkbox in a 44 px row).
      const big = (b) => b.width >= min && b.height >= min;
      if ([...(el.labels ?? [])].some((l) => big(l.getBoundingClientRect()))) continue;
      if (!big(r)) {
        out.push(`${el.outerHTML.slice(0, 80)} is ${r.width.toFixed(1)}×${r.height.toFixed(1)}`);
      }
    }
    return out;
  }, MIN_TARGET);
}

before(async () => {
  assert.ok(existsSync(BIN), `${BIN} is missing: run \`cargo build -p mantissa\` first`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: \`apt-get install chromium\``);
  work = mkdtempSync(join(tmpdir(), 'mantissa-browser-'));
  const site = join(work, 'site');
  mantissa(['init', site]);
  mantissa(['--site', site, 'site', 'set', 'name', SITE_NAME]);
  server = await serve(site);
  // playwright-core gives each launch a fresh profile (--user-data-dir) in
  // the OS temp folder and removes it on close.
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stopServer(server);
  // The screenshot stays for a person to look at; the site goes.
  if (work) rmSync(join(work, 'site'), { recursive: true, force: true });
});

test('front page shows the site name in its <h1> and <title>, with a CSP and no errors', async () => {
  const { context, page, problems } = await openPage();
  try {
    const res = await page.goto(server.url);
    assert.equal(res.status(), 200);
    const csp = res.headers()['content-security-policy'];
    assert.ok(csp, 'no Content-Security-Policy header');
    assert.match(csp, /default-src 'self'/);
    assert.equal((await page.textContent('h1')).trim(), SITE_NAME);
    assert.equal(await page.title(), SITE_NAME);
    await page.waitForLoadState('load');
    assert.deepEqual(await page.evaluate(() => window.__csp), [], 'CSP violations');
    assert.deepEqual(problems, [], 'console errors');
  } finally {
    await context.close();
  }
});

test('at 360×640: no horizontal scroll, every link, button and input at least 44×44', async (t) => {
  const { context, page, problems } = await openPage({ viewport: PHONE });
  try {
    await page.goto(server.url);
    const { width, why } = await pageWidth(page);
    assert.ok(width <= PHONE.width, `page is ${width} px wide at a ${PHONE.width} px viewport; ${why}`);
    const targets = await page.evaluate(() => document.querySelectorAll('a[href], button, input').length);
    assert.ok(targets > 0, 'no link on the front page to measure');
    assert.deepEqual(await smallTargets(page), [], 'tap targets under 44×44 CSS px');

    const shot = join(work, 'front-360.png');
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`screenshot: ${shot}`);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test('without JavaScript the front page renders the same heading', async () => {
  const { context, page } = await openPage({ javaScriptEnabled: false });
  try {
    const res = await page.goto(server.url);
    assert.equal(res.status(), 200);
    assert.equal((await page.textContent('h1')).trim(), SITE_NAME);
    // and still styled
    assert.equal(await page.evaluate(() => getComputedStyle(document.body).marginTop), '0px');
  } finally {
    await context.close();
  }
});

test('front page and all its subresources weigh under 50 KB', async (t) => {
  const { context, page } = await openPage();
  try {
    const responses = [];
    page.on('response', (r) => responses.push(r));
    await page.goto(server.url, { waitUntil: 'load' });
    let total = 0;
    const lines = [];
    for (const r of responses) {
      const sizes = await r.request().sizes();
      const body = (await r.body()).length;
      const bytes = sizes.responseHeadersSize + Math.max(sizes.responseBodySize, 0);
      total += bytes;
      lines.push(`${r.status()} ${r.url()}: ${bytes} B on the wire (${body} B body)`);
    }
    for (const l of lines) t.diagnostic(l);
    t.diagnostic(`total: ${total} B over ${responses.length} responses`);
    assert.ok(responses.length >= 2, 'expected the page and its stylesheet');
    assert.ok(total < PAGE_BUDGET, `${total} B is over the ${PAGE_BUDGET} B budget`);
  } finally {
    await context.close();
  }
});

test('the stylesheet loads and applies', async () => {
  const { context, page } = await openPage();
  try {
    const css = page.waitForResponse((r) => r.request().resourceType() === 'stylesheet');
    await page.goto(server.url);
    const res = await css;
    assert.equal(res.status(), 200, `stylesheet ${res.url()}`);
    assert.match(res.headers()['content-type'] ?? '', /^text\/css/);
    const body = await page.evaluate(() => {
      const s = getComputedStyle(document.body);
      return { margin: s.marginTop, font: s.fontFamily };
    });
    assert.equal(body.margin, '0px', 'body keeps the UA default margin (8px)');
    assert.match(body.font, /system-ui/, 'body keeps the UA default font');
  } finally {
    await context.close();
  }
});

test('an unknown page answers 404 "Not found", and is phone-sized too', async () => {
  const { context, page, problems } = await openPage();
  try {
    const res = await page.goto(new URL('/no-such-page', server.url).href);
    assert.equal(res.status(), 404);
    assert.equal((await page.textContent('h1')).trim(), 'Not found');
    assert.match(await page.title(), /^Not found/);
    const { width, why } = await pageWidth(page);
    assert.ok(width <= PHONE.width, `404 page is ${width} px wide; ${why}`);
    assert.deepEqual(await smallTargets(page), [], 'tap targets under 44×44 CSS px');
    assert.deepEqual(await page.evaluate(() => window.__csp), [], 'CSP violations');
    // Chromium logs the 404 status of the document itself; nothing else.
    assert.deepEqual(problems.filter((p) => !/status of 404/.test(p)), []);
  } finally {
    await context.close();
  }
});

test('/api/ answers JSON with site.name', async () => {
  const { context } = await openPage();
  try {
    const res = await context.request.get(new URL('/api/', server.url).href);
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-type'] ?? '', /^application\/json/);
    const json = await res.json();
    assert.equal(json.site?.name, SITE_NAME);
  } finally {
    await context.close();
  }
});

// Problems this browser once found in the pages, kept as tests.

test('/favicon.ico exists, so a first visit logs no 404', async () => {
  const { context, page } = await openPage();
  try {
    const declared = await (async () => {
      await page.goto(server.url);
      return page.evaluate(() => [...document.querySelectorAll('link[rel~=icon]')].map((l) => l.href));
    })();
    if (declared.length === 0) {
      const res = await context.request.get(new URL('/favicon.ico', server.url).href);
      assert.ok(res.status() < 400,
        `no <link rel=icon> on the page and /favicon.ico answers ${res.status()} (${(await res.body()).length} B of ${res.headers()['content-type']})`);
    }
  } finally {
    await context.close();
  }
});

test('account pages at 360 px: tap targets at least 44×44', async () => {
  const { context, page } = await openPage();
  try {
    const small = [];
    for (const path of ['/login', '/reset']) {
      await page.goto(new URL(path, server.url).href);
      const { width, why } = await pageWidth(page);
      if (width > PHONE.width) small.push(`${path} is ${width} px wide; ${why}`);
      for (const s of await smallTargets(page)) small.push(`${path}: ${s}`);
    }
    assert.deepEqual(small, [], 'tap targets under 44×44 CSS px');
  } finally {
    await context.close();
  }
});

test('a long one-word site name wraps at 360 px instead of scrolling sideways', async () => {
  const site = join(work, 'long-name');
  mantissa(['init', site]);
  mantissa(['--site', site, 'site', 'set', 'name', 'Supercalifragilisticexpialidocious-Community-Association']);
  const other = await serve(site);
  const { context, page } = await openPage();
  try {
    await page.goto(other.url);
    const { width, why } = await pageWidth(page);
    assert.ok(width <= PHONE.width, `page is ${width} px wide at a ${PHONE.width} px viewport; ${why}`);
  } finally {
    await context.close();
    other.proc.kill('SIGTERM');
    await other.exited;
    rmSync(site, { recursive: true, force: true });
  }
});

test('SIGTERM stops the server with exit code 0', async () => {
  await browser.close();
  browser = null;
  server.proc.kill('SIGTERM');
  const timeout = new Promise((_, rej) => setTimeout(() => rej(new Error('still running 15 s after SIGTERM')), 15_000).unref());
  const { code, signal } = await Promise.race([server.exited, timeout]);
  assert.equal(signal, null, `killed by ${signal}; stderr:\n${server.stderr()}`);
  assert.equal(code, 0, `exit code ${code}; stderr:\n${server.stderr()}`);
});
