//! `admin.toml` ([`AdminFile`]): the control plane's URL, its CA certificate and the admin
//! token, written by the control plane on first start and read by the admin CLI.

use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{CertificatePem, ControlUrl, ValueError};
use crate::document::{read, Document};
use crate::error::ConfigError;
use crate::token::AdminToken;

/// A validated `admin.toml`: everything the admin CLI needs to reach and trust the control plane
/// and to authenticate as admin.
///
/// `Debug` redacts the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminFile {
    /// The control plane's URL.
    pub url: ControlUrl,
    /// The CA certificate the server's certificate must chain to; the only CA the CLI trusts.
    pub ca_cert: CertificatePem,
    /// The admin token.
    pub token: AdminToken,
}

impl AdminFile {
    /// Parses and validates the TOML `text` of an admin file.
    ///
    /// Pure: `origin` is only used in errors, which name it together with the line, column and
    /// field of the first problem found. Errors never contain the token.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cx = Document {
            text,
            origin,
            table: None,
            expected_for: admin_expected_for,
            // `toml`'s own error text quotes the offending line, which may hold the token.
            keep_toml_source: false,
        };
        let raw: RawAdminFile = toml::from_str(text).map_err(|e| cx.toml_error(e))?;
        let url = cx.check_value(&raw.url, "url", |s| s.parse::<ControlUrl>())?;
        let ca_cert = cx.check_value(&raw.ca_cert, "ca_cert", |s| s.parse::<CertificatePem>())?;
        let token = cx.check_value(&raw.token, "token", |s| {
            s.parse::<AdminToken>()
                .map_err(|e| ValueError::new(e.to_string()))
        })?;
        Ok(Self {
            url,
            ca_cert,
            token,
        })
    }

    /// Reads the file at `path` and parses it with [`AdminFile::from_toml`].
    ///
    /// An unreadable file gives an error naming `path` and the operating system's reason. The
    /// file's permissions are not checked here.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&read(path)?, path)
    }

    /// Writes the file as TOML (the certificate as a multi-line string), such that
    /// [`AdminFile::from_toml`] gives back an equal value. The text contains the admin token:
    /// write it with mode 0600.
    pub fn to_toml(&self) -> String {
        let raw = WriteAdminFile {
            url: self.url.to_string(),
            ca_cert: self.ca_cert.pem().to_owned(),
            token: self.token.expose(),
        };
        // Plain strings are always representable in TOML.
        toml::to_string(&raw).expect("an admin file is always representable in TOML")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdminFile {
    url: Spanned<String>,
    ca_cert: Spanned<String>,
    token: Spanned<String>,
}

#[derive(Serialize)]
struct WriteAdminFile {
    url: String,
    ca_cert: String,
    token: String,
}

fn admin_expected_for(path: &str) -> Option<&'static str> {
    Some(match path {
        "url" => "a URL string such as \"https://198.18.0.10:7443\"",
        "ca_cert" => "a PEM certificate string (-----BEGIN CERTIFICATE----- ...)",
        "token" => "an admin token string (WGMA1-...)",
        _ => return None,
    })
}
