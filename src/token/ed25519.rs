//! Ed25519 verification for keys a request carries (a DPoP proof's `jwk`), RFC 8032's strict
//! form, exactly as `ed25519_dalek`'s `verify_strict`: `s` canonical, `R` a valid encoding,
//! neither `R` nor the key of small order, and `[s]B − [k]A` encoding to `R`'s bytes.
//!
//! A key that keeps coming back gets a comb of `−A` ([`crate::token::combs`]), used with the
//! base point's: 31 doublings and at most 64 additions instead of about 253 and 80, and no
//! decompression of the key. Until then (and for a key of small order, which never verifies)
//! `ed25519_dalek` verifies. The tests check every answer against `ed25519_dalek`.

use std::cell::RefCell;
use std::sync::OnceLock;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::traits::Identity as _;
use curve25519_dalek::Scalar;
use sha2::{Digest, Sha512};

use super::combs;

type Comb = Vec<EdwardsPoint>;

/// Why a signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The key is not a valid encoding of a point.
    Key,
    /// The signature does not verify (or is not 64 bytes).
    Signature,
}

/// Whether `signature` (R ‖ s) is a valid Ed25519 signature of `message` by `key`.
pub fn verify(key: &[u8; 32], message: &[u8], signature: &[u8]) -> Result<(), Refused> {
    let mut id: combs::KeyId = [0; 64];
    if let Some(head) = id.get_mut(..32) {
        head.copy_from_slice(key);
    }
    let kept = RECENT.with(|r| r.borrow_mut().get(&id));
    let comb = match kept {
        Some(comb) => comb,
        None => {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| Refused::Key)?;
            let point = vk.to_edwards();
            let made = RECENT.with(|r| {
                let mut r = r.borrow_mut();
                // A key of small order never verifies: never a comb.
                (r.earned(&id) && !point.is_small_order())
                    .then(|| r.keep(&id, || comb_of(&-point)))
                    .flatten()
            });
            match made {
                Some(comb) => comb,
                None => {
                    let sig = ed25519_dalek::Signature::from_slice(signature)
                        .map_err(|_| Refused::Signature)?;
                    vk.verify_strict(message, &sig)
                        .map_err(|_| Refused::Signature)?;
                    RECENT.with(|r| r.borrow_mut().sighted(&id));
                    return Ok(());
                }
            }
        }
    };
    if with_comb(key, &comb, message, signature) {
        Ok(())
    } else {
        Err(Refused::Signature)
    }
}

/// `verify_strict`'s checks for a key of `comb` (the comb of `−A`: the key decoded and not of
/// small order).
fn with_comb(key: &[u8; 32], comb: &Comb, message: &[u8], signature: &[u8]) -> bool {
    let Ok(signature) = <&[u8; 64]>::try_from(signature) else {
        return false;
    };
    let (mut r, mut s) = ([0u8; 32], [0u8; 32]);
    r.copy_from_slice(signature.get(..32).unwrap_or(&[0; 32]));
    s.copy_from_slice(signature.get(32..).unwrap_or(&[0; 32]));
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
        return false;
    };
    match CompressedEdwardsY(r).decompress() {
        Some(point) if !point.is_small_order() => {}
        _ => return false,
    }
    let mut h = Sha512::new();
    h.update(r);
    h.update(key);
    h.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    double_mul_combs(&s, base_comb(), &k, comb)
        .compress()
        .to_bytes()
        == r
}

/// `a·B + b·P` with the combs of B and P. (`curve25519_dalek` keeps its doubling to itself:
/// the unified addition doubles too.)
fn double_mul_combs(a: &Scalar, b_comb: &Comb, b: &Scalar, p_comb: &Comb) -> EdwardsPoint {
    combs::double_mul(
        &a.to_bytes(),
        b_comb,
        &b.to_bytes(),
        p_comb,
        EdwardsPoint::identity(),
        |acc| acc + acc,
        |acc, p| acc + p,
        |acc, p| acc + p,
    )
}

/// The comb of `p`.
fn comb_of(p: &EdwardsPoint) -> Comb {
    combs::make(*p, |b| b + b, |a, b| a + b)
}

/// The base point's comb: made once.
fn base_comb() -> &'static Comb {
    static COMB: OnceLock<Comb> = OnceLock::new();
    COMB.get_or_init(|| comb_of(&ED25519_BASEPOINT_POINT))
}

