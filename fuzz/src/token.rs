//! Target `token`: the parsers of the secrets' texts — join tokens, admin tokens, host
//! credentials, bare secrets, CA digests and secret hashes (from text and from JSON, as
//! `control.json`, `admin.toml` and the API carry them) — and the agent's reading of its
//! credential file, `control.json`.
//!
//! Input: a kind byte, then the text (or the file). Invariants: what parses writes out
//! (`expose`/`Display`) as a text that parses to the same value; an error never quotes the
//! secret part of the text it refused (whatever follows the first `-`); `control.json` of any
//! content gives a link, none, or an error, never a panic.

use std::fmt::Display;
use std::str::FromStr;

use wgmesh_config::token::{AdminToken, CaDigest, HostCredential, JoinToken, Secret, SecretHash};
use wgmesh_config::ControlSection;
use wgmesh_overlay::agent::control_link::load_credential_file;

use crate::api::join_token;

const CONTROL_URL: &str = "https://198.18.0.1:8443";

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&kind, text)) = data.split_first() else {
        return;
    };
    if kind % 8 == 7 {
        credential_file(text);
        return;
    }
    let text = String::from_utf8_lossy(text);
    match kind % 8 {
        0 => round_trip::<JoinToken>(&text, JoinToken::expose),
        1 => round_trip::<AdminToken>(&text, AdminToken::expose),
        2 => round_trip::<HostCredential>(&text, HostCredential::expose),
        3 => round_trip::<Secret>(&text, Secret::expose),
        4 => round_trip::<CaDigest>(&text, CaDigest::to_string),
        5 => round_trip::<SecretHash>(&text, SecretHash::to_string),
        _ => {
            if let Ok(d) = serde_json::from_str::<CaDigest>(&text) {
                let back = serde_json::to_string(&d).expect("a digest serialises");
                assert_eq!(serde_json::from_str::<CaDigest>(&back).ok(), Some(d));
            }
            if let Ok(h) = serde_json::from_str::<SecretHash>(&text) {
                let back = serde_json::to_string(&h).expect("a hash serialises");
                assert!(serde_json::from_str::<SecretHash>(&back).is_ok_and(|b| b.ct_eq(&h)));
            }
        }
    }
}

/// What the agent makes of `control.json` holding `bytes`.
fn credential_file(bytes: &[u8]) {
    let file = crate::scratch_file();
    std::fs::write(file.path(), bytes).expect("credential file");
    let control = ControlSection {
        url: CONTROL_URL.parse().expect("url"),
        join_token: None,
    };
    let _ = load_credential_file(file.path(), &control, "host-a");
}

fn round_trip<T>(text: &str, write: fn(&T) -> String)
where
    T: FromStr + PartialEq,
    T::Err: Display,
{
    match text.parse::<T>() {
        Ok(value) => {
            let written = write(&value);
            let back = written.parse::<T>().ok();
            assert!(
                back.is_some_and(|b| b == value),
                "a parsed text does not round-trip"
            );
        }
        Err(e) => {
            let message = e.to_string();
            // (A secret that also stands in the prefix may show through the quoted prefix of
            // an unsupported version, `WGMA000…-000…`: not the secret's doing.)
            if let Some((prefix, secret)) = text.trim().split_once('-') {
                let secret_like = secret.len() >= 16
                    && !prefix.contains(secret)
                    && secret
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                assert!(
                    !(secret_like && message.contains(secret)),
                    "an error quotes the secret it refused: {message}"
                );
            }
        }
    }
}

/// Seeds: one valid text of each kind, and near misses.
pub fn seeds() -> Vec<Vec<u8>> {
    let token = join_token().expose();
    let admin = AdminToken::from_secret(Secret::from_bytes([7; 32])).expose();
    let host = HostCredential::from_secret(Secret::from_bytes([8; 32])).expose();
    let secret = Secret::from_bytes([5; 32]).expose();
    let digest = join_token().ca_digest.to_string();
    let hash = Secret::from_bytes([5; 32]).hash().to_string();
    let with = |kind: u8, text: &str| [&[kind][..], text.as_bytes()].concat();
    vec![
        with(0, &token),
        with(0, &format!("  {token}\n")),
        with(0, &admin),
        with(0, &token.replace("WGM1", "WGM2")),
        with(1, &admin),
        with(1, &host),
        with(2, &host),
        with(3, &secret),
        with(4, &digest),
        with(4, &digest.to_uppercase()),
        with(5, &hash),
        with(6, &format!("\"{digest}\"")),
        with(6, &format!("\"{hash}\"")),
        with(
            7,
            &serde_json::json!({
                "version": "1",
                "url": CONTROL_URL,
                "ca_digest": digest,
                "name": "host-a",
                "credential": host,
                "joined": true,
            })
            .to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_credential_file_is_a_joined_link() {
        let seed = seeds().pop().expect("seeds");
        let path = tempfile::NamedTempFile::new().expect("file");
        std::fs::write(path.path(), &seed[1..]).expect("write");
        let control = ControlSection {
            url: CONTROL_URL.parse().expect("url"),
            join_token: None,
        };
        let found = load_credential_file(path.path(), &control, "host-a").expect("readable");
        assert_eq!(found, Some(true));
    }
}
