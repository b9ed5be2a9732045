//! The tool policy's verdicts for one caller.

use wildmatch::WildMatch;

use crate::ToolPolicy;

/// Who is calling: the team and agent of a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub team: String,
    pub agent: String,
}

/// What the policy says about one tool for one caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Matched a deny pattern (which wins over any allow).
    Denied,
    /// Some layer that applies has an allow list the tool is not on.
    NotAllowed,
}

impl Verdict {
    pub fn allowed(self) -> bool {
        self == Self::Allowed
    }
}

fn any_match(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| WildMatch::new(p).matches(name))
}

fn applies(patterns: &[String], name: &str) -> bool {
    patterns.is_empty() || any_match(patterns, name)
}

impl ToolPolicy {
    /// The verdict for `tool` (an exposed name) and `caller`: every layer that applies must
    /// allow it, and a deny anywhere wins.
    pub fn verdict(&self, caller: &Caller, tool: &str) -> Verdict {
        let layers = std::iter::once((&self.allow, &self.deny)).chain(
            self.rules
                .iter()
                .filter(|r| applies(&r.teams, &caller.team) && applies(&r.agents, &caller.agent))
                .map(|r| (&r.allow, &r.deny)),
        );
        let mut verdict = Verdict::Allowed;
        for (allow, deny) in layers {
            if any_match(deny, tool) {
                return Verdict::Denied;
            }
            if !applies(allow, tool) {
                verdict = Verdict::NotAllowed;
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::PolicyRule;

    fn caller(team: &str, agent: &str) -> Caller {
        Caller {
            team: team.into(),
            agent: agent.into(),
        }
    }

    fn policy() -> ToolPolicy {
        ToolPolicy {
            allow: vec![],
            deny: vec!["*__delete_*".into()],
            rules: vec![
                PolicyRule {
                    teams: vec!["alpha".into()],
                    agents: vec![],
                    allow: vec!["echo__*".into(), "github__get_*".into()],
                    deny: vec![],
                },
                PolicyRule {
                    teams: vec![],
                    agents: vec!["bob".into()],
                    allow: vec![],
                    deny: vec!["echo__shout".into()],
                },
            ],
        }
    }

    #[test]
    fn per_team_and_per_agent_rules_narrow_and_deny_wins() {
        let p = policy();
        assert_eq!(
            p.verdict(&caller("alpha", "alice"), "echo__shout"),
            Verdict::Allowed
        );
        assert_eq!(
            p.verdict(&caller("alpha", "bob"), "echo__shout"),
            Verdict::Denied
        );
        assert_eq!(
            p.verdict(&caller("alpha", "alice"), "github__create"),
            Verdict::NotAllowed
        );
        assert_eq!(
            p.verdict(&caller("beta", "alice"), "github__create"),
            Verdict::Allowed
        );
        assert_eq!(
            p.verdict(&caller("beta", "carol"), "echo__delete_all"),
            Verdict::Denied
        );
    }

    proptest! {
        /// A tool matching a global deny is refused to every caller, whatever else is allowed.
        #[test]
        fn a_global_deny_beats_every_allow(team in "[a-z]{1,8}", agent in "[a-z]{1,8}", tool in "[a-z_]{1,20}") {
            let mut p = policy();
            p.deny.push(tool.clone());
            p.allow.push(tool.clone());
            p.rules.push(PolicyRule { teams: vec![team.clone()], agents: vec![agent.clone()], allow: vec![tool.clone()], deny: vec![] });
            prop_assert_eq!(p.verdict(&caller(&team, &agent), &tool), Verdict::Denied);
        }
    }
}
