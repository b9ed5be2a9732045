//! Who is online and in which groups, per team. Pure bookkeeping with no I/O, so every rule is
//! unit-tested; the socket handlers turn its answers into room joins and broadcasts.
//!
//! Group membership belongs to the agent (all its connections), and ends when its last
//! connection closes: clients re-join after reconnecting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use nsh_mesh_transport::wire::{AgentPresence, GroupSummary};

#[derive(Debug, Default)]
pub struct Registry {
    teams: Mutex<HashMap<String, Team>>,
}

#[derive(Debug, Default)]
struct Team {
    agents: BTreeMap<String, Agent>,
    groups: BTreeMap<String, BTreeSet<String>>,
    /// Socket id -> agent, to name who acked a broadcast.
    sockets: HashMap<String, String>,
}

#[derive(Debug)]
struct Agent {
    sockets: BTreeSet<String>,
    since: String,
    groups: BTreeSet<String>,
}

/// The agent already holds the maximum number of connections.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent `{agent}` already holds {max} connections (the maximum); close one first")]
pub struct TooManyConnections {
    pub agent: String,
    pub max: usize,
}

/// The agent is already in the maximum number of groups.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent is already in {max} groups (the maximum); leave one first")]
pub struct TooManyGroups {
    pub max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// First connection of the agent: announce it online.
    pub first: bool,
    /// Groups this new connection must join (the agent's current ones).
    pub groups: Vec<String>,
}

impl Registry {
    fn with_team<R>(&self, team: &str, f: impl FnOnce(&mut Team) -> R) -> R {
        let mut teams = self.teams.lock().expect("registry lock");
        let entry = teams.entry(team.to_owned()).or_default();
        let result = f(entry);
        if entry.agents.is_empty() {
            teams.remove(team);
        }
        result
    }

    /// Records a new connection `sid` of `agent`, unless it would exceed `max_connections`.
    pub fn connect(
        &self,
        team: &str,
        agent: &str,
        sid: &str,
        now: &str,
        max_connections: usize,
    ) -> Result<Connected, TooManyConnections> {
        self.with_team(team, |t| {
            let current = t.agents.get(agent).map_or(0, |a| a.sockets.len());
            if current >= max_connections {
                return Err(TooManyConnections {
                    agent: agent.to_owned(),
                    max: max_connections,
                });
            }
            let entry = t.agents.entry(agent.to_owned()).or_insert_with(|| Agent {
                sockets: BTreeSet::new(),
                since: now.to_owned(),
                groups: BTreeSet::new(),
            });
            entry.sockets.insert(sid.to_owned());
            t.sockets.insert(sid.to_owned(), agent.to_owned());
            Ok(Connected {
                first: current == 0,
                groups: entry.groups.iter().cloned().collect(),
            })
        })
    }

    /// Forgets connection `sid`; `true` when it was the agent's last (announce it offline).
    pub fn disconnect(&self, team: &str, agent: &str, sid: &str) -> bool {
        self.with_team(team, |t| {
            t.sockets.remove(sid);
            let Some(entry) = t.agents.get_mut(agent) else {
                return false;
            };
            if !entry.sockets.remove(sid) || !entry.sockets.is_empty() {
                return false;
            }
            let entry = t.agents.remove(agent).expect("present above");
            for group in entry.groups {
                remove_member(&mut t.groups, &group, agent);
            }
            true
        })
    }

    /// Open connections of one agent.
    pub fn connections_of(&self, team: &str, agent: &str) -> usize {
        self.with_team(team, |t| t.agents.get(agent).map_or(0, |a| a.sockets.len()))
    }

    pub fn is_online(&self, team: &str, agent: &str) -> bool {
        self.with_team(team, |t| t.agents.contains_key(agent))
    }

    /// Adds `agent` to `group`; returns the members after joining.
    pub fn join(
        &self,
        team: &str,
        agent: &str,
        group: &str,
        max_groups: usize,
    ) -> Result<Vec<String>, TooManyGroups> {
        self.with_team(team, |t| {
            let Some(entry) = t.agents.get_mut(agent) else {
                return Ok(Vec::new());
            };
            if !entry.groups.contains(group) && entry.groups.len() >= max_groups {
                return Err(TooManyGroups { max: max_groups });
            }
            entry.groups.insert(group.to_owned());
            let members = t.groups.entry(group.to_owned()).or_default();
            members.insert(agent.to_owned());
            Ok(members.iter().cloned().collect())
        })
    }

