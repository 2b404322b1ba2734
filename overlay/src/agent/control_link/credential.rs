//! The credential and token files: `control.json` (the host's credential, saved before the
//! join is sent and marked joined once it is answered) and `control.join_token_file`.

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use wgmesh_client::client::Client;
use wgmesh_config::token::{CaDigest, HostCredential, JoinToken};
use wgmesh_config::{ControlSection, JoinTokenSource};

use super::{Link, LinkError};
use crate::agent::statefile::{read_json, write_json, ReadError};

/// What `control.json` holds: enough to talk to the control plane without the token.
///
/// The credential is made here and saved before the join is sent (`joined: false`), so a join
/// whose reply is lost, or an agent stopped mid-join, retries with the same credential and the
/// control plane recognises it; anyone else with the host's (public) name and key is refused.
#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum CredentialFile {
    #[serde(rename = "1")]
    V1 {
        url: String,
        ca_digest: CaDigest,
        name: String,
        credential: String,
        joined: bool,
    },
}

pub(super) fn read_token(control: &ControlSection, url: &str) -> Result<JoinToken, LinkError> {
    match &control.join_token {
        Some(JoinTokenSource::Inline(token)) => Ok(token.clone()),
        Some(JoinTokenSource::File(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| LinkError::TokenRead {
                path: path.clone(),
                source,
            })?;
            JoinToken::from_str(&text).map_err(|source| LinkError::TokenInvalid {
                path: path.clone(),
                source,
            })
        }
        None => Err(LinkError::NoToken {
            url: url.to_owned(),
        }),
    }
}

/// The link of an earlier join (and whether that join completed), if `control.json` is for this
/// control plane and name.
pub(super) fn load_link(
    path: &Path,
    control: &ControlSection,
    name: &str,
) -> Result<Option<(Link, bool)>, LinkError> {
    let path_buf = || path.to_owned();
    let file = read_json::<CredentialFile>(path).map_err(|e| match e {
        ReadError::Io(source) => LinkError::CredentialRead {
            path: path_buf(),
            source,
        },
        ReadError::Corrupt(error) => LinkError::CredentialCorrupt {
            path: path_buf(),
            error,
        },
    })?;
    let Some(CredentialFile::V1 {
        url,
        ca_digest,
        name: saved_name,
        credential,
        joined,
    }) = file
    else {
        return Ok(None);
    };
    if url != control.url.to_string() || saved_name != name {
        tracing::info!(saved_url = %url, saved_name, "the saved credential is for another control plane or name; joining with the token");
        return Ok(None);
    }
    let credential =
        HostCredential::from_str(&credential).map_err(|source| LinkError::CredentialInvalid {
            path: path_buf(),
            source,
        })?;
    let link = Link {
        client: Client::pinned(&control.url, ca_digest),
        name: saved_name,
        credential,
        ca_digest,
    };
    Ok(Some((link, joined)))
}

pub(super) fn save_link(path: &Path, link: &Link, joined: bool) -> Result<(), LinkError> {
    let file = CredentialFile::V1 {
        url: link.client.url().to_string(),
        ca_digest: link.ca_digest,
        name: link.name.clone(),
        credential: link.credential.expose(),
        joined,
    };
    write_json(path, &file).map_err(|source| LinkError::CredentialSave {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::control_link::CREDENTIAL_FILE;
    use crate::error::Chain;

    #[test]
    fn credential_and_token_file_errors_name_the_file_then_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("join.token");
        let control = ControlSection {
            url: "https://198.18.0.10:7443".parse().unwrap(),
            join_token: Some(JoinTokenSource::File(token_file.clone())),
        };
        let url = control.url.to_string();
        let err = read_token(&control, &url).unwrap_err();
        assert_eq!(
            Chain(&err).to_string(),
            format!(
                "control.join_token_file: {}: cannot read the join token: No such file or \
                 directory (os error 2)",
                token_file.display()
            )
        );
        std::fs::write(&token_file, "WGM1-nope").unwrap();
        let parse = JoinToken::from_str("WGM1-nope").unwrap_err();
        let err = read_token(&control, &url).unwrap_err();
        assert_eq!(
            Chain(&err).to_string(),
            format!("control.join_token_file: {}: {parse}", token_file.display())
        );

        let path = dir.path().join(CREDENTIAL_FILE);
        std::fs::write(&path, "{nope").unwrap();
        let json = serde_json::from_str::<CredentialFile>("{nope")
            .err()
            .unwrap();
        let err = load_link(&path, &control, "host-a").err().unwrap();
        assert_eq!(
            Chain(&err).to_string(),
            format!(
                "{}: not a wgmesh credential file ({json}); move it away to join again with the \
                 token",
                path.display()
            )
        );
    }
}
