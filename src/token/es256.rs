//! ES256 (ECDSA over P-256 with SHA-256) verification for keys a request carries (a DPoP
//! proof's `jwk`): every proof is new, so every request pays one verification, and this is the
//! whole of its cost.
//!
//! Verification handles only public values (the key, the message, the signature), so it may
//! take variable time: `u1·G + u2·Q` is computed in one pass (Shamir's trick) over width-w
//! non-adjacent forms of both scalars, with a table of odd multiples of G made once per VM
//! (affine points: cheaper additions) and one of Q made per signature. That is about 256
//! doublings and 75 additions, where two constant-time multiplications (what `p256`'s own
//! `verify` does) cost 512 doublings, 128 additions and 128 table scans. The field and point
//! arithmetic are `p256`'s; the tests check every answer against `p256`'s own verification.
//!
//! A key that keeps coming back gets a comb ([`crate::token::combs`]), used with the
//! generator's: 31 doublings and at most 64 additions.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::OnceLock;

use super::combs;

use p256::elliptic_curve::group::Group as _;
use p256::elliptic_curve::ops::{Invert as _, Reduce as _};
use p256::elliptic_curve::point::AffineCoordinates as _;
use p256::{AffinePoint, FieldBytes, ProjectivePoint, Scalar, U256};
use sha2::{Digest, Sha256};

/// Width of the non-adjacent form of the scalar that multiplies G (a table of 2^(W_G-2) points,
/// made once) and of the one that multiplies Q (2^(W_Q-2) points, made per signature).
const W_G: u32 = 7;
const W_Q: u32 = 5;
/// Digits of a 256-bit scalar's non-adjacent form (one more than its bits).
const DIGITS: usize = 257;
/// A key's comb stays projective: `p256` has no batch inversion, and 255 inversions would
/// cost more than the comb saves.
type Comb = Vec<ProjectivePoint>;
/// The generator's, made once: affine (cheaper additions).
type AffineComb = Vec<AffinePoint>;

/// Whether `signature` (r ‖ s, 64 bytes) is a valid ES256 signature of `message` by `key`.
pub fn verify(key: &p256::ecdsa::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    let Ok(signature) = p256::ecdsa::Signature::from_slice(signature) else {
        return false;
    };
    // Both in [1, n-1]: `Signature` refuses zero and values of n or more.
    let (r, s) = signature.split_scalars();
    let hash: FieldBytes = Sha256::digest(message);
    let z = <Scalar as p256::elliptic_curve::ops::Reduce<U256>>::reduce_bytes(&hash);
    // s is not zero: it has an inverse.
    let s_inv: Scalar = *s.invert_vartime();
    let u1 = z * s_inv;
    let u2 = *r * s_inv;
    let id = key_id(key);
    let comb = id.as_ref().and_then(|id| comb_of(id, key));
    let point = match &comb {
        Some(comb) => double_mul_combs(&u1, generator_comb(), &u2, comb),
        None => double_mul(&u1, &ProjectivePoint::from(*key.as_affine()), &u2),
    };
    if bool::from(point.is_identity()) {
        return false;
    }
    let x = point.to_affine().x();
    let valid = Scalar::reduce_bytes(&x) == *r;
    if let (true, None, Some(id)) = (valid, &comb, &id) {
        RECENT.with(|recent| recent.borrow_mut().sighted(id));
    }
    valid
}

/// `a·G + b·Q`.
fn double_mul(a: &Scalar, q: &ProjectivePoint, b: &Scalar) -> ProjectivePoint {
    let table_g = generator_table();
    let table_q = odd_multiples::<{ 1 << (W_Q - 2) }>(q);
    let (na, nb) = (naf(a, W_G), naf(b, W_Q));
    let top = (0..DIGITS)
        .rev()
        .find(|&i| na.get(i).is_some_and(|d| *d != 0) || nb.get(i).is_some_and(|d| *d != 0));
    let mut acc = ProjectivePoint::IDENTITY;
    let Some(top) = top else {
        return acc;
    };
    for i in (0..=top).rev() {
        acc = acc.double();
        let (da, db) = (
            na.get(i).copied().unwrap_or(0),
            nb.get(i).copied().unwrap_or(0),
        );
        if let Some(p) = table_g.get(usize::from(da.unsigned_abs() / 2)) {
            if da > 0 {
                acc += p;
            } else if da < 0 {
                acc += -*p;
            }
        }
        if let Some(p) = table_q.get(usize::from(db.unsigned_abs() / 2)) {
            if db > 0 {
                acc += p;
            } else if db < 0 {
                acc -= p;
            }
        }
    }
    acc
}

