//! Passkeys over HTTP: added from the settings page, signing in without a
//! password or two-factor code, removed by their owner only; and the ways a
//! ceremony is refused — unreadable JSON, a challenge used twice or too
//! late, a locked account, too many attempts, a site at an IP address.
//!
//! The authenticator is a software one (below): a P-256 key that answers
//! WebAuthn's options the way a browser and a platform authenticator do,
//! with "none" attestation. tests/browser/passkeys.test.mjs does the same
//! with Chromium's virtual authenticator.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use mantissa_accounts::{Account, PasskeyChallenge};
use mantissa_store::Timestamp;
use mantissa_testkit::*;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use support::{World, world};

const ANN_PASSWORD: &str = "ann's long password";
const BOB_PASSWORD: &str = "bob's long password";

// --- A software authenticator -------------------------------------------------

fn cbor_head(out: &mut Vec<u8>, major: u8, n: usize) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=255 => out.extend_from_slice(&[m | 24, n as u8]),
        _ => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
}

fn cbor_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        cbor_head(out, 0, i as usize)
    } else {
        cbor_head(out, 1, (-1 - i) as usize)
    }
}

fn cbor_bytes(out: &mut Vec<u8>, b: &[u8]) {
    cbor_head(out, 2, b.len());
    out.extend_from_slice(b);
}