thread_local! {
    static RECENT: RefCell<combs::Recent<Comb>> = RefCell::new(combs::Recent::default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// Ours and `ed25519_dalek`'s answer, for a key that has its comb.
    fn both(vk: &[u8; 32], message: &[u8], signature: &[u8]) -> (bool, bool) {
        let theirs = ed25519_dalek::VerifyingKey::from_bytes(vk).is_ok_and(|k| {
            ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify_strict(message, &s).is_ok())
        });
        (verify(vk, message, signature).is_ok(), theirs)
    }

    #[test]
    fn combs_compute_what_scalar_multiplication_computes() {
        let p = ED25519_BASEPOINT_POINT * Scalar::from(0x1234_5678_9abc_u64);
        let comb = comb_of(&p);
        let big = Scalar::from(u64::MAX) * Scalar::from(u64::MAX) * Scalar::from(u64::MAX);
        for (a, b) in [
            (Scalar::ZERO, Scalar::ZERO),
            (Scalar::ONE, Scalar::ZERO),
            (Scalar::ZERO, Scalar::ONE),
            (-Scalar::ONE, -Scalar::ONE),
            (big, -big),
        ] {
            assert_eq!(
                double_mul_combs(&a, base_comb(), &b, &comb),
                ED25519_BASEPOINT_POINT * a + p * b
            );
        }
    }

    #[test]
    fn agrees_with_ed25519_dalek_with_and_without_the_comb() {
        for seed in 0..24u8 {
            let sk = key(seed);
            let vk = sk.verifying_key().to_bytes();
            let message = format!("proof {seed}");
            let sig = sk.sign(message.as_bytes()).to_bytes();
            // Without the key's comb (twice), making it, with it.
            for _ in 0..4 {
                assert_eq!(both(&vk, message.as_bytes(), &sig), (true, true), "{seed}");
            }
            assert!(RECENT
                .with(|r| r.borrow_mut().get(&{
                    let mut id = [0; 64];
                    id[..32].copy_from_slice(&vk);
                    id
                }))
                .is_some());
            let mut cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
                (b"another".to_vec(), sig.to_vec()),
                (message.clone().into_bytes(), sig[..63].to_vec()),
                (
                    message.clone().into_bytes(),
                    [sig.to_vec(), vec![0]].concat(),
                ),
            ];
            for bit in [0usize, 100, 255, 256, 300, 508, 511] {
                let mut flipped = sig.to_vec();
                flipped[bit / 8] ^= 1 << (bit % 8);
                cases.push((message.clone().into_bytes(), flipped));
            }
            // s + l: the same scalar, not canonical (refused by the strict check).
            // l = 2^252 + 27742317777372353535851937790883648493, little-endian.
            const L: [u8; 32] = [
                0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
                0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ];
            assert_eq!(Scalar::from_bytes_mod_order(L), Scalar::ZERO);
            let s = Scalar::from_canonical_bytes(sig[32..].try_into().unwrap()).unwrap();
            let mut plus_l = [0u8; 32];
            let mut carry = 0u16;
            for (i, out) in plus_l.iter_mut().enumerate() {
                let v = u16::from(s.as_bytes()[i]) + u16::from(L[i]) + carry;
                *out = v as u8;
                carry = v >> 8;
            }
            if carry == 0 {
                cases.push((
                    message.clone().into_bytes(),
                    [&sig[..32], &plus_l[..]].concat(),
                ));
            }
            // R of small order (the identity's encoding).
            let mut identity_r = sig.to_vec();
            identity_r[..32].copy_from_slice(&CompressedEdwardsY::identity().to_bytes());
            cases.push((message.clone().into_bytes(), identity_r));
            for (m, s) in &cases {
                let (ours, theirs) = both(&vk, m, s);
                assert_eq!(ours, theirs, "{seed} {s:?}");
                assert!(!ours);
            }
        }
    }

    #[test]
    fn small_order_and_invalid_keys_never_verify_nor_get_a_comb() {
        let identity = CompressedEdwardsY::identity().to_bytes();
        let sig = [0u8; 64];
        for _ in 0..5 {
            assert_eq!(verify(&identity, b"m", &sig), Err(Refused::Signature));
        }
        let mut id = [0; 64];
        id[..32].copy_from_slice(&identity);
        assert!(RECENT.with(|r| r.borrow_mut().get(&id)).is_none());
        // Not a point: y = 2 has no x on the curve.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        assert_eq!(verify(&bad, b"m", &sig), Err(Refused::Key));
        assert!(ed25519_dalek::VerifyingKey::from_bytes(&bad).is_err());
    }
}