/// `a·G + b·Q` with the combs of G and Q.
fn double_mul_combs(a: &Scalar, g: &AffineComb, b: &Scalar, q: &Comb) -> ProjectivePoint {
    // Little-endian, as `combs` reads them.
    let little = |k: &Scalar| {
        let mut out: [u8; 32] = k.to_bytes().into();
        out.reverse();
        out
    };
    combs::double_mul(
        &little(a),
        g,
        &little(b),
        q,
        ProjectivePoint::IDENTITY,
        |acc| acc.double(),
        |acc, p| acc + p,
        |acc, p| acc + p,
    )
}

/// The comb of `p`.
fn comb(p: &ProjectivePoint) -> Comb {
    combs::make(*p, |b| b.double(), |a, b| a + b)
}

/// G's comb: made once.
fn generator_comb() -> &'static AffineComb {
    static COMB: OnceLock<AffineComb> = OnceLock::new();
    COMB.get_or_init(|| {
        comb(&ProjectivePoint::GENERATOR)
            .iter()
            .map(ProjectivePoint::to_affine)
            .collect()
    })
}

thread_local! {
    static RECENT: RefCell<combs::Recent<Comb>> = RefCell::new(combs::Recent::default());
}

/// The key as `combs` names it: x ‖ y.
fn key_id(key: &p256::ecdsa::VerifyingKey) -> Option<combs::KeyId> {
    key.to_encoded_point(false)
        .as_bytes()
        .get(1..)?
        .try_into()
        .ok()
}

/// The comb of `key` (`id`): kept, or made now for a key that earned it (`combs`).
fn comb_of(id: &combs::KeyId, key: &p256::ecdsa::VerifyingKey) -> Option<Rc<Comb>> {
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some(comb) = recent.get(id) {
            return Some(comb);
        }
        if !recent.earned(id) {
            return None;
        }
        recent.keep(id, || comb(&ProjectivePoint::from(*key.as_affine())))
    })
}

/// G, 3G, 5G, …: made once, kept as affine points.
fn generator_table() -> &'static [AffinePoint] {
    static TABLE: OnceLock<Vec<AffinePoint>> = OnceLock::new();
    TABLE.get_or_init(|| {
        odd_multiples::<{ 1 << (W_G - 2) }>(&ProjectivePoint::GENERATOR)
            .iter()
            .map(ProjectivePoint::to_affine)
            .collect()
    })
}

/// P, 3P, 5P, … (N points).
fn odd_multiples<const N: usize>(p: &ProjectivePoint) -> [ProjectivePoint; N] {
    let twice = p.double();
    let mut out = [*p; N];
    for i in 1..N {
        if let (Some(prev), Some(slot)) = (out.get(i - 1).copied(), out.get_mut(i)) {
            *slot = prev + twice;
        }
    }
    out
}

/// The width-`w` non-adjacent form of `k`, least significant digit first: odd digits in
/// (-2^(w-1), 2^(w-1)), at most one non-zero digit in any `w` consecutive ones.
fn naf(k: &Scalar, w: u32) -> [i8; DIGITS] {
    let bytes = k.to_bytes();
    // Little-endian 64-bit limbs, and one more for the carry of a negative digit.
    let mut n = [0u64; 5];
    for (i, limb) in n.iter_mut().take(4).enumerate() {
        let start = 32 - 8 * (i + 1);
        if let Some(chunk) = bytes.get(start..start + 8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *limb = u64::from_be_bytes(b);
        }
    }
    let window = 1u64 << w;
    let mut out = [0i8; DIGITS];
    for digit in out.iter_mut() {
        if n.iter().all(|l| *l == 0) {
            break;
        }
        if n[0] & 1 == 1 {
            let m = n[0] & (window - 1);
            if m >= window / 2 {
                // A negative digit m - 2^w: add 2^w - m.
                *digit = (m as i64 - window as i64) as i8;
                add_small(&mut n, window - m);
            } else {
                *digit = m as i8;
                n[0] -= m; // m ≤ n[0]'s low bits: no borrow
            }
        }
        shift_right(&mut n);
    }
    out
}

fn add_small(n: &mut [u64; 5], v: u64) {
    let mut carry = v;
    for limb in n.iter_mut() {
        let (sum, overflow) = limb.overflowing_add(carry);
        *limb = sum;
        carry = u64::from(overflow);
        if carry == 0 {
            break;
        }
    }
}

