//! Two-factor log-in with time-based one-time passwords (RFC 6238, the
//! codes authenticator apps show), on `totp-rs`. A code is accepted once:
//! the time step of the last accepted code is kept, so a code seen over a
//! shoulder cannot be replayed.

use totp_rs::{Algorithm, Secret, TOTP};

fn totp(secret_b32: &str, account: &str, issuer: &str) -> Option<TOTP> {
    let bytes = Secret::Encoded(secret_b32.to_string()).to_bytes().ok()?;
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        Some(issuer.to_string()),
        account.to_string(),
    )
    .ok()
}

/// A new random secret, base32.
pub fn new_secret() -> String {
    Secret::generate_secret().to_encoded().to_string()
}

/// The `otpauth://` URL an authenticator app imports.
pub fn url(secret_b32: &str, account: &str, issuer: &str) -> Option<String> {
    totp(secret_b32, account, issuer).map(|t| t.get_url())
}

/// The time step (30 s) a code is accepted for, if `code` is valid now (or
/// one step before or after, for clock drift).
pub fn check(secret_b32: &str, code: &str, now_secs: u64) -> Option<i64> {
    let t = totp(secret_b32, "x", "x")?;
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    for delta in [0i64, -1, 1] {
        let at = (now_secs as i64 + delta * 30).max(0) as u64;
        if t.generate(at) == code {
            return Some((at / 30) as i64);
        }
    }
    None
}

/// The code for `now_secs` (tests, and nothing else).
pub fn code_at(secret_b32: &str, now_secs: u64) -> Option<String> {
    totp(secret_b32, "x", "x").map(|t| t.generate(now_secs))
}

/// The QR code of `url` (an `otpauth://` URL) as an SVG element, for the
/// set-up page to show beside the key: dark modules on white, with the
/// quiet zone, scaled by the page. Made on the server, so the page needs
/// no script; none if the URL is too long for a QR code.
pub fn qr_svg(url: &str) -> Option<String> {
    let code = qrcode::QrCode::new(url.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build();
    // The renderer begins with an XML declaration, which has no place
    // inside an HTML page.
    let start = svg.find("<svg")?;
    Some(svg[start..].to_string())
}
