// A tiny SMTP server for the browser tests: it accepts every message on
// 127.0.0.1 and keeps it, so a test can read the mail the site sends (just
// enough of RFC 5321 for a relay client: no TLS, no AUTH, no pipelining).
//
//   const sink = await smtpSink();          // sink.port
//   const mail = await sink.next((m) => m.subject === 'Hello');
//   await sink.close();

import net from 'node:net';

/** Undoes a quoted-printable body (RFC 2045): soft line breaks, then =XX bytes. */
export function decodeQuotedPrintable(text) {
  const bytes = [];
  const s = text.replace(/=\r?\n/g, '');
  for (let i = 0; i < s.length; i++) {
    const hex = s[i] === '=' ? s.slice(i + 1, i + 3) : '';
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(s[i], 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** Decodes an RFC 2047 header word (=?utf-8?Q?…?= or =?utf-8?B?…?=); plain text unchanged. */
function decodeHeader(value) {
  return value.replace(/=\?[^?]+\?([QqBb])\?([^?]*)\?=\s*/g, (_, enc, data) =>
    enc.toUpperCase() === 'B'
      ? Buffer.from(data, 'base64').toString('utf8')
      : decodeQuotedPrintable(data.replace(/_/g, ' ')));
}

/**
 * One received message: envelope (`from`, `to`), the raw `data`, its
 * headers (lower-case names, unfolded), `subject`, and `text`: the body
 * with its Content-Transfer-Encoding undone (single-part messages; for
 * multipart ones, the first text/plain part).
 */
function parse(from, to, data) {
  const split = data.search(/\r?\n\r?\n/);
  const head = split < 0 ? data : data.slice(0, split);
  let body = split < 0 ? '' : data.slice(split).replace(/^\r?\n\r?\n/, '');
  const headers = {};
  for (const line of head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const m = line.match(/^([^:\s]+):\s*(.*)$/);
    if (m) headers[m[1].toLowerCase()] = m[2];
  }
  let type = headers['content-type'] ?? 'text/plain';
  let encoding = (headers['content-transfer-encoding'] ?? '7bit').toLowerCase();
  const boundary = type.match(/boundary="?([^";]+)"?/i)?.[1];
  if (/^multipart\//i.test(type) && boundary) {
    const parts = body.split(`--${boundary}`).slice(1, -1).map((p) => parse(from, to, p.replace(/^\r?\n/, '')));
    const plain = parts.find((p) => /^text\/plain/i.test(p.headers['content-type'] ?? 'text/plain'));
    return { from, to, data, headers, subject: decodeHeader(headers.subject ?? ''), text: plain?.text ?? '' };
  }
  if (encoding === 'quoted-printable') body = decodeQuotedPrintable(body);
  else if (encoding === 'base64') body = Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
  return { from, to, data, headers, subject: decodeHeader(headers.subject ?? ''), text: body };
}

/** Starts the sink on 127.0.0.1 at a port the OS picks. */
export async function smtpSink() {
  const messages = [];
  const waiters = []; // { match, resolve }
  const sockets = new Set();

  const taken = new Set(); // messages already handed out by next()

  const deliver = (msg) => {
    messages.push(msg);
    const w = waiters.find((w) => w.match(msg));
    if (w) {
      waiters.splice(waiters.indexOf(w), 1);
      taken.add(msg);
      w.resolve(msg);
    }
  };

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // a client that hangs up is not our failure
    socket.setEncoding('utf8');
    let buffer = '';
    let inData = false;
    let from = null;
    let to = [];
    let lines = [];
    const reply = (text) => socket.write(`${text}\r\n`);
    reply('220 127.0.0.1 ESMTP mantissa test sink');
    socket.on('data', (chunk) => {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).replace(/\r$/, '');
        buffer = buffer.slice(nl + 1);
        if (inData) {
          if (line === '.') {
            inData = false;
            deliver(parse(from, to, lines.join('\r\n')));
            from = null;
            to = [];
            lines = [];
            reply('250 2.0.0 OK: queued');
          } else {
            lines.push(line.startsWith('..') ? line.slice(1) : line); // dot-stuffing
          }
          continue;
        }
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO') {
          reply('250-127.0.0.1 greets you');
          reply('250-8BITMIME');
          reply('250 SIZE 10485760');
        } else if (verb === 'HELO') {
          reply('250 127.0.0.1');
        } else if (/^MAIL FROM:/i.test(line)) {
          from = line.match(/<([^>]*)>/)?.[1] ?? '';
          to = [];
          reply('250 2.1.0 OK');
        } else if (/^RCPT TO:/i.test(line)) {
          if (from === null) {
            reply('503 5.5.1 MAIL first');
          } else {
            to.push(line.match(/<([^>]*)>/)?.[1] ?? '');
            reply('250 2.1.5 OK');
          }
        } else if (verb === 'DATA') {
          if (to.length === 0) {
            reply('503 5.5.1 RCPT first');
          } else {
            inData = true;
            reply('354 End data with <CR><LF>.<CR><LF>');
          }
        } else if (verb === 'RSET') {
          from = null;
          to = [];
          reply('250 2.0.0 OK');
        } else if (verb === 'NOOP') {
          reply('250 2.0.0 OK');
        } else if (verb === 'QUIT') {
          reply('221 2.0.0 Bye');
          socket.end();
        } else {
          reply('502 5.5.2 Command not implemented');
        }
      }
    });
  });
  await new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', res);
  });

  return {
    port: server.address().port,
    /** Every message received so far, oldest first. */
    messages,
    /**
     * The first message not handed out before (already received or still
     * to come) that `match` accepts; rejects after `timeoutMs`, listing
     * what did arrive.
     */
    next(match, timeoutMs = 15_000) {
      const seen = messages.find((m) => !taken.has(m) && match(m));
      if (seen) {
        taken.add(seen);
        return Promise.resolve(seen);
      }
      return new Promise((resolve, reject) => {
        const w = { match, resolve: (m) => { clearTimeout(timer); resolve(m); } };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          const got = messages.map((m) => `${m.to.join(',')}: ${m.subject}`).join('; ') || 'none';
          reject(new Error(`no such mail within ${timeoutMs} ms; received: ${got}`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((res) => server.close(() => res()));
    },
  };
}