fn shift_right(n: &mut [u64; 5]) {
    for i in 0..5 {
        let high = n.get(i + 1).map_or(0, |next| next << 63);
        if let Some(limb) = n.get_mut(i) {
            *limb = (*limb >> 1) | high;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::{Signer as _, Verifier as _};
    use p256::ecdsa::{Signature, SigningKey};

    fn key(seed: u32) -> SigningKey {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&seed.to_be_bytes());
        bytes[31] = 1;
        SigningKey::from_bytes(&bytes.into()).unwrap()
    }

    #[test]
    fn naf_digits_rebuild_the_scalar() {
        for (i, k) in [
            Scalar::ZERO,
            Scalar::ONE,
            -Scalar::ONE,
            Scalar::from(0xdead_beef_u64),
            Scalar::from(u64::MAX) * Scalar::from(u64::MAX) * -Scalar::from(3u64),
        ]
        .iter()
        .enumerate()
        {
            for w in [W_G, W_Q] {
                let digits = naf(k, w);
                let mut acc = Scalar::ZERO;
                for d in digits.iter().rev() {
                    acc = acc.double();
                    let v = Scalar::from(u64::from(d.unsigned_abs()));
                    acc += if *d < 0 { -v } else { v };
                }
                assert_eq!(acc, *k, "{i} w={w}");
                let bound = 1i16 << (w - 1);
                assert!(digits
                    .iter()
                    .all(|d| *d == 0 || (d % 2 != 0 && i16::from(d.abs()) < bound)));
            }
        }
    }

    #[test]
    fn combs_compute_what_the_non_adjacent_forms_compute() {
        let q = ProjectivePoint::GENERATOR * Scalar::from(0x1234_5678_9abc_u64);
        let comb = comb(&q);
        let big = Scalar::from(u64::MAX) * Scalar::from(u64::MAX) * Scalar::from(u64::MAX);
        for (a, b) in [
            (Scalar::ZERO, Scalar::ZERO),
            (Scalar::ONE, Scalar::ZERO),
            (Scalar::ZERO, Scalar::ONE),
            (-Scalar::ONE, -Scalar::ONE),
            (big, -big),
            (Scalar::from(1u64 << 63), big * big),
        ] {
            let want = double_mul(&a, &q, &b);
            assert_eq!(double_mul_combs(&a, generator_comb(), &b, &comb), want);
            assert_eq!(want, ProjectivePoint::GENERATOR * a + q * b);
        }
    }

    #[test]
    fn a_key_gets_its_comb_on_its_third_proof_and_keeps_it() {
        let sk = key(77);
        let vk = *sk.verifying_key();
        let id = key_id(&vk).unwrap();
        let sig: Signature = sk.sign(b"m");
        // Refused proofs do not count.
        for _ in 0..3 {
            assert!(!verify(&vk, b"other", &sig.to_bytes()));
        }
        assert!(comb_of(&id, &vk).is_none());
        assert!(verify(&vk, b"m", &sig.to_bytes()) && verify(&vk, b"m", &sig.to_bytes()));
        let made = comb_of(&id, &vk).expect("third: made");
        assert!(Rc::ptr_eq(&made, &comb_of(&id, &vk).expect("kept")));
        assert_eq!(made.len(), combs::POINTS);
    }

    #[test]
    fn agrees_with_p256_on_valid_and_invalid_signatures() {
        for seed in 0..40u32 {
            let sk = key(seed);
            let vk = *sk.verifying_key();
            let message = format!("proof {seed}");
            let sig: Signature = sk.sign(message.as_bytes());
            let bytes = sig.to_bytes();
            // Four times: without the key's comb (twice), making it, with it.
            for _ in 0..4 {
                assert!(verify(&vk, message.as_bytes(), &bytes), "{seed}");
            }
            assert!(vk.verify(message.as_bytes(), &sig).is_ok());
            // The same (r, n - s) verifies too, for both (ECDSA is malleable; `p256` does not
            // insist on low s either).
            let (r, s) = sig.split_scalars();
            let high = Signature::from_scalars(*r, -*s).unwrap();
            assert_eq!(
                verify(&vk, message.as_bytes(), &high.to_bytes()),
                vk.verify(message.as_bytes(), &high).is_ok()
            );
            // Another message, another key, one bit of the signature: refused by both.
            assert!(!verify(&vk, b"another", &bytes));
            assert!(!verify(
                key(seed + 1000).verifying_key(),
                message.as_bytes(),
                &bytes
            ));
            for bit in [0usize, 100, 300, 511] {
                let mut flipped = bytes.to_vec();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let ours = verify(&vk, message.as_bytes(), &flipped);
                let theirs = Signature::from_slice(&flipped)
                    .is_ok_and(|s| vk.verify(message.as_bytes(), &s).is_ok());
                assert_eq!(ours, theirs, "{seed} bit {bit}");
                assert!(!ours);
            }
        }
        let vk = *key(1).verifying_key();
        assert!(!verify(&vk, b"m", &[0u8; 64]));
        assert!(!verify(&vk, b"m", &[0xffu8; 64]));
        assert!(!verify(&vk, b"m", &[1u8; 63]));
    }
}
