//! Who may connect: an allow-list of peer UIDs and GIDs (checked with
//! `SO_PEERCRED` right after `accept`, before any byte is read) and a cap on
//! concurrent connections.
//!
//! Pure decisions only; the Reader asks the kernel for the credentials and
//! closes what this module refuses.

/// A peer's process, user and group ids (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerCredentials {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The peer's UID and GID are on no allow-list.
    #[error("peer pid {} uid {} gid {} is not on the allow-list", .0.pid, .0.uid, .0.gid)]
    NotAllowed(PeerCredentials),
    /// Credentials could not be read, and an allow-list is set.
    #[error("peer credentials unavailable: {0}")]
    NoCredentials(String),
    /// `max_connections` connections are already open.
    #[error("connection cap of {0} reached")]
    AtCapacity(usize),
}

/// The Reader's admission rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) allow_uids: Vec<u32>,
    pub(crate) allow_gids: Vec<u32>,
    pub(crate) max_connections: Option<usize>,
}

impl Policy {
    /// Admits a peer whose UID is on the UID list or whose GID is on the GID
    /// list (with no lists, everyone), while fewer than `max_connections`
    /// are open.
    pub(crate) fn admit(
        &self,
        peer: Result<PeerCredentials, String>,
        open: usize,
    ) -> Result<(), Refusal> {
        if let Some(max) = self.max_connections {
            if open >= max {
                return Err(Refusal::AtCapacity(max));
            }
        }
        if self.allow_uids.is_empty() && self.allow_gids.is_empty() {
            return Ok(());
        }
        let peer = peer.map_err(Refusal::NoCredentials)?;
        if self.allow_uids.contains(&peer.uid) || self.allow_gids.contains(&peer.gid) {
            Ok(())
        } else {
            Err(Refusal::NotAllowed(peer))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PeerCredentials = PeerCredentials {
        pid: 7,
        uid: 1000,
        gid: 100,
    };

    #[test]
    fn no_rules_admit_everyone() {
        assert_eq!(
            Policy::default().admit(Err("none".into()), 1_000_000),
            Ok(())
        );
    }

    #[test]
    fn uid_or_gid_match_admits() {
        let uid_only = Policy {
            allow_uids: vec![1000],
            ..Policy::default()
        };
        assert_eq!(uid_only.admit(Ok(P), 0), Ok(()));
        let gid_only = Policy {
            allow_gids: vec![100],
            ..Policy::default()
        };
        assert_eq!(gid_only.admit(Ok(P), 0), Ok(()));
        let neither = Policy {
            allow_uids: vec![0],
            allow_gids: vec![0],
            ..Policy::default()
        };
        assert_eq!(neither.admit(Ok(P), 0), Err(Refusal::NotAllowed(P)));
        assert!(
            neither
                .admit(Ok(P), 0)
                .unwrap_err()
                .to_string()
                .contains("uid 1000")
        );
    }

    #[test]
    fn missing_credentials_refuse_only_when_checked() {
        let checked = Policy {
            allow_uids: vec![1000],
            ..Policy::default()
        };
        assert!(matches!(
            checked.admit(Err("EINVAL".into()), 0),
            Err(Refusal::NoCredentials(_))
        ));
    }

    #[test]
    fn cap_counts_open_connections() {
        let cap = Policy {
            max_connections: Some(2),
            ..Policy::default()
        };
        assert_eq!(cap.admit(Ok(P), 1), Ok(()));
        assert_eq!(cap.admit(Ok(P), 2), Err(Refusal::AtCapacity(2)));
    }
}
