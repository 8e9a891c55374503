// What the browser tests share: the real `mantissa` binary (run to
// completion, or serving on a port the OS picks), Debian's Chromium, and a
// measure of how wide a page is.
//
// MANTISSA_BIN names another binary (default: mantissa in cargo's debug
// folder: $CARGO_TARGET_DIR/debug, else target/debug); NOTES_SITE_BIN the
// notes site (`mantissa` plus the testkit's notes offering, default:
// mantissa-notes-site beside it); CHROMIUM another
// browser (default: /usr/bin/chromium). `mantissa` and `serve` run BIN
// unless given another binary.

import { spawn, execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
// Relative to the checkout, as cargo reads it.
const DEBUG = resolve(here, '../..', process.env.CARGO_TARGET_DIR || 'target', 'debug');
export const BIN = process.env.MANTISSA_BIN || resolve(DEBUG, 'mantissa');
export const NOTES_SITE_BIN = process.env.NOTES_SITE_BIN || resolve(DEBUG, 'mantissa-notes-site');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const PHONE = { width: 360, height: 640 };

/** Runs `mantissa ARGS` (or `bin ARGS`) to completion (with `input` on stdin); throws with its stderr on failure. */
export function mantissa(args, input, bin = BIN) {
  return execFileSync(bin, args, { encoding: 'utf8', input: input ?? '', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** A port on 127.0.0.1 that was free a moment ago (for a server that must know its URL up front). */
export function freePort() {
  return new Promise((res, rej) => {
    const probe = createServer();
    probe.on('error', rej);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => res(port));
    });
  });
}

/**
 * Starts `mantissa serve` (or `bin serve`) — on a port the OS picks, or on
 * `listen`, and reached at `url` when given (`--url`: links in mail,
 * passkeys); resolves once its banner is complete ("Press Ctrl-C to stop."),
 * with the "Serving URL" it printed (the 127.0.0.1 address it listens on).
 */
export function serve(site, { listen = '127.0.0.1:0', url: reachedAt, bin = BIN } = {}) {
  const args = ['--site', site, 'serve', '--listen', listen, ...(reachedAt ? ['--url', reachedAt] : [])];
  const proc = spawn(bin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((res) => proc.on('exit', (code, signal) => res({ code, signal })));
  const url = new Promise((res, rej) => {
    const timer = setTimeout(
      () => rej(new Error(`no "Serving http://..." line within 30 s; stdout:\n${out}\nstderr:\n${err}`)),
      30_000,
    );
    proc.stdout.on('data', (d) => {
      out += d;
      // The banner may come in several pieces: wait for its last line.
      const m = out.match(/^Serving (http:\/\/127\.0\.0\.1:\d+\/)$/m);
      if (m && /^Press Ctrl-C to stop\.$/m.test(out)) { clearTimeout(timer); res(m[1]); }
    });
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      rej(new Error(`${bin} serve exited (${code ?? signal}) before serving; stderr:\n${err}`));
    });
    proc.on('error', (e) => { clearTimeout(timer); rej(e); });
  });
  return url.then((u) => ({ proc, url: u, exited, stdout: () => out, stderr: () => err }));
}

/** Debian's headless Chromium, with the flags this closed network needs. */
export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/** The page's width in CSS px, and the innermost elements whose content overflows their box. */
export function pageWidth(page) {
  return page.evaluate(() => {
    const over = [...document.querySelectorAll('body *')].filter((el) =>
      el.clientWidth > 0 && el.scrollWidth > el.clientWidth && getComputedStyle(el).overflowX === 'visible');
    const innermost = over.filter((el) => !over.some((o) => o !== el && el.contains(o)));
    return {
      width: document.scrollingElement.scrollWidth,
      why: innermost.map((el) =>
        `${el.outerHTML.slice(0, 60)}… has ${el.scrollWidth} px of content in a ${el.clientWidth} px box`).join('; '),
    };
  });
}

/**
 * Clicks `target` (a form's button, or one whose script navigates) and waits
 * for the page it leads to; that page's response, after redirects.
 */
export async function clickThrough(page, target) {
  const [response] = await Promise.all([page.waitForNavigation(), target.click()]);
  return response;
}

/**
 * Fills `base`'s /login like a person (with a two-factor code when given)
 * and submits it; the response of the page it lands on.
 */
export async function logInAt(page, base, who, password, code) {
  await page.goto(new URL('/login', base).href);
  await page.getByLabel('User name or email').fill(who);
  await page.getByLabel('Password', { exact: true }).fill(password);
  if (code !== undefined) await page.getByLabel(/^Two-factor code/).fill(code);
  return clickThrough(page, page.getByRole('button', { name: 'Log in' }));
}

/** Stops a server `serve` started, unless it has stopped already. */
export async function stopServer(server, signal = 'SIGKILL') {
  if (server && server.proc.exitCode === null && server.proc.signalCode === null) {
    server.proc.kill(signal);
    await server.exited;
  }
}

/** RFC 6238 TOTP: HMAC-SHA1 over the 30-s step, 6 digits; `secret` in base32. */
export function totp(secret, step) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const bytes = [];
  let bits = 0;
  let value = 0;
  for (const c of secret.replace(/[\s=]/g, '').toUpperCase()) {
    const i = alphabet.indexOf(c);
    if (i < 0) throw new Error(`${JSON.stringify(secret)} is not base32`);
    value = ((value << 5) | i) & 0xfff;
    bits += 5;
    if (bits >= 8) { bits -= 8; bytes.push((value >> bits) & 0xff); }
  }
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const h = createHmac('sha1', Buffer.from(bytes)).update(counter).digest();
  const o = h[h.length - 1] & 0xf;
  return String((h.readUInt32BE(o) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}
