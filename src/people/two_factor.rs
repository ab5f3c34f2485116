//! Two-factor login: time-based one-time codes (TOTP, RFC 6238: HMAC-SHA1, 6 digits, 30-second
//! steps) from an authenticator app, and single-use recovery codes.
//!
//! An agent enrols in two steps: [`begin_setup`] makes a secret and shows it (a QR code of the
//! `otpauth://` URI and the key in base32); [`TwoFactorRecord::confirm`] turns it on only once a
//! code made from it matches, and hands out [`N_RECOVERY_CODES`] recovery codes, shown once and
//! stored as SHA-256 digests. A code is accepted for the current step and one step either side
//! (clock drift), and each step at most once: the record keeps the last step used, checked and
//! advanced inside the transaction that accepts the code (the writer operation, or a PostgreSQL
//! transaction holding the record's row), so two requests racing with one code cannot both pass.
//! The decisions are [`TwoFactorRecord`]'s methods, the same for every backend.
//!
//! The secrets live in their own table (`AGENT_TWO_FACTOR`), not on the agent record that every
//! request carries around; the agent record only says whether two-factor login is on. An admin can
//! require it for every agent (a flag in `META`) and reset an agent's; both end the sessions it
//! affects (`agents.rs` owns the sessions).

use hmac::{Hmac, Mac};
use rand::RngCore;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

use crate::base::field_error::FieldError;
use crate::people::agent_administration::AgentAdministration;
use crate::storage::{StorageError, WriteContext, decode_json, encode_json, tables};

/// Seconds per code.
pub const STEP_SECS: u64 = 30;

/// Digits per code.
const DIGITS: u32 = 6;

/// Steps either side of the current one that are still accepted, for clocks that drift.
const SKEW_STEPS: u64 = 1;

/// Random bytes in a secret: 160 bits, the HMAC-SHA1 key size RFC 4226 recommends.
const SECRET_BYTES: usize = 20;

/// Recovery codes handed out at enrolment.
pub const N_RECOVERY_CODES: usize = 10;

/// The `META` key of the installation's "every agent needs two-factor login" switch.
pub const REQUIRED_KEY: &str = "require_two_factor";

/// The name authenticator apps show above the code.
const ISSUER: &str = "kefu";

/// One agent's two-factor state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TwoFactorRecord {
    /// The base32 secret in force; `None` until a setup is confirmed.
    pub secret: Option<String>,
    /// The secret of a setup shown but not yet confirmed with a code.
    pub pending_secret: Option<String>,
    /// The last time step whose code was accepted; codes of it and earlier steps are refused.
    pub last_step: u64,
    /// SHA-256 digests (hex) of the recovery codes not used yet.
    pub recovery_digests: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TwoFactorError {
    #[error("two-factor login is already on")]
    AlreadyOn,
    #[error("two-factor login is off")]
    Off,
    #[error("start the setup again: no secret is waiting for a code")]
    NoSetup,
    #[error("code: wrong or already used")]
    WrongCode,
    #[error("two-factor login is required for every agent on this installation")]
    Required,
    #[error("no such agent")]
    NotFound,
    #[error(transparent)]
    Invalid(FieldError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What the agent scans or types to add kefu to their authenticator app.
#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    /// The secret in base32, for typing in.
    pub secret: String,
    /// The `otpauth://totp/...` URI the QR code holds.
    pub uri: String,
    /// The QR code as an SVG document.
    pub qr_svg: String,
}

/// The HOTP value (RFC 4226) of `secret` at counter `step`, as `DIGITS` digits.
fn code_at(secret: &[u8], step: u64) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let binary =
        u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    format!("{:0width$}", binary % 10u32.pow(DIGITS), width = DIGITS as usize)
}

fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    data_encoding::BASE32_NOPAD.decode(secret.trim_end_matches('=').as_bytes()).ok()
}

/// The time step of `now_millis`.
fn step_of(now_millis: i64) -> u64 {
    u64::try_from(now_millis).unwrap_or(0) / 1000 / STEP_SECS
}

/// The code an authenticator app shows for the base32 `secret` at `now_millis` (tests and tools
/// compute codes with it too).
pub fn code_for(secret: &str, now_millis: i64) -> Option<String> {
    Some(code_at(&decode_secret(secret)?, step_of(now_millis)))
}

