//! The credential and token files: `control.json` (the host's credential, saved before the
//! join is sent and marked joined once it is answered) and `control.join_token_file`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wgmesh_client::client::Client;
use wgmesh_config::token::{CaDigest, HostCredential, JoinToken};
use wgmesh_config::{ControlSection, JoinTokenSource};
use zeroize::Zeroizing;

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
        /// The cluster CIDR learnt at join: every netmap must name exactly this one. Absent in
        /// a credential an older agent wrote; learnt then from the first netmap the control
        /// plane sends over the pinned connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cluster_cidr: Option<IpNet>,
    },
}

pub(super) fn read_token(control: &ControlSection, url: &str) -> Result<JoinToken, LinkError> {
    match &control.join_token {
        Some(JoinTokenSource::Inline(token)) => Ok(token.clone()),
        Some(JoinTokenSource::File(path)) => {
            let text = read_private(path)?;
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

/// The text of the token file `path`, which no one but its owner may read or write: a token
/// readable by others lets any local user join a host of their own to the cluster. The mode
/// is read from the open file, so the file checked is the file read.
fn read_private(path: &Path) -> Result<Zeroizing<String>, LinkError> {
    let read_error = |source| LinkError::TokenRead {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let mode = file.metadata().map_err(read_error)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(LinkError::TokenMode {
            path: path.to_owned(),
            mode,
        });
    }
    // Zeroed when dropped, like the token parsed from it.
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(read_error)?;
    Ok(text)
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
        cluster_cidr,
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
        cluster: cluster_cidr,
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
        cluster_cidr: link.cluster,
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
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
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

    #[test]
    fn a_token_file_others_may_read_or_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("join.token");
        std::fs::write(&token_file, "WGM1-nope").unwrap();
        let control = ControlSection {
            url: "https://198.18.0.10:7443".parse().unwrap(),
            join_token: Some(JoinTokenSource::File(token_file.clone())),
        };
        let url = control.url.to_string();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_token(&control, &url).unwrap_err();
            assert!(
                matches!(err, LinkError::TokenMode { mode: m, .. } if m == mode),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "control.join_token_file: {p}: mode {mode:04o} lets other users read or \
                     change the join token; make it private with `chmod 600 {p}`",
                    p = token_file.display()
                )
            );
        }
        // Private (0600 or 0400), it is read (and here found to be no token).
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_token(&control, &url).unwrap_err();
            assert!(matches!(err, LinkError::TokenInvalid { .. }), "{err:?}");
        }
    }

    #[test]
    fn the_pinned_cluster_is_kept_with_the_credential() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CREDENTIAL_FILE);
        let control = ControlSection {
            url: "https://198.18.0.10:7443".parse().unwrap(),
            join_token: None,
        };
        let digest = CaDigest::of(b"ca");
        let mut link = Link {
            client: Client::pinned(&control.url, digest),
            name: "host-a".into(),
            credential: HostCredential::generate(),
            ca_digest: digest,
            cluster: None,
        };
        save_link(&path, &link, false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("cluster_cidr"), "{text}");
        let (loaded, joined) = load_link(&path, &control, "host-a").unwrap().unwrap();
        assert_eq!((loaded.cluster, joined), (None, false));
        link.cluster = Some("10.42.0.0/16".parse().unwrap());
        save_link(&path, &link, true).unwrap();
        let (loaded, joined) = load_link(&path, &control, "host-a").unwrap().unwrap();
        assert_eq!((loaded.cluster, joined), (link.cluster, true));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
