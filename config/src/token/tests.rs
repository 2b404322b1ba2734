//! Tests of the token, credential and digest formats, and that secrets are never shown.

use super::*;

const CA_DER: &[u8] = b"\x30\x82\x01\x0anot really a certificate";
/// SHA-256 of `CA_DER`, from `printf '\x30\x82\x01\x0anot really a certificate' | sha256sum`.
const CA_HEX: &str = "9d312c26526358fdc6e256e66ce8657f3a9a2e15f196ec3f882b768c52385ff7";
const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

fn token_text() -> String {
    format!("WGM1-{}-{SECRET}", CaDigest::of(CA_DER))
}

#[test]
fn join_token_round_trips() {
    let token = JoinToken::generate(CA_DER);
    let text = token.to_string();
    assert_eq!(text.len(), 113);
    assert!(text.starts_with("WGM1-"), "{text}");
    let parsed: JoinToken = text.parse().unwrap();
    assert_eq!(parsed, token);
    assert_eq!(parsed.secret_hash(), token.secret_hash());
    assert!(parsed.ca_digest.matches(CA_DER));
    assert!(!parsed.ca_digest.matches(b"another certificate"));
    // Trailing newline of a token file, uppercase hex.
    let upper = format!(
        "WGM1-{}-{SECRET}\n",
        CaDigest::of(CA_DER).to_string().to_uppercase()
    );
    let parsed: JoinToken = upper.parse().unwrap();
    assert_eq!(parsed.to_string(), token_text());
    assert_eq!(parsed.secret.as_bytes()[..4], [0, 1, 2, 3]);
    // Two generated tokens differ.
    assert_ne!(JoinToken::generate(CA_DER), token);
}

#[test]
fn secrets_with_dashes_parse() {
    // 0xfb 0xef 0xbe ... encodes to "----" in base64url.
    let secret = Secret::from_bytes([0xfb; SECRET_LEN]);
    let token = JoinToken {
        ca_digest: CaDigest::of(CA_DER),
        secret,
    };
    let text = token.to_string();
    assert!(text[70..].contains('-'), "{text}");
    assert_eq!(text.parse::<JoinToken>().unwrap(), token);
}

#[track_caller]
fn join_error(text: &str, needle: &str) -> TokenError {
    let err = text.parse::<JoinToken>().expect_err(text);
    let shown = err.to_string();
    assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
    // Never echo the secret (or any of the input) back.
    if text.len() > 8 {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(&SECRET[..10]), "{shown}");
    }
    err
}

#[test]
fn every_malformed_join_token_says_what_is_wrong() {
    let digest = CaDigest::of(CA_DER).to_string();
    assert!(matches!(
        join_error("  \n", "the join token is empty"),
        TokenError::Empty { .. }
    ));
    join_error(
        &format!("SWMTKN-1-{digest}-{SECRET}"),
        "not a wgmesh join token (expected WGM1-<64 hex characters>-<43 base64url characters>)",
    );
    join_error("hello", "not a wgmesh join token (expected WGM1-");
    join_error(
        &format!("wgm1-{digest}-{SECRET}"),
        "not a wgmesh join token",
    );
    join_error(
        &format!("WGM2-{digest}-{SECRET}"),
        "join token format WGM2 is not supported; this wgmesh reads WGM1 tokens",
    );
    join_error(
        &format!("WGMA1-{SECRET}"),
        "this is a wgmesh admin token, not a join token",
    );
    join_error(
        &format!("WGMH1-{SECRET}"),
        "this is a wgmesh host credential, not a join token",
    );
    join_error(
        "WGM1",
        "CA digest is not 64 hex characters (found 0 characters)",
    );
    join_error(
        &format!("WGM1-{}-{SECRET}", &digest[..63]),
        "CA digest is not 64 hex characters (found 63 characters)",
    );
    join_error(
        &format!("WGM1-{digest}0-{SECRET}"),
        "CA digest is not 64 hex characters (found 65 characters)",
    );
    join_error(
        &format!("WGM1-{}g-{SECRET}", &digest[..63]),
        "CA digest is not 64 hex characters (character 64 is not a hex digit)",
    );
    join_error(
        &format!("WGM1-{}é-{SECRET}", &digest[..63]),
        "character 64 is not a hex digit",
    );
    join_error(&format!("WGM1-{digest}"), "the join token has no secret");
    join_error(
        &format!("WGM1-{digest}-"),
        "the secret is not 43 base64url characters (found 0 characters",
    );
    join_error(
        &format!("WGM1-{digest}-{}", &SECRET[..42]),
        "found 42 characters; is the token truncated",
    );
    join_error(&format!("WGM1-{digest}-{SECRET}="), "found 44 characters");
    // Standard base64's '+' and '/' are not base64url.
    let plus = format!("+{}", &SECRET[1..]);
    join_error(
        &format!("WGM1-{digest}-{plus}"),
        "the secret is not base64url",
    );
    let space = format!("{} {}", &SECRET[..20], &SECRET[21..]);
    join_error(
        &format!("WGM1-{digest}-{space}"),
        "the secret is not base64url",
    );
    // Non-canonical: the last character carries bits beyond the 32 bytes.
    let last = format!("{}9", &SECRET[..42]);
    join_error(
        &format!("WGM1-{digest}-{last}"),
        "the secret is not base64url",
    );
}