    /// Removes `agent` from `group` (a no-op if absent); returns the members after leaving.
    pub fn leave(&self, team: &str, agent: &str, group: &str) -> Vec<String> {
        self.with_team(team, |t| {
            if let Some(entry) = t.agents.get_mut(agent) {
                entry.groups.remove(group);
            }
            remove_member(&mut t.groups, group, agent);
            t.groups
                .get(group)
                .map(|m| m.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    pub fn is_member(&self, team: &str, agent: &str, group: &str) -> bool {
        self.with_team(team, |t| {
            t.groups.get(group).is_some_and(|m| m.contains(agent))
        })
    }

    pub fn members(&self, team: &str, group: &str) -> Vec<String> {
        self.with_team(team, |t| {
            t.groups
                .get(group)
                .map(|m| m.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    pub fn groups(&self, team: &str) -> Vec<GroupSummary> {
        self.with_team(team, |t| {
            t.groups
                .iter()
                .map(|(name, m)| GroupSummary {
                    name: name.clone(),
                    members: m.len(),
                })
                .collect()
        })
    }

    pub fn presence(&self, team: &str) -> Vec<AgentPresence> {
        self.with_team(team, |t| {
            t.agents
                .iter()
                .map(|(id, a)| AgentPresence {
                    id: id.clone(),
                    online: true,
                    since: a.since.clone(),
                    groups: a.groups.iter().cloned().collect(),
                })
                .collect()
        })
    }

    /// The agent behind connection `sid`, if it is of `team`.
    pub fn agent_of(&self, team: &str, sid: &str) -> Option<String> {
        self.with_team(team, |t| t.sockets.get(sid).cloned())
    }

    /// Number of open connections, all teams.
    pub fn connection_count(&self) -> usize {
        self.teams
            .lock()
            .expect("registry lock")
            .values()
            .map(|t| t.sockets.len())
            .sum()
    }
}

fn remove_member(groups: &mut BTreeMap<String, BTreeSet<String>>, group: &str, agent: &str) {
    if let Some(members) = groups.get_mut(group) {
        members.remove(agent);
        if members.is_empty() {
            groups.remove(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-29T00:00:00.000Z";

    #[test]
    fn first_and_last_connection_are_reported_and_limits_hold() {
        let r = Registry::default();
        assert!(r.connect("t", "a", "s1", NOW, 2).unwrap().first);
        assert!(!r.connect("t", "a", "s2", NOW, 2).unwrap().first);
        assert_eq!(
            r.connect("t", "a", "s3", NOW, 2),
            Err(TooManyConnections {
                agent: "a".into(),
                max: 2
            })
        );
        assert!(!r.disconnect("t", "a", "s1"));
        assert!(r.is_online("t", "a"));
        assert!(r.disconnect("t", "a", "s2"));
        assert!(!r.is_online("t", "a"));
        // Unknown sockets change nothing.
        assert!(!r.disconnect("t", "a", "s2"));
        assert_eq!(r.connection_count(), 0);
    }

    #[test]
    fn groups_follow_the_agent_and_end_with_its_last_connection() {
        let r = Registry::default();
        r.connect("t", "a", "s1", NOW, 8).unwrap();
        r.connect("t", "b", "s2", NOW, 8).unwrap();
        assert_eq!(r.join("t", "a", "ops", 2).unwrap(), ["a"]);
        assert_eq!(r.join("t", "b", "ops", 2).unwrap(), ["a", "b"]);
        // A second connection of `a` is told to join `ops` too.
        assert_eq!(r.connect("t", "a", "s3", NOW, 8).unwrap().groups, ["ops"]);
        assert_eq!(r.groups("t")[0].members, 2);
        assert!(r.disconnect("t", "b", "s2"));
        assert_eq!(r.members("t", "ops"), ["a"]);
        assert_eq!(r.leave("t", "a", "ops"), Vec::<String>::new());
        assert!(r.groups("t").is_empty());
    }

    #[test]
    fn group_limit_counts_distinct_groups() {
        let r = Registry::default();
        r.connect("t", "a", "s1", NOW, 8).unwrap();
        r.join("t", "a", "g1", 1).unwrap();
        r.join("t", "a", "g1", 1).unwrap();
        assert_eq!(r.join("t", "a", "g2", 1), Err(TooManyGroups { max: 1 }));
    }

    #[test]
    fn teams_are_isolated() {
        let r = Registry::default();
        r.connect("red", "a", "s1", NOW, 8).unwrap();
        r.join("red", "a", "ops", 8).unwrap();
        r.connect("blue", "b", "s2", NOW, 8).unwrap();
        assert!(!r.is_online("blue", "a"));
        assert!(r.members("blue", "ops").is_empty());
        assert_eq!(r.presence("blue").len(), 1);
        assert_eq!(r.agent_of("blue", "s1"), None);
        assert_eq!(r.agent_of("red", "s1").as_deref(), Some("a"));
    }
}