fn cbor_text(out: &mut Vec<u8>, t: &str) {
    cbor_head(out, 3, t.len());
    out.extend_from_slice(t.as_bytes());
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// One discoverable credential on one authenticator, with user
/// verification (as a phone's or laptop's screen lock gives).
struct SoftPasskey {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    credential_id: Vec<u8>,
    user_handle: String,
    origin: String,
    counter: u32,
}

impl SoftPasskey {
    /// Answers `navigator.credentials.create()`'s options: the JSON
    /// passkeys.js posts.
    fn create(origin: &str, options: &Value) -> (SoftPasskey, Value) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let mut credential_id = vec![0u8; 16];
        rng.fill(&mut credential_id).unwrap();
        let pk = &options["publicKey"];
        let rp_id = pk["rp"]["id"].as_str().unwrap();
        let point = key.public_key().as_ref();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        let mut cose = Vec::new();
        cbor_head(&mut cose, 5, 5);
        cbor_int(&mut cose, 1);
        cbor_int(&mut cose, 2); // kty: EC2
        cbor_int(&mut cose, 3);
        cbor_int(&mut cose, -7); // alg: ES256
        cbor_int(&mut cose, -1);
        cbor_int(&mut cose, 1); // crv: P-256
        cbor_int(&mut cose, -2);
        cbor_bytes(&mut cose, &point[1..33]);
        cbor_int(&mut cose, -3);
        cbor_bytes(&mut cose, &point[33..]);
        let mut auth_data = sha256(rp_id.as_bytes());
        auth_data.push(0x45); // user present, user verified, credential data
        auth_data.extend_from_slice(&0u32.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID
        auth_data.extend_from_slice(&(credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&credential_id);
        auth_data.extend_from_slice(&cose);
        let mut attestation = Vec::new();
        cbor_head(&mut attestation, 5, 3);
        cbor_text(&mut attestation, "fmt");
        cbor_text(&mut attestation, "none");
        cbor_text(&mut attestation, "attStmt");
        cbor_head(&mut attestation, 5, 0);
        cbor_text(&mut attestation, "authData");
        cbor_bytes(&mut attestation, &auth_data);
        let client_data = json!({
            "type": "webauthn.create",
            "challenge": pk["challenge"],
            "origin": origin,
            "crossOrigin": false,
        })
        .to_string();
        let id = B64URL.encode(&credential_id);
        let answer = json!({
            "id": id, "rawId": id, "type": "public-key",
            "response": {
                "attestationObject": B64URL.encode(&attestation),
                "clientDataJSON": B64URL.encode(client_data),
                "transports": ["internal"],
            },
            "extensions": { "credProps": { "rk": true } },
        });
        let soft = SoftPasskey {
            key,
            rng,
            credential_id,
            user_handle: pk["user"]["id"].as_str().unwrap().to_string(),
            origin: origin.to_string(),
            counter: 0,
        };
        (soft, answer)
    }

    /// Answers `navigator.credentials.get()`'s options.
    fn get(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        self.counter += 1;
        let mut auth_data = sha256(pk["rpId"].as_str().unwrap().as_bytes());
        auth_data.push(0x05); // user present, user verified
        auth_data.extend_from_slice(&self.counter.to_be_bytes());
        let client_data = json!({
            "type": "webauthn.get",
            "challenge": pk["challenge"],
            "origin": self.origin,
            "crossOrigin": false,
        })
        .to_string();
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&sha256(client_data.as_bytes()));
        let signature = self.key.sign(&self.rng, &signed).unwrap();
        let id = B64URL.encode(&self.credential_id);
        json!({
            "id": id, "rawId": id, "type": "public-key",
            "response": {
                "authenticatorData": B64URL.encode(&auth_data),
                "clientDataJSON": B64URL.encode(client_data),
                "signature": B64URL.encode(signature.as_ref()),
                "userHandle": self.user_handle,
            },
            "extensions": {},
        })
    }
}

// --- HTTP, as passkeys.js speaks it -------------------------------------------

/// A site with accounts ann and bob, reached at http://localhost:PORT.
fn site(per_ip: u32, per_account: u32) -> (World, String) {
    let w = world(|a| a.with_rate_limits(per_ip, per_account));
    let origin = format!("http://localhost:{}", w.server.addr.port());
    w.accounts.set_base_url(&origin);
    for (name, password) in [("ann", ANN_PASSWORD), ("bob", BOB_PASSWORD)] {
        w.accounts
            .create_user(name, None, Some(password), false)
            .unwrap();
    }
    (w, origin)
}

fn logged_in(w: &World, name: &str, password: &str) -> Visitor {
    let mut v = Visitor::default();
    let r = v.submit(
        &w.server,
        "/login",
        "/login",
        &[("who", name), ("password", password)],
    );
    assert_eq!(r.status, 303, "{name} did not log in: {}", r.text());
    v
}

/// A visitor that has loaded /login (and so has its CSRF cookie).
fn at_login(w: &World) -> Visitor {
    let mut v = Visitor::default();
    let page = v.get(&w.server, "/login");
    assert!(v.cookie("mantissa_csrf").is_some(), "{}", page.text());
    v
}

/// POSTs `body` as JSON with the visitor's cookies and CSRF token, as
/// passkeys.js does.
fn post_json(w: &World, v: &mut Visitor, path: &str, body: &str) -> Response {
    let token = v.cookie("mantissa_csrf").unwrap_or_default().to_string();
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nX-CSRF-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        w.server.addr,
        v.header(),
        body.len()
    );
    let r = w.server.send(&raw);
    v.keep(&r);
    r
}

fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", r.status, r.text()))
}

/// The error message of a refused JSON request, checking its status.
fn refused(r: &Response, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    json_of(r)["error"].as_str().unwrap().to_string()
}