#[test]
fn debug_never_shows_secrets() {
    let token: JoinToken = token_text().parse().unwrap();
    let shown = format!("{token:?}");
    assert_eq!(
        shown,
        format!(
            "JoinToken {{ ca_digest: CaDigest({}), secret: Secret(<redacted>) }}",
            token.ca_digest
        )
    );
    assert!(!shown.contains(SECRET));
    let admin = AdminToken::generate();
    assert_eq!(format!("{admin:?}"), "AdminToken(<redacted>)");
    let host = HostCredential::generate();
    assert_eq!(format!("{host:?}"), "HostCredential(<redacted>)");
    assert_eq!(format!("{:?}", Secret::generate()), "Secret(<redacted>)");
    let hash = token.secret_hash();
    assert_eq!(
        format!("{hash:?}"),
        format!("SecretHash({}…)", hash.short())
    );
    assert_eq!(hash.short().len(), 12);
}

#[test]
fn hashes_are_stable_sha256_of_the_raw_secret() {
    let token: JoinToken = token_text().parse().unwrap();
    // sha256 of bytes 0..=31: `python3 -c 'import hashlib;print(hashlib.sha256(bytes(range(32))).hexdigest())'`.
    let expected = "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd";
    assert_eq!(token.secret_hash().to_string(), expected);
    assert_eq!(token.secret_hash(), expected.parse().unwrap());
    assert_eq!(CaDigest::of(CA_DER).to_string(), CA_HEX);
    let admin: AdminToken = format!("WGMA1-{SECRET}").parse().unwrap();
    assert_eq!(admin.hash(), token.secret_hash());
    assert!(admin.hash().ct_eq(&token.secret_hash()));
    assert_eq!(SecretHash::of(token.secret.as_bytes()), token.secret_hash());
    assert_ne!(admin.hash(), HostCredential::generate().hash());
    let json = serde_json_like(&token.secret_hash());
    assert_eq!(json, expected);
}

/// Serde goes through the hex string (checked without a JSON dependency).
fn serde_json_like(hash: &SecretHash) -> String {
    String::from(*hash)
}

#[test]
fn constant_time_eq_compares_bytes() {
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"bbc"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
}

#[test]
fn admin_and_host_credentials_round_trip_and_reject_each_other() {
    let admin = AdminToken::generate();
    let text = admin.expose();
    assert_eq!(text.len(), 49);
    assert!(text.starts_with("WGMA1-"), "{text}");
    assert_eq!(format!("{text}\n").parse::<AdminToken>().unwrap(), admin);

    let host = HostCredential::generate();
    let text = host.expose();
    assert!(text.starts_with("WGMH1-"), "{text}");
    assert_eq!(text.parse::<HostCredential>().unwrap(), host);

    let err = host.expose().parse::<AdminToken>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "this is a wgmesh host credential, not an admin token"
    );
    let err = token_text().parse::<HostCredential>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "this is a wgmesh join token, not a host credential"
    );
    let err = "".parse::<AdminToken>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "the admin token is empty (expected WGMA1-<43 base64url characters>)"
    );
    let err = format!("Bearer {SECRET}")
        .parse::<AdminToken>()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a wgmesh admin token (expected WGMA1-<43 base64url characters>)"
    );
    let err = format!("WGMA2-{SECRET}").parse::<AdminToken>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "admin token format WGMA2 is not supported; this wgmesh reads WGMA1 tokens"
    );
    let err = format!("WGMA1-{}", &SECRET[1..])
        .parse::<AdminToken>()
        .unwrap_err();
    assert_eq!(err, TokenError::SecretLength { len: 42 });
    assert_eq!(
        "WGMA1".parse::<AdminToken>().unwrap_err(),
        TokenError::SecretLength { len: 0 }
    );
    assert!(matches!(
        "WGMA1_x".parse::<AdminToken>(),
        Err(TokenError::WrongPrefix { .. })
    ));
}

#[test]
fn ca_digest_parses_and_rejects() {
    let d = CaDigest::of(CA_DER);
    assert_eq!(d.to_string().parse::<CaDigest>().unwrap(), d);
    assert_eq!(format!("{d:?}"), format!("CaDigest({CA_HEX})"));
    assert_eq!(
        "abc".parse::<CaDigest>().unwrap_err().to_string(),
        "CA digest is not 64 hex characters (found 3 characters)"
    );
    assert_eq!(
        CaDigest::try_from(String::from(d)).unwrap().as_bytes(),
        d.as_bytes()
    );
}