/// The step within the accepted window whose code `code` is, if any and later than `after`.
fn matching_step(secret: &str, code: &str, now_millis: i64, after: u64) -> Option<u64> {
    let key = decode_secret(secret)?;
    let now = step_of(now_millis);
    (now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS)
        .filter(|step| *step > after)
        .find(|step| constant_time_equal(code_at(&key, *step).as_bytes(), code.as_bytes()))
}

fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}

/// A code as typed, without spaces or dashes, lowercased.
fn normalise(code: &str) -> String {
    code.chars()
        .filter(|character| !character.is_whitespace() && *character != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_totp(code: &str) -> bool {
    code.len() == DIGITS as usize && code.bytes().all(|byte| byte.is_ascii_digit())
}

fn recovery_digest(code: &str) -> String {
    hex::encode(crate::base::secrets::token_digest(code))
}

/// Ten random recovery codes such as `k7mq2-x9tfr`, from an alphabet without look-alikes.
fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..N_RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            rand::rng().fill_bytes(&mut bytes);
            let letters: String =
                bytes.iter().map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char).collect();
            format!("{}-{}", &letters[..5], &letters[5..])
        })
        .collect()
}

/// The `otpauth://` URI of a secret for `account` (the agent's email).
pub fn otpauth_uri(account: &str, secret: &str) -> String {
    let label: String = url::form_urlencoded::byte_serialize(format!("{ISSUER}:{account}").as_bytes()).collect();
    format!(
        "otpauth://totp/{}?secret={secret}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        label.replace('+', "%20")
    )
}

/// The QR code of `text` as an SVG document.
fn qr_svg(text: &str) -> Result<String, TwoFactorError> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).map_err(|error| {
        TwoFactorError::Invalid(FieldError::new("email", format!("too long for a QR code: {error}")))
    })?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).quiet_zone(true).build())
}

impl TwoFactorRecord {
    /// Keeps `secret` waiting for its first code; a second setup replaces the first secret.
    /// Refused while two-factor login is on.
    pub fn begin(&mut self, secret: String) -> Result<(), TwoFactorError> {
        if self.secret.is_some() {
            return Err(TwoFactorError::AlreadyOn);
        }
        self.pending_secret = Some(secret);
        Ok(())
    }

    /// Turns two-factor login on if `code` matches the waiting secret at `now`; returns the
    /// recovery codes (shown once).
    pub fn confirm(&mut self, code: &str, now: i64) -> Result<Vec<String>, TwoFactorError> {
        if self.secret.is_some() {
            return Err(TwoFactorError::AlreadyOn);
        }
        let Some(pending) = self.pending_secret.clone() else {
            return Err(TwoFactorError::NoSetup);
        };
        let code = normalise(code);
        let Some(step) = is_totp(&code).then(|| matching_step(&pending, &code, now, 0)).flatten() else {
            return Err(TwoFactorError::WrongCode);
        };
        let codes = new_recovery_codes();
        *self = TwoFactorRecord {
            secret: Some(pending),
            pending_secret: None,
            last_step: step,
            recovery_digests: codes.iter().map(|code| recovery_digest(&normalise(code))).collect(),
        };
        Ok(codes)
    }

    /// Checks a login's second factor at `now`: a TOTP code of a step later than the last one
    /// used, or an unused recovery code, which is then gone. Advances the record, so the same
    /// code never passes twice; a wrong code leaves it as it was.
    pub fn check(&mut self, code: &str, now: i64) -> bool {
        let Some(secret) = self.secret.clone() else {
            return false;
        };
        let code = normalise(code);
        if is_totp(&code) {
            let Some(step) = matching_step(&secret, &code, now, self.last_step) else {
                return false;
            };
            self.last_step = step;
            return true;
        }
        let digest = recovery_digest(&code);
        let before = self.recovery_digests.len();
        self.recovery_digests.retain(|stored| !constant_time_equal(stored.as_bytes(), digest.as_bytes()));
        self.recovery_digests.len() < before
    }
}

/// Whether every agent must log in with a second factor.
pub fn required(transaction: &ReadTransaction) -> Result<bool, StorageError> {
    Ok(crate::storage::read_meta(transaction, REQUIRED_KEY)?.unwrap_or(0) == 1)
}

/// Whether every agent must log in with a second factor, read inside a writer operation.
pub fn required_in(context: &mut WriteContext<'_>) -> Result<bool, StorageError> {
    let meta = context.transaction.open_table(tables::META)?;
    Ok(meta.get(REQUIRED_KEY)?.map(|value| value.value()).unwrap_or(0) == 1)
}

