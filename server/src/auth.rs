//! Signed, expiring bearer tokens, and finding them where the Phoenix client puts them.
//!
//! A token is `base64url(JSON {"sub": user, "exp": unix_secs})` + `.` + `base64url(HMAC-SHA256(key, part 1))`,
//! both parts unpadded. The MAC covers the encoded text exactly as sent, so a token is authenticated before
//! any of its content is decoded or parsed.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest user name accepted, in bytes.
pub const MAX_USER_LEN: usize = 64;

/// Longest token accepted, in bytes. A token minted here is under 300 bytes even for a 64-byte name made of
/// characters JSON must escape; anything longer is refused before any work is spent on it.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Subprotocol prefix under which the Phoenix JS client sends its `authToken`.
pub const AUTH_SUBPROTOCOL_PREFIX: &str = "base64url.bearer.phx.";

/// The btoa alphabet, accepting input with or without `=` padding.
const BTOA: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// HMAC-SHA256 key derived from the configured secret.
///
/// Holds the keyed MAC state rather than the secret itself; cloning copies that state and never re-reads the
/// secret. `Debug` prints nothing of it, so a key can sit inside a logged config.
#[derive(Clone)]
pub struct TokenKey(HmacSha256);

impl TokenKey {
    /// Derives the key from `secret`. Any length works (HMAC hashes long keys); choosing a secret with enough
    /// entropy (32 random bytes or more) is the configuration's job.
    pub fn new(secret: &[u8]) -> Self {
        Self(HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"))
    }

    /// A MAC over `data`, ready to finalize or verify.
    fn mac(&self, data: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(data);
        mac
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user the token was minted for.
    pub user: String,
    /// Expiry, in seconds since the Unix epoch; the token is valid strictly before this second.
    pub exp: u64,
    /// Rights in geofencing tenants; empty for a plain token.
    pub grants: Grants,
}

/// Rights a token grants in `geo:*` channels, on top of what every user may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Patterns of object ids the user may move: an exact id, or a prefix ending with `*` (`*` alone
    /// matches every id).
    #[serde(default, rename = "geo_move", skip_serializing_if = "Vec::is_empty")]
    pub geo_move: Vec<String>,
    /// May create, update and delete fences.
    #[serde(default, rename = "geo_admin", skip_serializing_if = "std::ops::Not::not")]
    pub geo_admin: bool,
    /// Operates money: credits wallets (on `user:<self>`) and runs bet markets (`bet:*`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator: bool,
}

impl Grants {
    /// Whether a `geo_move` pattern matches `id`.
    pub fn may_move(&self, id: &str) -> bool {
        self.geo_move.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => p == id,
        })
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token at all: wrong shape, bad base64, bad JSON or too long.
    #[error("token is malformed")]
    Malformed,
    /// The signature does not match the content under this server's key.
    #[error("token signature is invalid")]
    BadSignature,
    /// Correctly signed but past its expiry.
    #[error("token has expired")]
    Expired,
    /// The user name is empty, longer than 64 bytes, or contains control characters.
    #[error("user name must be 1 to 64 bytes of printable characters")]
    BadUser,
    /// The grants make the token longer than [`MAX_TOKEN_LEN`].
    #[error("grants make the token longer than 1024 bytes")]
    TooLong,
}

/// The signed JSON payload as written.
#[derive(Serialize)]
struct PayloadOut<'a> {
    sub: &'a str,
    exp: u64,
    #[serde(flatten)]
    grants: &'a Grants,
}

/// The signed JSON payload as read.
#[derive(Deserialize)]
struct PayloadIn {
    sub: String,
    exp: u64,
    #[serde(flatten)]
    grants: Grants,
}

/// Token text: base64url-no-pad(JSON {"sub":user,"exp":unix_secs}) + "." + base64url-no-pad(HMAC-SHA256(key, first part)).
///
/// `user` must be 1..=64 bytes of printable non-control characters (else `BadUser`). The expiry is
/// `now + ttl` rounded down to the second, so a token never outlives its `ttl`.
pub fn mint(key: &TokenKey, user: &str, ttl: Duration, now: SystemTime) -> Result<String, TokenError> {
    mint_with(key, user, &Grants::default(), ttl, now)
}

