//! Tokens are checked at the handshake; this keeps them checked while a socket lives. A socket
//! whose token expired, or whose team's key changed or was removed (every token signed with the
//! old key stops verifying), is disconnected. Clients reconnect with a fresh token: the
//! mesh-client re-reads its token file on every attempt.

use nsh_mesh_transport::token::LEEWAY;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

use crate::session::Session;

/// Why a live socket lost its right to stay.
fn revoked(session: &Session, rekeyed_teams: &[String], now_unix: u64) -> Option<&'static str> {
    if rekeyed_teams
        .iter()
        .any(|team| *team == session.claims.team)
    {
        Some("team key changed or removed")
    } else if session.claims.exp.saturating_add(LEEWAY.as_secs()) < now_unix {
        Some("token expired")
    } else {
        None
    }
}

/// Disconnects this replica's sockets whose token no longer holds; returns how many.
pub(crate) fn disconnect_revoked<A: Adapter>(
    io: &SocketIo<A>,
    rekeyed_teams: &[String],
    now_unix: u64,
) -> usize {
    let mut count = 0;
    for socket in io.sockets() {
        let Some(session) = socket.extensions.get::<Session>() else {
            continue;
        };
        if let Some(why) = revoked(&session, rekeyed_teams, now_unix) {
            tracing::info!(sid = %socket.id, team = %session.claims.team, agent = %session.claims.sub, why, "disconnecting: token no longer valid");
            let _ = socket.disconnect();
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use nsh_mesh_transport::token::{Audience, Claims};

    use super::*;

    fn session(team: &str, exp: u64) -> Session {
        Session::new(
            Claims {
                sub: "a".into(),
                team: team.into(),
                groups: vec![],
                iss: "nsh-mesh".into(),
                aud: Audience::from("nsh-mesh"),
                iat: 0,
                exp,
                jti: "j".into(),
            },
            "sid",
        )
    }

    #[test]
    fn expiry_counts_the_leeway_and_a_new_key_revokes_its_team_only() {
        let now = 10_000;
        assert_eq!(revoked(&session("alpha", now + 60), &[], now), None);
        assert_eq!(
            revoked(&session("alpha", now - 10), &[], now),
            None,
            "within the leeway"
        );
        assert_eq!(
            revoked(&session("alpha", now - 31), &[], now),
            Some("token expired")
        );
        let rekeyed = ["alpha".to_owned()];
        assert!(revoked(&session("alpha", now + 60), &rekeyed, now).is_some());
        assert_eq!(revoked(&session("beta", now + 60), &rekeyed, now), None);
    }
}