/// Sets the installation's switch.
pub fn set_required_in(context: &mut WriteContext<'_>, on: bool) -> Result<(), StorageError> {
    context.transaction.open_table(tables::META)?.insert(REQUIRED_KEY, u64::from(on))?;
    Ok(())
}

/// A new secret for the agent with `email`, to scan or type in.
pub fn new_setup(email: &str) -> Result<Setup, TwoFactorError> {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = data_encoding::BASE32_NOPAD.encode(&bytes);
    let uri = otpauth_uri(email, &secret);
    let qr_svg = qr_svg(&uri)?;
    Ok(Setup { secret, uri, qr_svg })
}

/// Makes a new secret for `agent_id` and keeps it waiting for its first code
/// (`agents::confirm_two_factor`); a second call replaces the first secret. Refused while
/// two-factor login is on.
pub async fn begin_setup(
    store: &impl AgentAdministration,
    agent_id: u64,
    email: &str,
) -> Result<Setup, TwoFactorError> {
    let setup = new_setup(email)?;
    store.begin_two_factor(agent_id, setup.secret.clone()).await?;
    Ok(setup)
}

/// The agent's two-factor state inside a writer operation (a default one when there is none).
pub(crate) fn record_in(context: &WriteContext<'_>, agent_id: u64) -> Result<TwoFactorRecord, StorageError> {
    let table = context.transaction.open_table(tables::AGENT_TWO_FACTOR)?;
    Ok(table.get(agent_id)?.map(|value| decode_json(value.value())).transpose()?.unwrap_or_default())
}

/// Stores the agent's two-factor state inside a writer operation.
pub(crate) fn store_in(
    context: &WriteContext<'_>,
    agent_id: u64,
    record: &TwoFactorRecord,
) -> Result<(), StorageError> {
    context.transaction.open_table(tables::AGENT_TWO_FACTOR)?.insert(agent_id, encode_json(record).as_slice())?;
    Ok(())
}

/// Removes the agent's two-factor state (an admin's reset, or the agent turning it off).
pub(crate) fn remove_in(context: &mut WriteContext<'_>, agent_id: u64) -> Result<(), StorageError> {
    context.transaction.open_table(tables::AGENT_TWO_FACTOR)?.remove(agent_id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, appendix B: the SHA-1 secret "12345678901234567890" (8 digits there; the last 6
    /// here, as HOTP truncation takes the value modulo 10^digits).
    #[test]
    fn codes_match_the_rfc_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight_digits) in
            [(59u64, "94287082"), (1_111_111_109, "07081804"), (1_234_567_890, "89005924"), (2_000_000_000, "69279037")]
        {
            assert_eq!(code_at(secret, time / STEP_SECS), eight_digits[2..], "at {time}");
        }
        let base32 = data_encoding::BASE32_NOPAD.encode(secret);
        assert_eq!(code_for(&base32, 59_000).as_deref(), Some("287082"));
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_only_after_the_last_used() {
        let secret = data_encoding::BASE32_NOPAD.encode(b"12345678901234567890");
        let now = 1_234_567_890_000;
        let previous = code_for(&secret, now - 30_000).unwrap();
        assert_eq!(matching_step(&secret, &previous, now, 0), Some(step_of(now) - 1));
        assert_eq!(matching_step(&secret, &previous, now, step_of(now) - 1), None);
        let old = code_for(&secret, now - 90_000).unwrap();
        assert_eq!(matching_step(&secret, &old, now, 0), None);
    }

    #[test]
    fn typed_codes_are_normalised() {
        assert_eq!(normalise(" 123 456 "), "123456");
        assert_eq!(normalise("K7MQ2-X9TFR"), "k7mq2x9tfr");
        assert!(new_recovery_codes().iter().all(|code| code.len() == 11));
    }

    #[test]
    fn the_uri_names_the_issuer_and_account() {
        let uri = otpauth_uri("ann@shop.example", "ABC");
        assert_eq!(
            uri,
            "otpauth://totp/kefu%3Aann%40shop.example?secret=ABC&issuer=kefu&algorithm=SHA1&digits=6&period=30"
        );
        assert!(qr_svg(&uri).unwrap().starts_with("<?xml"));
    }
}