/// [`mint`] with grants; fails with `TooLong` when the token would exceed [`MAX_TOKEN_LEN`].
pub fn mint_with(
    key: &TokenKey,
    user: &str,
    grants: &Grants,
    ttl: Duration,
    now: SystemTime,
) -> Result<String, TokenError> {
    check_user(user)?;
    let exp = unix_secs(now).saturating_add(ttl.as_secs())
        + u64::from(subsec_nanos(now) + ttl.subsec_nanos() >= 1_000_000_000);
    let json = serde_json::to_vec(&PayloadOut { sub: user, exp, grants })
        .expect("serializing strings, integers and a boolean cannot fail");
    let mut token = URL_SAFE_NO_PAD.encode(json);
    let signature = key.mac(token.as_bytes()).finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    Ok(token)
}

/// Constant-time signature check (hmac's `verify_slice`), then expiry (`exp <= now` -> `Expired`).
pub fn verify(key: &TokenKey, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (payload, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if payload.is_empty() || signature.contains('.') {
        return Err(TokenError::Malformed);
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    key.mac(payload.as_bytes()).verify_slice(&signature).map_err(|_| TokenError::BadSignature)?;
    // From here on the content is ours: a failure means a bug or a changed format, not an attacker.
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let PayloadIn { sub, exp, grants } = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    check_user(&sub)?;
    if exp <= unix_secs(now) {
        return Err(TokenError::Expired);
    }
    Ok(Claims { user: sub, exp, grants })
}

/// The Phoenix JS client (1.8.16) sends `authToken` as a WebSocket subprotocol `base64url.bearer.phx.<btoa(token) with '=' stripped>`
/// next to `phoenix` (it uses btoa, i.e. the STANDARD base64 alphabet, unpadded). Find and decode it from the offered list.
///
/// The first entry with the prefix decides; it is decoded leniently (padding optional, and `-`/`_` taken
/// for `+`/`/` in case a client really uses the base64url alphabet the prefix names). Returns `None` when no
/// entry has the prefix or the first one does not decode to UTF-8 text of at most [`MAX_TOKEN_LEN`] bytes.
/// The server must answer with `phoenix`, never echo this entry: it would put the token in the response.
pub fn token_from_subprotocols(protocols: &[String]) -> Option<String> {
    let encoded = protocols.iter().find_map(|p| p.trim().strip_prefix(AUTH_SUBPROTOCOL_PREFIX))?;
    if encoded.len() > MAX_TOKEN_LEN.div_ceil(3) * 4 {
        return None;
    }
    let standard: String = encoded
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let bytes = BTOA.decode(standard).ok()?;
    String::from_utf8(bytes).ok().filter(|t| !t.is_empty())
}

/// Whether `user` is acceptable as a user name: 1..=64 bytes of printable text (see [`TokenError::BadUser`]).
pub fn valid_user(user: &str) -> bool {
    check_user(user).is_ok()
}

/// Accepts 1..=64 bytes of printable text. Control characters (newlines, NUL, escapes) would let a name
/// forge log lines or terminal output; line separators and bidi overrides would let it disguise itself as
/// another name when displayed.
fn check_user(user: &str) -> Result<(), TokenError> {
    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(is_unprintable) {
        return Err(TokenError::BadUser);
    }
    Ok(())
}

/// Characters that change how surrounding text is laid out or interpreted rather than showing as a glyph.
fn is_unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whole seconds since the Unix epoch; a clock set before 1970 counts as 0 so nothing panics.
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The fraction of the current second, in nanoseconds.
fn subsec_nanos(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T22:13:20Z.
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn key() -> TokenKey {
        TokenKey::new(b"a test secret that is long enough!")
    }

    fn btoa_unpadded(token: &str) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(token)
    }

    #[test]
    fn round_trip() {
        let token = mint(&key(), "alice", Duration::from_secs(3600), t0()).unwrap();
        let claims = verify(&key(), &token, t0()).unwrap();
        assert_eq!(claims, Claims { user: "alice".into(), exp: 1_700_003_600, grants: Grants::default() });
    }

    #[test]
    fn token_has_documented_layout() {
        let token = mint(&key(), "bob", Duration::from_secs(60), t0()).unwrap();
        let (payload, sig) = token.split_once('.').unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"sub": "bob", "exp": 1_700_000_060u64}));
        assert_eq!(URL_SAFE_NO_PAD.decode(sig).unwrap().len(), 32);
        assert!(!token.contains('='));
        assert!(!token.contains('+') && !token.contains('/'));
    }

    #[test]
    fn unicode_user_round_trips() {
        let token = mint(&key(), "Zoë 🦀 \"quoted\"", Duration::from_secs(60), t0()).unwrap();
        assert_eq!(verify(&key(), &token, t0()).unwrap().user, "Zoë 🦀 \"quoted\"");
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let token = mint(&key(), "alice", Duration::from_secs(60), t0()).unwrap();
        let (_, sig) = token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin","exp":1700000060}"#);
        assert_eq!(verify(&key(), &format!("{forged}.{sig}"), t0()), Err(TokenError::BadSignature));
        // A longer lifetime for the same user is just as forged.
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":9999999999}"#);
        assert_eq!(verify(&key(), &format!("{forged}.{sig}"), t0()), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_signature_is_bad_signature() {
        let token = mint(&key(), "alice", Duration::from_secs(60), t0()).unwrap();
        let (payload, sig) = token.split_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[0] ^= 1;
        let flipped = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(verify(&key(), &flipped, t0()), Err(TokenError::BadSignature));
        let truncated = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&raw[..16]));
        assert_eq!(verify(&key(), &truncated, t0()), Err(TokenError::BadSignature));
        let empty_sig = format!("{payload}.");
        assert_eq!(verify(&key(), &empty_sig, t0()), Err(TokenError::BadSignature));
    }

    #[test]
    fn other_key_is_bad_signature() {
        let token = mint(&key(), "alice", Duration::from_secs(60), t0()).unwrap();
        let other = TokenKey::new(b"a different secret");
        assert_eq!(verify(&other, &token, t0()), Err(TokenError::BadSignature));
    }

    #[test]
    fn expiry_boundary() {
        let token = mint(&key(), "alice", Duration::from_secs(60), t0()).unwrap();
        let just_before = t0() + Duration::from_millis(59_999);
        assert!(verify(&key(), &token, just_before).is_ok());
        assert_eq!(verify(&key(), &token, t0() + Duration::from_secs(60)), Err(TokenError::Expired));
        assert_eq!(verify(&key(), &token, t0() + Duration::from_secs(86_400)), Err(TokenError::Expired));
        let zero = mint(&key(), "alice", Duration::ZERO, t0()).unwrap();
        assert_eq!(verify(&key(), &zero, t0()), Err(TokenError::Expired));
    }

    #[test]
    fn expiry_never_exceeds_ttl() {
        let now = t0() + Duration::from_millis(700);
        let token = mint(&key(), "alice", Duration::from_millis(1_500), now).unwrap();
        // now + ttl = t0 + 2.2 s, rounded down to t0 + 2.
        assert_eq!(verify(&key(), &token, now).unwrap().exp, 1_700_000_002);
        let token = mint(&key(), "alice", Duration::from_millis(200), now).unwrap();
        assert_eq!(verify(&key(), &token, now), Err(TokenError::Expired));
    }

    #[test]
    fn garbage_is_malformed() {
        let k = key();
        let too_long = "a".repeat(MAX_TOKEN_LEN + 1);
        for bad in ["", "nodot", ".", ".abc", "abc.!!!", "a.b.c", "abc.de$f", too_long.as_str()] {
            assert_eq!(verify(&k, bad, t0()), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn validly_signed_garbage_is_malformed() {
        let k = key();
        let sign = |payload: &str| {
            let sig = k.mac(payload.as_bytes()).finalize().into_bytes();
            format!("{payload}.{}", URL_SAFE_NO_PAD.encode(sig))
        };
        let not_json = URL_SAFE_NO_PAD.encode("not json");
        assert_eq!(verify(&k, &sign(&not_json), t0()), Err(TokenError::Malformed));
        let missing_exp = URL_SAFE_NO_PAD.encode(r#"{"sub":"alice"}"#);
        assert_eq!(verify(&k, &sign(&missing_exp), t0()), Err(TokenError::Malformed));
        assert_eq!(verify(&k, &sign("!!!"), t0()), Err(TokenError::Malformed));
        let bad_user = URL_SAFE_NO_PAD.encode(r#"{"sub":"","exp":9999999999}"#);
        assert_eq!(verify(&k, &sign(&bad_user), t0()), Err(TokenError::BadUser));
    }

    #[test]
    fn bad_user_names_are_refused() {
        let k = key();
        let ttl = Duration::from_secs(60);
        let long = "x".repeat(MAX_USER_LEN + 1);
        // 22 three-byte characters: 66 bytes though only 22 characters.
        let long_bytes = "€".repeat(22);
        for bad in [
            "",
            "new\nline",
            "tab\there",
            "nul\0",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}",
            "ls\u{2028}",
            "rlo\u{202e}gnp.exe",
        ] {
            assert_eq!(mint(&k, bad, ttl, t0()), Err(TokenError::BadUser), "{bad:?}");
        }
        assert_eq!(mint(&k, &long, ttl, t0()), Err(TokenError::BadUser));
        assert_eq!(mint(&k, &long_bytes, ttl, t0()), Err(TokenError::BadUser));
        let max = "x".repeat(MAX_USER_LEN);
        assert!(mint(&k, &max, ttl, t0()).is_ok());
        assert!(mint(&k, "a", ttl, t0()).is_ok());
        assert!(mint(&k, "with space", ttl, t0()).is_ok());
        assert!(mint(&k, "👩\u{200d}💻 ünïcödé", ttl, t0()).is_ok());
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let secret = "hunter2-super-secret";
        let k = TokenKey::new(secret.as_bytes());
        let shown = format!("{k:?} {:?} {k:#?}", k.clone());
        assert!(!shown.contains(secret), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn cloned_key_verifies_the_same() {
        let k = key();
        let token = mint(&k, "alice", Duration::from_secs(60), t0()).unwrap();
        assert!(verify(&k.clone(), &token, t0()).is_ok());
        // Reusing a key many times must not carry state from one MAC into the next.
        assert!(verify(&k, &token, t0()).is_ok());
    }

    #[test]
    fn subprotocol_token_is_found_and_decoded() {
        let token = mint(&key(), "alice", Duration::from_secs(60), t0()).unwrap();
        let offered =
            vec!["phoenix".to_string(), format!("{AUTH_SUBPROTOCOL_PREFIX}{}", btoa_unpadded(&token))];
        let found = token_from_subprotocols(&offered).unwrap();
        assert_eq!(found, token);
        assert_eq!(verify(&key(), &found, t0()).unwrap().user, "alice");
    }

    #[test]
    fn phoenix_client_example_decodes() {
        // From the phoenix.js test suite: authToken "1234" is offered as "base64url.bearer.phx.MTIzNA".
        let offered = ["phoenix".to_string(), "base64url.bearer.phx.MTIzNA".to_string()];
        assert_eq!(token_from_subprotocols(&offered).as_deref(), Some("1234"));
    }

    #[test]
    fn subprotocol_with_plus_slash_and_stripped_padding() {
        // btoa("??>~~") == "Pz8+fn4=": a '+' and, once '=' is stripped, no padding.
        let offered = [format!("{AUTH_SUBPROTOCOL_PREFIX}Pz8+fn4")];
        assert_eq!(token_from_subprotocols(&offered).as_deref(), Some("??>~~"));
        // btoa("???") == "Pz8/": a '/'.
        let offered = [format!("{AUTH_SUBPROTOCOL_PREFIX}Pz8/")];
        assert_eq!(token_from_subprotocols(&offered).as_deref(), Some("???"));
        for raw in ["a", "ab", "abcd?", "x>y?z"] {
            let encoded = btoa_unpadded(raw);
            let offered = [format!("{AUTH_SUBPROTOCOL_PREFIX}{encoded}")];
            assert_eq!(token_from_subprotocols(&offered).as_deref(), Some(raw), "{encoded}");
        }
    }

    #[test]
    fn subprotocol_accepts_padding_and_url_alphabet() {
        let padded = [format!("{AUTH_SUBPROTOCOL_PREFIX}Pz8+fn4=")];
        assert_eq!(token_from_subprotocols(&padded).as_deref(), Some("??>~~"));
        let url = [format!("{AUTH_SUBPROTOCOL_PREFIX}Pz8-fn4")];
        assert_eq!(token_from_subprotocols(&url).as_deref(), Some("??>~~"));
        let url = [format!(" {AUTH_SUBPROTOCOL_PREFIX}Pz8_ ")];
        assert_eq!(token_from_subprotocols(&url).as_deref(), Some("???"));
    }

    #[test]
    fn subprotocol_absent_or_broken_is_none() {
        assert_eq!(token_from_subprotocols(&[]), None);
        assert_eq!(token_from_subprotocols(&["phoenix".to_string()]), None);
        let cases = [
            "base64url.bearer.phx.".to_string(),
            "base64url.bearer.phx.!!!!".to_string(),
            "base64url.bearer.phx.A".to_string(),
            // "//4" is the bytes 0xff 0xfe, which are not UTF-8.
            "base64url.bearer.phx.//4".to_string(),
            format!("{AUTH_SUBPROTOCOL_PREFIX}{}", "A".repeat(4 * MAX_TOKEN_LEN)),
            "Base64url.Bearer.Phx.MTIzNA".to_string(),
        ];
        for case in cases {
            assert_eq!(token_from_subprotocols(std::slice::from_ref(&case)), None, "{case}");
        }
    }

    #[test]
    fn first_prefixed_entry_wins() {
        let offered = [
            "phoenix".to_string(),
            format!("{AUTH_SUBPROTOCOL_PREFIX}{}", btoa_unpadded("first")),
            format!("{AUTH_SUBPROTOCOL_PREFIX}{}", btoa_unpadded("second")),
        ];
        assert_eq!(token_from_subprotocols(&offered).as_deref(), Some("first"));
    }

    #[test]
    fn grants_round_trip_and_match_patterns() {
        let grants =
            Grants { geo_move: vec!["truck-*".into(), "van-1".into()], geo_admin: true, operator: false };
        let token = mint_with(&key(), "alice", &grants, Duration::from_secs(60), t0()).unwrap();
        let claims = verify(&key(), &token, t0()).unwrap();
        assert_eq!(claims.grants, grants);
        assert!(grants.may_move("truck-7") && grants.may_move("van-1"));
        assert!(!grants.may_move("van-10") && !grants.may_move("car"));
        assert!(Grants { geo_move: vec!["*".into()], geo_admin: false, operator: false }.may_move("anything"));
        let plain = mint(&key(), "bob", Duration::from_secs(60), t0()).unwrap();
        assert_eq!(verify(&key(), &plain, t0()).unwrap().grants, Grants::default());
        let huge = Grants { geo_move: vec!["x".repeat(900)], geo_admin: false, operator: false };
        assert_eq!(mint_with(&key(), "a", &huge, Duration::from_secs(60), t0()), Err(TokenError::TooLong));
    }
}
