//! A DPoP client for the tests: proofs signed with its own key for a method and URI.

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwtgate::auth::alg::Alg;
use jwtgate::auth::dpop::thumbprint;
use serde_json::{json, Value};

use super::{now, Harness, SigningKey};

/// A DPoP client (RFC 9449): its own P-256 key and a token bound to it.
pub struct DpopClient {
    pub key: SigningKey,
    pub token: String,
    /// The `alg` its proofs name.
    pub alg: &'static str,
}

pub fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

impl DpopClient {
    /// A client with its own P-256 key and a token bound to it.
    pub fn new(h: &Harness) -> DpopClient {
        DpopClient::with(h, Alg::ES256, "ES256")
    }

    /// A client whose key is of `alg`, naming it `alg_name` in its proofs (`Ed25519`, RFC 9864).
    pub fn with(h: &Harness, alg: Alg, alg_name: &'static str) -> DpopClient {
        let key = SigningKey::generate(alg, "client").unwrap();
        let mut claims = h.claims("");
        claims["cnf"] = json!({"jkt": thumbprint(&key.jwk()).unwrap()});
        DpopClient { key, token: h.key.token(&claims), alg: alg_name }
    }

    pub fn claims(&self, htm: &str, htu: &str) -> Value {
        json!({
            "htm": htm, "htu": htu, "iat": now(), "jti": format!("{:x}", rand::random::<u128>()),
            "ath": b64(digest::digest(&digest::SHA256, self.token.as_bytes()).as_ref()),
        })
    }

    pub fn proof_with(&self, header: Value, claims: Value) -> String {
        self.key.sign_json(&header, &claims)
    }

    pub fn header(&self) -> Value {
        let mut jwk = self.key.jwk();
        jwk.as_object_mut().unwrap().remove("kid");
        json!({"typ": "dpop+jwt", "alg": self.alg, "jwk": jwk})
    }

    pub fn proof(&self, htm: &str, htu: &str) -> String {
        self.proof_with(self.header(), self.claims(htm, htu))
    }
}
