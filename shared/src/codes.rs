//! Pickup-code hashes (argon2id, OWASP's 19 MiB / 2 passes / 1 lane), made by the server
//! and checked by the cabinet.
//!
//! Each hash needs 19 MiB of working memory. Allocating it afresh for every hash made
//! the allocator keep the freed blocks (glibc raises its mmap threshold after the first
//! free, so later ones come from the heap and stay): a burst of 200 parcels left the
//! server at 2 GB, 2,000 got it killed for memory. The working memory is therefore
//! allocated once and reused, from a small pool (one per concurrent hash), and callers
//! bound how many hashes run at once.

use std::sync::Mutex;

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Memory cost in KiB (= blocks), passes, lanes.
const M_COST: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
const OUTPUT_LEN: usize = 32;
/// Working memories kept for reuse.
const POOL_SIZE: usize = 4;

static POOL: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

fn argon2() -> Argon2<'static> {
    let params = Params::new(M_COST, T_COST, P_COST, Some(OUTPUT_LEN)).expect("constant parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Runs `f` with a working memory from the pool (or a new one), and gives it back.
fn with_memory<R>(f: impl FnOnce(&mut [Block]) -> R) -> R {
    let taken = POOL.lock().ok().and_then(|mut p| p.pop());
    let mut blocks = taken.unwrap_or_else(|| vec![Block::default(); M_COST as usize]);
    let out = f(&mut blocks);
    if let Ok(mut p) = POOL.lock()
        && p.len() < POOL_SIZE
    {
        p.push(blocks);
    }
    out
}

fn raw(code: &str, salt: &[u8]) -> Option<[u8; OUTPUT_LEN]> {
    let mut out = [0u8; OUTPUT_LEN];
    with_memory(|blocks| argon2().hash_password_into_with_memory(code.as_bytes(), salt, &mut out, blocks)).ok()?;
    Some(out)
}

/// The PHC string of a code's hash (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
pub fn hash(code: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut buf).expect("a generated salt decodes");
    let out = raw(code, salt_bytes).expect("argon2 with valid parameters and salt cannot fail");
    let output = Output::new(&out).expect("32 bytes is a valid output length");
    format!("$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}${}${output}", salt.as_str())
}

/// Largest costs a hash with other parameters than ours may ask for (64 MiB, 8 passes,
/// 4 lanes); anything beyond is refused unchecked.
const MAX_FOREIGN_M_COST: u32 = 64 * 1024;
const MAX_FOREIGN_T_COST: u32 = 8;
const MAX_FOREIGN_P_COST: u32 = 4;

/// Whether `code` matches a PHC hash. Hashes with our parameters are checked with the
/// pooled memory; others (older parameters) the usual way.
pub fn verify(code: &str, phc: &str) -> bool {
    use argon2::PasswordVerifier;
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let ours = parsed.algorithm.as_str() == "argon2id"
        && parsed.version == Some(0x13)
        && parsed.params.get_decimal("m") == Some(M_COST)
        && parsed.params.get_decimal("t") == Some(T_COST)
        && parsed.params.get_decimal("p") == Some(P_COST);
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    if !ours || expected.len() != OUTPUT_LEN {
        // A hash arrives in the desired state: whoever could write one must not be able to
        // make the cabinet spend gigabytes or minutes on it.
        let within = |k: &str, max: u32| parsed.params.get_decimal(k).is_some_and(|v| v <= max);
        if !(within("m", MAX_FOREIGN_M_COST) && within("t", MAX_FOREIGN_T_COST) && within("p", MAX_FOREIGN_P_COST)) {
            return false;
        }
        return Argon2::default().verify_password(code.as_bytes(), &parsed).is_ok();
    }
    let mut buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut buf) else { return false };
    let Some(out) = raw(code, salt_bytes) else { return false };
    // `Output` compares in constant time.
    Output::new(&out).is_ok_and(|o| o == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_asking_for_more_than_the_bounds_is_refused_even_when_it_matches() {
        let with = |m: u32, t: u32| {
            let params = Params::new(m, t, 1, None).unwrap();
            let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            argon2::PasswordHasher::hash_password(&a, b"12345678", &SaltString::generate(&mut rand::rngs::OsRng))
                .unwrap()
                .to_string()
        };
        // Genuine hashes of the right code: at the bounds they verify, past them they are
        // refused unchecked (a desired state could otherwise ask for gigabytes).
        assert!(verify("12345678", &with(MAX_FOREIGN_M_COST, 1)));
        assert!(!verify("12345678", &with(MAX_FOREIGN_M_COST + 8, 1)));
        assert!(!verify("12345678", &with(8 * 1024, MAX_FOREIGN_T_COST + 1)));
        assert!(!verify("12345678", &hash("12345678").replace("m=19456", "m=4194304")));
    }

    #[test]
    fn a_code_verifies_only_against_its_own_hash_and_standard_hashes_still_verify() {
        let phc = hash("12345678");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("12345678", &phc));
        assert!(!verify("12345679", &phc));
        assert!(!verify("12345678", "not a hash"));
        // The same hash as the argon2 crate's own PHC path makes (interoperable).
        assert!(
            argon2::PasswordVerifier::verify_password(&argon2(), b"12345678", &PasswordHash::new(&phc).unwrap())
                .is_ok()
        );
        // A hash made elsewhere with other parameters still verifies.
        let other = argon2::PasswordHasher::hash_password(
            &Argon2::default(),
            b"87654321",
            &SaltString::generate(&mut rand::rngs::OsRng),
        )
        .unwrap()
        .to_string();
        assert!(verify("87654321", &other));
        assert!(!verify("87654320", &other));
    }
}
