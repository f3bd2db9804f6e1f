//! Signing keys and token minting for the embedded dev issuer and the tests. It signs with
//! aws-lc-rs directly and publishes the matching JWK, so tests exercise real signatures; it is
//! never used to *verify* anything.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::alg::Alg;

/// Key material able to sign one algorithm family.
enum Material {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private key with its `kid` and default algorithm.
pub struct SigningKey {
    /// The `kid` published in the JWKS and put in token headers.
    pub kid: String,
    /// The algorithm tokens are signed with by default.
    pub alg: Alg,
    material: Material,
}

/// Key generation failed (aws-lc-rs refused).
#[derive(Debug, thiserror::Error)]
#[error("key generation failed")]
pub struct KeyGenError;

impl SigningKey {
    /// Generates a fresh key for `alg` (RSA keys are 2048-bit).
    pub fn generate(alg: Alg, kid: &str) -> Result<SigningKey, KeyGenError> {
        let material = match alg {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                Material::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyGenError)?)
            }
            Alg::ES256 => Material::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| KeyGenError)?,
            ),
            Alg::ES384 => Material::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).map_err(|_| KeyGenError)?,
            ),
            Alg::EdDSA => Material::Ed(Ed25519KeyPair::generate().map_err(|_| KeyGenError)?),
        };
        Ok(SigningKey { kid: kid.to_string(), alg, material })
    }

    /// The public JWK, with `kid`, `use: sig` and `alg`.
    pub fn jwk(&self) -> Value {
        let mut jwk = match &self.material {
            Material::Rsa(k) => {
                let p = k.public_key();
                json!({
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(p.modulus().big_endian_without_leading_zero()),
                    "e": URL_SAFE_NO_PAD.encode(p.exponent().big_endian_without_leading_zero()),
                })
            }
            Material::Ec(k) => {
                let point = k.public_key().as_ref();
                let len = (point.len() - 1) / 2;
                json!({
                    "kty": "EC",
                    "crv": if len == 32 { "P-256" } else { "P-384" },
                    "x": URL_SAFE_NO_PAD.encode(&point[1..1 + len]),
                    "y": URL_SAFE_NO_PAD.encode(&point[1 + len..]),
                })
            }
            Material::Ed(k) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(k.public_key().as_ref()),
            }),
        };
        jwk["kid"] = self.kid.clone().into();
        jwk["use"] = "sig".into();
        jwk["alg"] = self.alg.name().into();
        jwk
    }

    /// The raw RSA public key as `(n, e)` bytes; `None` for other key types.
    pub fn rsa_public_components(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match &self.material {
            Material::Rsa(k) => {
                let p = k.public_key();
                Some((
                    p.modulus().big_endian_without_leading_zero().to_vec(),
                    p.exponent().big_endian_without_leading_zero().to_vec(),
                ))
            }
            _ => None,
        }
    }

    /// Signs `input` with `alg` (which must fit the key type); `None` when it does not fit.
    pub fn sign_raw(&self, alg: Alg, input: &[u8]) -> Option<Vec<u8>> {
        let rng = SystemRandom::new();
        match (&self.material, alg) {
            (Material::Rsa(k), _) => {
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_SHA384,
                    Alg::PS512 => &signature::RSA_PSS_SHA512,
                    _ => return None,
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(enc, &rng, input, &mut sig).ok()?;
                Some(sig)
            }
            (Material::Ec(k), Alg::ES256 | Alg::ES384) => Some(k.sign(&rng, input).ok()?.as_ref().to_vec()),
            (Material::Ed(k), Alg::EdDSA) => Some(k.sign(input).as_ref().to_vec()),
            _ => None,
        }
    }

    /// A compact JWS over exactly the given header and payload JSON values.
    pub fn sign_json(&self, header: &Value, payload: &Value) -> String {
        let alg = header.get("alg").and_then(Value::as_str).and_then(Alg::from_name).unwrap_or(self.alg);
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(payload.to_string()));
        let sig = self.sign_raw(alg, input.as_bytes()).unwrap_or_default();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// A token with Asgardeo's header shape (`alg`, `kid`, `typ: at+jwt`) over `claims`.
    pub fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg.name(), "kid": self.kid, "typ": "at+jwt"});
        self.sign_json(&header, claims)
    }
}