/// Adds a passkey called `name` to the signed-in visitor's account.
fn add_passkey(w: &World, origin: &str, v: &mut Visitor, name: &str) -> SoftPasskey {
    let begun = post_json(
        w,
        v,
        "/private/settings/passkeys/begin",
        &json!({ "name": name }).to_string(),
    );
    assert_eq!(begun.status, 200, "{}", begun.text());
    let begun = json_of(&begun);
    let (soft, answer) = SoftPasskey::create(origin, &begun["options"]);
    let done = post_json(
        w,
        v,
        "/private/settings/passkeys/finish",
        &json!({ "ceremony": begun["ceremony"], "credential": answer }).to_string(),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(
        json_of(&done)["go"],
        "/private/settings?done=passkey-added#passkeys"
    );
    soft
}

/// Begins a sign-in: (ceremony id, options).
fn begin_sign_in(w: &World, v: &mut Visitor) -> (String, Value) {
    let r = post_json(w, v, "/login/passkey/begin", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = json_of(&r);
    (
        j["ceremony"].as_str().unwrap().to_string(),
        j["options"].clone(),
    )
}

fn finish_sign_in(w: &World, v: &mut Visitor, ceremony: &str, answer: &Value) -> Response {
    post_json(
        w,
        v,
        "/login/passkey/finish",
        &json!({ "ceremony": ceremony, "credential": answer }).to_string(),
    )
}

/// A whole sign-in with `soft`, from a new browser.
fn sign_in(w: &World, soft: &mut SoftPasskey) -> (Visitor, Response) {
    let mut v = at_login(w);
    let (ceremony, options) = begin_sign_in(w, &mut v);
    let answer = soft.get(&options);
    let r = finish_sign_in(w, &mut v, &ceremony, &answer);
    (v, r)
}

fn account_of(w: &World, name: &str) -> mantissa_store::Stored<Account> {
    let name = name.to_string();
    w.accounts
        .site()
        .store()
        .read_blocking(move |r| {
            r.query::<Account>()
                .filter(Account::username.eq(name))
                .first()
        })
        .unwrap()
        .unwrap()
}

fn change_account(w: &World, name: &str, change: impl FnOnce(&mut Account) + Send + 'static) {
    let id = account_of(w, name).id();
    w.accounts
        .site()
        .store()
        .write_blocking(move |tx| {
            let mut a = tx.get(id)?;
            change(&mut a);
            tx.update(&a)
        })
        .unwrap();
}

// --- The tests ----------------------------------------------------------------

#[test]
fn a_passkey_added_in_settings_signs_in_without_password_or_two_factor_code() {
    let (w, origin) = site(1000, 1000);
    let s = &w.server;
    let mut ann = logged_in(&w, "ann", ANN_PASSWORD);
    let page = ann.get(s, "/private/settings").text();
    assert!(
        page.contains("<h2 id=\"passkeys\">Passkeys</h2>")
            && page.contains("You have no passkeys yet.")
    );
    assert!(
        page.contains(r#"<form id="passkey-add""#) && page.contains("/passkeys.js\" defer"),
        "{page}"
    );

    // The options ask for a discoverable passkey with user verification,
    // for this site.
    let begun = json_of(&post_json(
        &w,
        &mut ann,
        "/private/settings/passkeys/begin",
        r#"{"name": "laptop"}"#,
    ));
    let pk = &begun["options"]["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["user"]["name"], "ann");
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    let (mut laptop, answer) = SoftPasskey::create(&origin, &begun["options"]);
    let done = post_json(
        &w,
        &mut ann,
        "/private/settings/passkeys/finish",
        &json!({ "ceremony": begun["ceremony"], "credential": answer }).to_string(),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    let page = ann.get(s, json_of(&done)["go"].as_str().unwrap()).text();
    assert!(page.contains("Your passkey was added."), "{page}");
    assert!(page.contains("<strong>laptop</strong>") && page.contains("not used yet"));

    // A second passkey: the first one's authenticator is excluded, and the
    // account keeps one user handle.
    let begun = json_of(&post_json(
        &w,
        &mut ann,
        "/private/settings/passkeys/begin",
        r#"{"name": "phone"}"#,
    ));
    let excluded = &begun["options"]["publicKey"]["excludeCredentials"];
    assert_eq!(excluded[0]["id"], B64URL.encode(&laptop.credential_id));
    assert_eq!(
        begun["options"]["publicKey"]["user"]["id"],
        laptop.user_handle
    );

    // Two-factor log-in on: the password alone is not enough, the passkey is.
    change_account(&w, "ann", |a| {
        a.totp_secret = Some(mantissa_accounts::totp::new_secret());
        a.totp_enabled = true;
    });
    let mut phone = Visitor::default();
    let r = phone.submit(
        s,
        "/login",
        "/login",
        &[("who", "ann"), ("password", ANN_PASSWORD)],
    );
    assert_eq!(r.status, 401);

    // Sign-in asks for any passkey of the site: no user name.
    let mut phone = at_login(&w);
    let login = phone.get(s, "/login").text();
    assert!(login.contains(r#"<form id="passkey-sign-in""#), "{login}");
    let (ceremony, options) = begin_sign_in(&w, &mut phone);
    assert_eq!(options["publicKey"]["allowCredentials"], json!([]));
    assert_eq!(options["publicKey"]["userVerification"], "required");
    assert!(options.get("mediation").is_none(), "{options}");
    let answer = laptop.get(&options);
    let r = post_json(
        &w,
        &mut phone,
        "/login/passkey/finish",
        &json!({ "ceremony": ceremony, "credential": answer, "next": "/private/notes" })
            .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["go"], "/private/notes");
    let cookie = set_cookie(&r, "mantissa_session").expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    let page = phone.get(s, "/private/settings").text();
    assert!(page.contains("Settings for ann"), "{page}");
    assert!(page.contains("last used "), "{page}");

    // Signing in while signed in gives a new session id.
    let before = ann.cookie("mantissa_session").unwrap().to_string();
    let (ceremony, options) = begin_sign_in(&w, &mut ann);
    let answer = laptop.get(&options);
    let r = finish_sign_in(&w, &mut ann, &ceremony, &answer);
    assert_eq!(r.status, 200, "{}", r.text());
    // Without a `next`, to ann's first application.
    assert_eq!(json_of(&r)["go"], "/private/notes");
    assert_ne!(ann.cookie("mantissa_session").unwrap(), before);
    assert_eq!(ann.get(s, "/private/settings").status, 200);

    // "Remember me" makes the session last 30 days.
    let mut remembered = at_login(&w);
    let (ceremony, options) = begin_sign_in(&w, &mut remembered);
    let answer = laptop.get(&options);
    let r = post_json(
        &w,
        &mut remembered,
        "/login/passkey/finish",
        &json!({ "ceremony": ceremony, "credential": answer, "remember": true }).to_string(),
    );
    assert!(
        set_cookie(&r, "mantissa_session")
            .unwrap()
            .contains(&format!("Max-Age={}", 30 * 24 * 3600))
    );
}

#[test]
fn the_script_is_a_static_file_at_a_content_hashed_url() {
    let (w, _) = site(1000, 1000);
    let page = at_login(&w);
    let login = w
        .server
        .get_with("/login", &[("Cookie", &page.header())])
        .text();
    let src = login
        .split("<script src=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a script tag on /login");
    assert!(
        src.starts_with("/static/settings/") && src.ends_with("/passkeys.js"),
        "{src}"
    );
    let r = w.server.get(src);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().contains("javascript"));
    assert!(r.text().contains("navigator.credentials.get"));
    // The page has no inline script (the CSP allows only 'self').
    assert_eq!(login.matches("<script").count(), 1);
}

#[test]
fn unreadable_json_answers_400_naming_what_was_wrong_and_changes_nothing() {
    let (w, origin) = site(1000, 1000);
    let mut ann = logged_in(&w, "ann", ANN_PASSWORD);
    let mut laptop = add_passkey(&w, &origin, &mut ann, "laptop");

    for (body, says) in [
        ("{not json", "key must be a string"),
        ("[]", "invalid length 0"),
        (r#"{"nam": "x"}"#, "missing field `name`"),
    ] {
        let r = post_json(&w, &mut ann, "/private/settings/passkeys/begin", body);
        let e = refused(&r, 400);
        assert!(
            e.starts_with("the request is not a new passkey's name: ") && e.contains(says),
            "{body}: {e}"
        );
    }
    for name in ["", "   ", &"x".repeat(101)] {
        let r = post_json(
            &w,
            &mut ann,
            "/private/settings/passkeys/begin",
            &json!({ "name": name }).to_string(),
        );
        assert_eq!(
            refused(&r, 400),
            "give the passkey a name of 1 to 100 characters"
        );
    }

    let mut v = at_login(&w);
    let (ceremony, options) = begin_sign_in(&w, &mut v);
    let answer = laptop.get(&options);
    for (body, says) in [
        ("{not json".to_string(), "key must be a string".to_string()),
        (
            json!({ "ceremony": ceremony }).to_string(),
            "missing field `credential`".into(),
        ),
        (
            json!({ "ceremony": ceremony, "credential": { "id": "x" } }).to_string(),
            "missing field `rawId`".into(),
        ),
        (
            json!({ "ceremony": ceremony, "credential": { "id": "x", "rawId": "***", "type": "public-key", "response": {} } })
                .to_string(),
            "credential.rawId: Invalid symbol 42".into(),
        ),
    ] {
        let r = post_json(&w, &mut v, "/login/passkey/finish", &body);
        let e = refused(&r, 400);
        assert!(
            e.starts_with("the request is not a passkey sign-in answer: ") && e.contains(&says),
            "{body}: {e}"
        );
        assert!(set_cookie(&r, "mantissa_session").is_none());
    }
    // None of that used up the challenge.
    let r = finish_sign_in(&w, &mut v, &ceremony, &answer);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_challenge_works_once_and_not_after_five_minutes() {
    let (w, origin) = site(1000, 1000);
    let mut ann = logged_in(&w, "ann", ANN_PASSWORD);
    let mut laptop = add_passkey(&w, &origin, &mut ann, "laptop");
    const EXPIRED: &str = "this passkey request has expired or was already used; please try again";

    // A signed answer replayed: refused.
    let mut v = at_login(&w);
    let (ceremony, options) = begin_sign_in(&w, &mut v);
    let answer = laptop.get(&options);
    assert_eq!(finish_sign_in(&w, &mut v, &ceremony, &answer).status, 200);
    let mut thief = at_login(&w);
    let r = finish_sign_in(&w, &mut thief, &ceremony, &answer);
    assert_eq!(refused(&r, 400), EXPIRED);
    // ...also with a new challenge: the signature is over the old one.
    let (fresh, _) = begin_sign_in(&w, &mut thief);
    let r = finish_sign_in(&w, &mut thief, &fresh, &answer);
    assert_eq!(
        refused(&r, 401),
        "the passkey's answer could not be verified; please try again"
    );
    assert!(set_cookie(&r, "mantissa_session").is_none());

    // A wrong answer uses the challenge up too.
    let (ceremony, options) = begin_sign_in(&w, &mut v);
    let mut forged = laptop.get(&options);
    forged["response"]["signature"] = json!(B64URL.encode([0x30, 0x06, 2, 1, 1, 2, 1, 1]));
    let r = finish_sign_in(&w, &mut v, &ceremony, &forged);
    assert_eq!(r.status, 401, "{}", r.text());
    let answer = laptop.get(&options);
    assert_eq!(
        refused(&finish_sign_in(&w, &mut v, &ceremony, &answer), 400),
        EXPIRED
    );

    // Five minutes later: refused (here, the challenge is made older).
    let (ceremony, options) = begin_sign_in(&w, &mut v);
    w.accounts
        .site()
        .store()
        .write_blocking(|tx| -> mantissa_store::Result<_> {
            for mut c in tx.query::<PasskeyChallenge>().all()? {
                c.expires = Timestamp::now();
                tx.update(&c)?;
            }
            Ok(())
        })
        .unwrap();
    let answer = laptop.get(&options);
    assert_eq!(
        refused(&finish_sign_in(&w, &mut v, &ceremony, &answer), 400),
        EXPIRED
    );
    let before = Timestamp::now();
    begin_sign_in(&w, &mut v);
    let after = Timestamp::now();
    let expires = w
        .accounts
        .site()
        .store()
        .read_blocking(|r| r.query::<PasskeyChallenge>().all())
        .unwrap();
    assert_eq!(expires.len(), 1, "expired challenges are swept away");
    let five_minutes = mantissa_accounts::CHALLENGE_LIFETIME;
    assert_eq!(five_minutes.as_secs(), 300);
    assert!(
        expires[0].expires.since(before) >= five_minutes
            && expires[0].expires.since(after) <= five_minutes
    );

    // A registration challenge is its account's: bob cannot finish ann's,
    // and his try does not use it up.
    let begun = json_of(&post_json(
        &w,
        &mut ann,
        "/private/settings/passkeys/begin",
        r#"{"name": "phone"}"#,
    ));
    let (_, answer) = SoftPasskey::create(&origin, &begun["options"]);
    let body = json!({ "ceremony": begun["ceremony"], "credential": answer }).to_string();
    let mut bob = logged_in(&w, "bob", BOB_PASSWORD);
    let r = post_json(&w, &mut bob, "/private/settings/passkeys/finish", &body);
    assert_eq!(refused(&r, 400), EXPIRED);
    let r = post_json(&w, &mut ann, "/private/settings/passkeys/finish", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(&w, &mut ann, "/private/settings/passkeys/finish", &body);
    assert_eq!(refused(&r, 400), EXPIRED);
    assert_eq!(w.accounts.passkeys("ann").blocking().unwrap().len(), 2);
    assert!(w.accounts.passkeys("bob").blocking().unwrap().is_empty());
}

#[test]
fn only_its_owner_removes_a_passkey_and_then_it_signs_in_no_more() {
    let (w, origin) = site(1000, 1000);
    let s = &w.server;
    let mut ann = logged_in(&w, "ann", ANN_PASSWORD);
    let mut laptop = add_passkey(&w, &origin, &mut ann, "laptop");
    let id = w.accounts.passkeys("ann").blocking().unwrap()[0].id;
    let remove = format!("/private/settings/passkeys/{id}/remove");

    let mut bob = logged_in(&w, "bob", BOB_PASSWORD);
    let r = bob.submit(s, "/private/settings", &remove, &[]);
    assert_eq!(r.status, 404, "{}", r.text());
    let mut anonymous = at_login(&w);
    let r = anonymous.submit(s, "/login", &remove, &[]);
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().starts_with("/login?next="));
    // An API token (even one that may write) is not the person.
    let token =
        mantissa_accounts::tokens::create(w.accounts.site(), "ann", "script", true).unwrap();
    let r = s.send(&format!(
        "POST {remove} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 404);
    let body = r#"{"name": "evil"}"#;
    let r = s.send(&format!(
        "POST /private/settings/passkeys/begin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(r.status, 404);
    assert_eq!(w.accounts.passkeys("ann").blocking().unwrap().len(), 1);

    // The settings page's button leads to a page that asks first; its
    // button removes it.
    let asked = ann.get(s, &remove);
    assert_eq!(asked.status, 200);
    assert!(
        shown(&asked.text()).contains("Remove the passkey \u{201c}laptop\u{201d}?"),
        "{}",
        asked.text()
    );
    let r = ann.submit(s, &remove, &remove, &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    let page = ann.follow(s, &r).text();
    assert!(shown(&page).contains("The passkey was removed."), "{page}");
    assert!(page.contains("You have no passkeys yet."));
    let r = ann.submit(s, "/private/settings", &remove, &[]);
    assert_eq!(r.status, 404, "removed twice");

    let (_, r) = sign_in(&w, &mut laptop);
    assert_eq!(
        refused(&r, 401),
        "this passkey is not registered on this site (it may have been removed); log in with your password"
    );
}

#[test]
fn passkey_sign_in_meets_the_same_locks_and_rate_limits_as_a_password() {
    let (w, origin) = site(1000, 3);
    let mut ann = logged_in(&w, "ann", ANN_PASSWORD);
    let mut laptop = add_passkey(&w, &origin, &mut ann, "laptop");

    change_account(&w, "ann", |a| a.locked = true);
    let (_, r) = sign_in(&w, &mut laptop);
    assert!(refused(&r, 401).contains("this account is locked"));
    change_account(&w, "ann", |a| {
        a.locked = false;
        a.status = "suspended".into();
    });
    let (_, r) = sign_in(&w, &mut laptop);
    assert_eq!(refused(&r, 401), "this account is suspended");
    change_account(&w, "ann", |a| a.status = "active".into());
    // Three attempts a minute for the account (password log-in above was
    // one): the third passkey answer is refused.
    let (_, r) = sign_in(&w, &mut laptop);
    assert_eq!(
        refused(&r, 429),
        "too many attempts; please wait a minute and try again"
    );

    // Per address: asking for a challenge counts as an attempt.
    let (w, _) = site(2, 1000);
    let mut v = at_login(&w);
    begin_sign_in(&w, &mut v);
    begin_sign_in(&w, &mut v);
    let r = post_json(&w, &mut v, "/login/passkey/begin", "{}");
    assert_eq!(
        refused(&r, 429),
        "too many attempts; please wait a minute and try again"
    );
}

#[test]
fn an_account_has_at_most_twenty_passkeys() {
    let (w, origin) = site(1000, 1000);
    let mut ann = logged_in(&w, "ann", ANN_PASSWORD);
    for i in 0..mantissa_accounts::passkeys::MAX_PASSKEYS {
        add_passkey(&w, &origin, &mut ann, &format!("key {i}"));
    }
    let r = post_json(
        &w,
        &mut ann,
        "/private/settings/passkeys/begin",
        r#"{"name": "one too many"}"#,
    );
    assert_eq!(
        refused(&r, 400),
        "an account can have at most 20 passkeys; remove one first"
    );
}

#[test]
fn a_passkey_sign_in_resets_the_failed_log_ins() {
    let (w, origin) = site(1000, 1000);
    let mut ann = logged_in(&w, "ann", ANN_PASSWORD);
    let mut laptop = add_passkey(&w, &origin, &mut ann, "laptop");
    change_account(&w, "ann", |a| a.failed_logins = 3);
    let (_, r) = sign_in(&w, &mut laptop);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(account_of(&w, "ann").failed_logins, 0);
}

#[test]
fn passkeys_are_not_offered_at_an_ip_address_and_say_why() {
    let w = world(|a| a.with_rate_limits(1000, 1000));
    w.accounts
        .create_user("ann", None, Some(ANN_PASSWORD), false)
        .unwrap();
    let s = &w.server;
    let base = w.accounts.base_url();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let mut v = at_login(&w);
    let login = v.get(s, "/login").text();
    assert!(
        !login.contains("passkey") && !login.contains("<script"),
        "{login}"
    );
    let r = post_json(&w, &mut v, "/login/passkey/begin", "{}");
    let why = format!(
        "Passkeys cannot be used at this site's address, {base}: browsers allow passkeys only at a domain name (like example.org or localhost), never at an IP address."
    );
    assert_eq!(refused(&r, 409), why);

    let mut ann = logged_in(&w, "ann", ANN_PASSWORD);
    let page = ann.get(s, "/private/settings").text();
    assert!(shown(&page).contains(&why), "{page}");
    assert!(!page.contains("passkey-add") && !page.contains("<script"));
    let r = post_json(
        &w,
        &mut ann,
        "/private/settings/passkeys/begin",
        r#"{"name": "laptop"}"#,
    );
    assert_eq!(refused(&r, 409), why);

    // Plain http is for localhost only.
    w.accounts.set_base_url("http://example.org");
    assert!(
        w.accounts
            .passkeys_available()
            .unwrap_err()
            .to_string()
            .contains("only over https (or at http://localhost)")
    );
    w.accounts.set_base_url("https://example.org");
    assert!(w.accounts.passkeys_available().is_ok());
}

/// Runs a future to completion (for the async account methods).
trait Blocking: std::future::Future + Sized {
    fn blocking(self) -> Self::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(self)
    }
}

impl<F: std::future::Future> Blocking for F {}
