//! Socket.io room names: one per team (presence), per agent (its connections on every
//! replica) and per group. Rooms of different teams never share a name.

pub(crate) fn team_room(team: &str) -> String {
    format!("team:{team}")
}
pub(crate) fn agent_room(team: &str, agent: &str) -> String {
    format!("agent:{team}:{agent}")
}
pub(crate) fn group_room(team: &str, group: &str) -> String {
    format!("group:{team}:{group}")
}
