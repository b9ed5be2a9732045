//! Who is online and in which groups, per team. Pure bookkeeping with no I/O, so every rule is
//! unit-tested; the socket handlers turn its answers into room joins and broadcasts.
//!
//! Group membership belongs to the agent (all its connections), and ends when its last
//! connection closes: clients re-join after reconnecting.
//!
//! With several replicas every replica keeps the whole team's view: its own connections, and
//! the others' as the cluster directory reports them. Each connection records the replica
//! (node) holding it, so a replica that dies can be dropped at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use nsh_mesh_transport::wire::{AgentPresence, GroupSummary};

use crate::maps::FastMap;

#[derive(Debug, Default)]
pub struct Registry {
    teams: Mutex<FastMap<String, Team>>,
}

#[derive(Debug, Default)]
struct Team {
    agents: BTreeMap<String, Agent>,
    groups: BTreeMap<String, BTreeSet<String>>,
    /// Socket id -> its agent and the node holding it.
    sockets: FastMap<String, Holder>,
}

#[derive(Debug, Clone)]
struct Holder {
    agent: String,
    node: String,
}

#[derive(Debug)]
struct Agent {
    /// Socket id -> the node holding it (also in [`Team::sockets`]): kept here too so a direct
    /// message finds its recipient's connections on this node with one lookup.
    sockets: BTreeMap<String, String>,
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

/// One connection as a replica reports it to the others.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SocketEntry {
    pub team: String,
    pub agent: String,
    pub sid: String,
    pub since: String,
    pub groups: Vec<String>,
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
        if !teams.contains_key(team) {
            teams.insert(team.to_owned(), Team::default());
        }
        let entry = teams.get_mut(team).expect("inserted above");
        let result = f(entry);
        if entry.agents.is_empty() {
            teams.remove(team);
        }
        result
    }

    /// Reads `team`'s view without creating it: an unknown team reads as empty (`R::default()`).
    /// The lookups on every message go through here, so they allocate nothing.
    fn read_team<R: Default>(&self, team: &str, f: impl FnOnce(&Team) -> R) -> R {
        self.teams
            .lock()
            .expect("registry lock")
            .get(team)
            .map_or_else(R::default, f)
    }

    /// Records a new connection `sid` of `agent` on `node`, unless it would exceed
    /// `max_connections`.
    pub fn connect(
        &self,
        team: &str,
        agent: &str,
        sid: &str,
        node: &str,
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
            Ok(t.add_socket(agent, sid, node, now))
        })
    }

    /// Drops every connection held by `node` (a replica that died); returns the agents that
    /// are offline now, by team.
    pub fn drop_node(&self, node: &str) -> Vec<(String, String)> {
        let mut teams = self.teams.lock().expect("registry lock");
        let mut offline = Vec::new();
        for (name, team) in teams.iter_mut() {
            for agent in team.remove_node(node) {
                offline.push((name.clone(), agent));
            }
        }
        teams.retain(|_, t| !t.agents.is_empty());
        offline
    }

    /// Replaces what is known of `node`'s connections with `entries` (its own report), keeping
    /// agents' groups as reported.
    pub fn replace_node(&self, node: &str, entries: &[SocketEntry]) {
        let mut teams = self.teams.lock().expect("registry lock");
        for team in teams.values_mut() {
            team.remove_node(node);
        }
        for entry in entries {
            let team = teams.entry(entry.team.clone()).or_default();
            team.add_socket(&entry.agent, &entry.sid, node, &entry.since);
            for group in &entry.groups {
                team.add_member(&entry.agent, group);
            }
        }
        teams.retain(|_, t| !t.agents.is_empty());
    }

    /// The connections `node` holds, with their agents' groups: what it reports to the others.
    pub fn snapshot(&self, node: &str) -> Vec<SocketEntry> {
        let teams = self.teams.lock().expect("registry lock");
        let mut entries = Vec::new();
        for (name, team) in teams.iter() {
            for (sid, holder) in &team.sockets {
                if holder.node != node {
                    continue;
                }
                let Some(agent) = team.agents.get(&holder.agent) else {
                    continue;
                };
                entries.push(SocketEntry {
                    team: name.clone(),
                    agent: holder.agent.clone(),
                    sid: sid.clone(),
                    since: agent.since.clone(),
                    groups: agent.groups.iter().cloned().collect(),
                });
            }
        }
        entries.sort_by(|a, b| a.sid.cmp(&b.sid));
        entries
    }

    /// The nodes holding `agent`'s connections, sorted.
    pub fn holders(&self, team: &str, agent: &str) -> Vec<String> {
        self.read_team(team, |t| {
            let mut nodes: Vec<String> = t
                .agents
                .get(agent)
                .map_or_else(Vec::new, |a| a.sockets.values().cloned().collect());
            nodes.sort();
            nodes.dedup();
            nodes
        })
    }

    /// Whether `agent` has a connection on `node`.
    pub fn has_connection_on(&self, team: &str, agent: &str, node: &str) -> bool {
        self.read_team(team, |t| {
            t.agents
                .get(agent)
                .is_some_and(|a| a.sockets.values().any(|holder| holder == node))
        })
    }

    /// Calls `each` with the id of every connection of `agent` held by `node`: a direct message
    /// to them is emitted to each connection itself, with no room lookup, and nothing is
    /// allocated to list them. `each` runs under the registry's lock: it must not call back in.
    pub fn sockets_on(&self, team: &str, agent: &str, node: &str, mut each: impl FnMut(&str)) {
        self.read_team(team, |t| {
            let Some(a) = t.agents.get(agent) else {
                return;
            };
            for (sid, holder) in &a.sockets {
                if holder == node {
                    each(sid);
                }
            }
        });
    }

    /// Forgets connection `sid`; `true` when it was the agent's last (announce it offline).
    pub fn disconnect(&self, team: &str, agent: &str, sid: &str) -> bool {
        self.with_team(team, |t| {
            t.sockets.remove(sid);
            let Some(entry) = t.agents.get_mut(agent) else {
                return false;
            };
            if entry.sockets.remove(sid).is_none() || !entry.sockets.is_empty() {
                return false;
            }
            t.remove_agent(agent);
            true
        })
    }

    /// Open connections of one agent.
    pub fn connections_of(&self, team: &str, agent: &str) -> usize {
        self.read_team(team, |t| t.agents.get(agent).map_or(0, |a| a.sockets.len()))
    }

    /// Agents of `team` with at least one connection.
    pub fn online_count(&self, team: &str) -> usize {
        self.read_team(team, |t| t.agents.len())
    }

    pub fn is_online(&self, team: &str, agent: &str) -> bool {
        self.read_team(team, |t| t.agents.contains_key(agent))
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
            t.add_member(agent, group);
            Ok(t.groups
                .get(group)
                .map(|m| m.iter().cloned().collect())
                .unwrap_or_default())
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
        self.read_team(team, |t| {
            t.groups.get(group).is_some_and(|m| m.contains(agent))
        })
    }

    pub fn members(&self, team: &str, group: &str) -> Vec<String> {
        self.read_team(team, |t| {
            t.groups
                .get(group)
                .map(|m| m.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    pub fn groups(&self, team: &str) -> Vec<GroupSummary> {
        self.read_team(team, |t| {
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
        self.read_team(team, |t| {
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
        self.read_team(team, |t| t.sockets.get(sid).map(|h| h.agent.clone()))
    }

    /// Number of open connections held by `node`, all teams.
    pub fn connection_count(&self, node: &str) -> usize {
        self.teams
            .lock()
            .expect("registry lock")
            .values()
            .map(|t| t.sockets.values().filter(|h| h.node == node).count())
            .sum()
    }
}

impl Team {
    fn add_socket(&mut self, agent: &str, sid: &str, node: &str, since: &str) -> Connected {
        let entry = self
            .agents
            .entry(agent.to_owned())
            .or_insert_with(|| Agent {
                sockets: BTreeMap::new(),
                since: since.to_owned(),
                groups: BTreeSet::new(),
            });
        let first = entry.sockets.is_empty();
        entry.sockets.insert(sid.to_owned(), node.to_owned());
        self.sockets.insert(
            sid.to_owned(),
            Holder {
                agent: agent.to_owned(),
                node: node.to_owned(),
            },
        );
        Connected {
            first,
            groups: entry.groups.iter().cloned().collect(),
        }
    }

    /// Adds a known agent to a group (unknown agents are ignored: membership needs a connection).
    fn add_member(&mut self, agent: &str, group: &str) {
        if let Some(entry) = self.agents.get_mut(agent) {
            entry.groups.insert(group.to_owned());
            self.groups
                .entry(group.to_owned())
                .or_default()
                .insert(agent.to_owned());
        }
    }

    fn remove_agent(&mut self, agent: &str) {
        if let Some(entry) = self.agents.remove(agent) {
            for group in entry.groups {
                remove_member(&mut self.groups, &group, agent);
            }
        }
    }

    /// Drops the connections held by `node`; returns the agents left with none.
    fn remove_node(&mut self, node: &str) -> Vec<String> {
        let gone: Vec<(String, String)> = self
            .sockets
            .iter()
            .filter(|(_, h)| h.node == node)
            .map(|(sid, h)| (sid.clone(), h.agent.clone()))
            .collect();
        let mut offline = Vec::new();
        for (sid, agent) in gone {
            self.sockets.remove(&sid);
            let Some(entry) = self.agents.get_mut(&agent) else {
                continue;
            };
            entry.sockets.remove(&sid);
            if entry.sockets.is_empty() {
                self.remove_agent(&agent);
                offline.push(agent);
            }
        }
        offline.sort();
        offline
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
    const N1: &str = "node-1";
    const N2: &str = "node-2";

    #[test]
    fn first_and_last_connection_are_reported_and_limits_hold() {
        let r = Registry::default();
        assert!(r.connect("t", "a", "s1", N1, NOW, 2).unwrap().first);
        assert!(!r.connect("t", "a", "s2", N1, NOW, 2).unwrap().first);
        assert_eq!(
            r.connect("t", "a", "s3", N1, NOW, 2),
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
        assert_eq!(r.connection_count(N1), 0);
    }

    #[test]
    fn groups_follow_the_agent_and_end_with_its_last_connection() {
        let r = Registry::default();
        r.connect("t", "a", "s1", N1, NOW, 8).unwrap();
        r.connect("t", "b", "s2", N1, NOW, 8).unwrap();
        assert_eq!(r.join("t", "a", "ops", 2).unwrap(), ["a"]);
        assert_eq!(r.join("t", "b", "ops", 2).unwrap(), ["a", "b"]);
        // A second connection of `a` is told to join `ops` too.
        assert_eq!(
            r.connect("t", "a", "s3", N1, NOW, 8).unwrap().groups,
            ["ops"]
        );
        assert_eq!(r.groups("t")[0].members, 2);
        assert!(r.disconnect("t", "b", "s2"));
        assert_eq!(r.members("t", "ops"), ["a"]);
        assert_eq!(r.leave("t", "a", "ops"), Vec::<String>::new());
        assert!(r.groups("t").is_empty());
    }

    #[test]
    fn group_limit_counts_distinct_groups() {
        let r = Registry::default();
        r.connect("t", "a", "s1", N1, NOW, 8).unwrap();
        r.join("t", "a", "g1", 1).unwrap();
        r.join("t", "a", "g1", 1).unwrap();
        assert_eq!(r.join("t", "a", "g2", 1), Err(TooManyGroups { max: 1 }));
    }

    #[test]
    fn teams_are_isolated() {
        let r = Registry::default();
        r.connect("red", "a", "s1", N1, NOW, 8).unwrap();
        r.join("red", "a", "ops", 8).unwrap();
        r.connect("blue", "b", "s2", N1, NOW, 8).unwrap();
        assert!(!r.is_online("blue", "a"));
        assert!(r.members("blue", "ops").is_empty());
        assert_eq!(r.presence("blue").len(), 1);
        assert_eq!(r.agent_of("blue", "s1"), None);
        assert_eq!(r.agent_of("red", "s1").as_deref(), Some("a"));
    }

    #[test]
    fn a_dead_node_takes_its_connections_and_only_its_agents_go_offline() {
        let r = Registry::default();
        r.connect("t", "a", "s1", N1, NOW, 8).unwrap();
        r.connect("t", "a", "s2", N2, NOW, 8).unwrap();
        r.connect("t", "b", "s3", N2, NOW, 8).unwrap();
        r.join("t", "b", "ops", 8).unwrap();
        assert!(r.has_connection_on("t", "a", N2));
        assert!(!r.has_connection_on("t", "b", N1));
        assert_eq!(r.holders("t", "a"), [N1, N2]);
        assert_eq!(r.holders("t", "b"), [N2]);
        assert!(r.holders("t", "nobody").is_empty());
        let sockets_on = |team, agent, node| {
            let mut sids = Vec::new();
            r.sockets_on(team, agent, node, |sid| sids.push(sid.to_owned()));
            sids
        };
        assert_eq!(sockets_on("t", "a", N1), ["s1"]);
        assert_eq!(sockets_on("t", "a", N2), ["s2"]);
        assert!(sockets_on("t", "b", N1).is_empty());
        assert!(sockets_on("other", "a", N1).is_empty());
        assert_eq!(r.connection_count(N2), 2);
        // `a` still has a connection on node-1; `b` had only node-2.
        assert_eq!(r.drop_node(N2), [("t".to_owned(), "b".to_owned())]);
        assert!(r.is_online("t", "a"));
        assert!(!r.is_online("t", "b"));
        assert!(r.members("t", "ops").is_empty());
        assert_eq!(r.connection_count(N2), 0);
        // The agent's own list of its connections lost node-2's too.
        assert!(!r.has_connection_on("t", "a", N2));
        assert_eq!(r.holders("t", "a"), [N1]);
        assert!(sockets_on("t", "a", N2).is_empty());
        assert_eq!(sockets_on("t", "a", N1), ["s1"]);
    }

    #[test]
    fn a_snapshot_replaces_what_a_node_held() {
        let r = Registry::default();
        r.connect("t", "stale", "s9", N2, NOW, 8).unwrap();
        r.connect("t", "a", "s1", N1, NOW, 8).unwrap();
        let report = [SocketEntry {
            team: "t".into(),
            agent: "b".into(),
            sid: "s2".into(),
            since: NOW.into(),
            groups: vec!["ops".into()],
        }];
        r.replace_node(N2, &report);
        assert!(!r.is_online("t", "stale"));
        assert_eq!(r.members("t", "ops"), ["b"]);
        assert_eq!(r.snapshot(N2), report);
        assert_eq!(r.snapshot(N1)[0].agent, "a");
        assert_eq!(r.agent_of("t", "s2").as_deref(), Some("b"));
    }
}
