// Passkeys (WebAuthn) on /login and /private/settings: "Sign in with a
// passkey" and "Add a passkey". Progressive enhancement: the forms this
// drives are hidden until it finds a browser that can use passkeys; without
// it, the pages work as before (log in with a password).
//
// Each ceremony is two JSON POSTs: `action` (…/begin) answers a ceremony id
// and the options for navigator.credentials; `data-finish` (…/finish) takes
// the browser's answer and says where to go next. Both carry the form's
// CSRF token as X-CSRF-Token. Binary fields travel as base64url, as
// webauthn-rs reads and writes them.
(() => {
  'use strict';

  const fromB64url = (text) => {
    const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
    const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  };
  const toB64url = (buffer) => {
    let raw = '';
    for (const b of new Uint8Array(buffer)) raw += String.fromCharCode(b);
    return btoa(raw).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  };
  const descriptors = (list) => list && list.map((d) => ({ ...d, id: fromB64url(d.id) }));

  function creationOptions({ publicKey }) {
    return {
      publicKey: {
        ...publicKey,
        challenge: fromB64url(publicKey.challenge),
        user: { ...publicKey.user, id: fromB64url(publicKey.user.id) },
        excludeCredentials: descriptors(publicKey.excludeCredentials) || [],
      },
    };
  }

  function requestOptions({ publicKey }) {
    return {
      publicKey: {
        ...publicKey,
        challenge: fromB64url(publicKey.challenge),
        allowCredentials: descriptors(publicKey.allowCredentials) || [],
      },
    };
  }

  function newCredentialJSON(cred) {
    const r = cred.response;
    const ext = cred.getClientExtensionResults();
    return {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: toB64url(r.attestationObject),
        clientDataJSON: toB64url(r.clientDataJSON),
        transports: typeof r.getTransports === 'function' ? r.getTransports() : undefined,
      },
      extensions: ext.credProps ? { credProps: ext.credProps } : {},
    };
  }

  function assertionJSON(cred) {
    const r = cred.response;
    return {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: toB64url(r.authenticatorData),
        clientDataJSON: toB64url(r.clientDataJSON),
        signature: toB64url(r.signature),
        userHandle: r.userHandle ? toB64url(r.userHandle) : null,
      },
      extensions: {},
    };
  }

  async function post(url, token, body) {
    const res = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRF-Token': token },
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await res.json(); } catch { /* not JSON: said below */ }
    if (!res.ok) throw new Error((data && data.error) || `the server answered ${res.status}`);
    return data;
  }

  // What the browser's refusals mean, for a person.
  function explain(e) {
    switch (e && e.name) {
      case 'NotAllowedError': return 'The passkey request was cancelled, timed out, or found no passkey for this site.';
      case 'InvalidStateError': return 'This device already holds a passkey for your account.';
      case 'SecurityError': return 'This browser refuses passkeys at this address.';
      case 'NotSupportedError': return 'This browser or device cannot make this kind of passkey.';
      default: return (e && e.message) || String(e);
    }
  }

  function capitalised(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function wire(form, ceremony) {
    const token = form.querySelector('input[name="csrf_token"]').value;
    const message = form.querySelector('[data-passkey-message]');
    const button = form.querySelector('button[type="submit"]');
    const say = (text) => {
      message.textContent = text ? capitalised(text) : '';
      message.hidden = !text;
    };
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      say('');
      button.disabled = true;
      try {
        const go = await ceremony(form, token);
        window.location.assign(go);
      } catch (e) {
        say(explain(e));
        button.disabled = false;
      }
    });
    form.hidden = false;
  }

  async function signIn(form, token) {
    const begun = await post(form.action, token, {});
    const cred = await navigator.credentials.get(requestOptions(begun.options));
    const remember = document.querySelector('input[name="remember"]');
    const next = document.querySelector('input[name="next"]');
    const done = await post(form.dataset.finish, token, {
      ceremony: begun.ceremony,
      credential: assertionJSON(cred),
      remember: Boolean(remember && remember.checked),
      next: next ? next.value : '',
    });
    return done.go;
  }

  async function add(form, token) {
    const name = form.querySelector('input[name="name"]').value;
    const begun = await post(form.action, token, { name });
    const cred = await navigator.credentials.create(creationOptions(begun.options));
    const done = await post(form.dataset.finish, token, {
      ceremony: begun.ceremony,
      credential: newCredentialJSON(cred),
    });
    return done.go;
  }

  const usable = window.isSecureContext && 'PublicKeyCredential' in window && navigator.credentials;
  const signInForm = document.getElementById('passkey-sign-in');
  const addForm = document.getElementById('passkey-add');
  if (!usable) {
    const note = document.getElementById('passkey-unsupported');
    if (note && addForm) note.hidden = false;
    return;
  }
  if (signInForm) wire(signInForm, signIn);
  if (addForm) wire(addForm, add);
})();
