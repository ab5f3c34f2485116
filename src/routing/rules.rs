//! Routing rules: which team a new conversation waits for, decided from its first message.
//!
//! A site lists rules in order; the first that holds wins: keywords found in the message (any
//! one of a rule's words, case-insensitive for Latin letters), or the knowledge-base category
//! the message matches. With no rule holding, the site's default team (if any) gets it, and
//! with no default team every agent of the site may.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};

/// Most rules one site has.
pub const MAX_RULES: usize = 50;
/// Most keywords one rule lists.
pub const MAX_KEYWORDS: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleCondition {
    /// Any of these words appears in the first message.
    Keywords { keywords: Vec<String> },
    /// The first message matches a knowledge-base entry of this category.
    Category { category: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRule {
    pub condition: RuleCondition,
    /// The team the conversation waits for.
    pub team: u64,
}

/// A site's rules, compiled once per change of the site.
#[derive(Default)]
pub struct CompiledRules {
    rules: Vec<RoutingRule>,
    default_team: Option<u64>,
    keywords: Option<AhoCorasick>,
    /// Keyword pattern number → the rule it belongs to.
    keyword_rules: Vec<usize>,
}

impl CompiledRules {
    pub fn new(rules: &[RoutingRule], default_team: Option<u64>) -> CompiledRules {
        let mut patterns = Vec::new();
        let mut keyword_rules = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if let RuleCondition::Keywords { keywords } = &rule.condition {
                for keyword in keywords.iter().filter(|keyword| !keyword.is_empty()) {
                    patterns.push(keyword.as_str());
                    keyword_rules.push(index);
                }
            }
        }
        let keywords = (!patterns.is_empty())
            .then(|| {
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&patterns)
                    .ok()
            })
            .flatten();
        CompiledRules { rules: rules.to_vec(), default_team, keywords, keyword_rules }
    }

    /// Whether any rule needs the message's knowledge-base category.
    pub fn needs_category(&self) -> bool {
        self.rules.iter().any(|rule| matches!(rule.condition, RuleCondition::Category { .. }))
    }

    /// Whether the site routes to teams at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.default_team.is_none()
    }

    /// The team for a conversation whose first message is `text`, of knowledge-base `category`.
    pub fn team_for(&self, text: &str, category: Option<&str>) -> Option<u64> {
        let mut keyword_hit = vec![false; self.rules.len()];
        if let Some(keywords) = &self.keywords {
            for found in keywords.find_overlapping_iter(text) {
                keyword_hit[self.keyword_rules[found.pattern().as_usize()]] = true;
            }
        }
        self.rules
            .iter()
            .enumerate()
            .find(|(index, rule)| match &rule.condition {
                RuleCondition::Keywords { .. } => keyword_hit[*index],
                RuleCondition::Category { category: wanted } => {
                    category.is_some_and(|category| category.eq_ignore_ascii_case(wanted))
                }
            })
            .map(|(_, rule)| rule.team)
            .or(self.default_team)
    }
}

/// The first problem with a site's rules, as a message for the admin.
pub fn validate(rules: &[RoutingRule]) -> Result<(), String> {
    if rules.len() > MAX_RULES {
        return Err(format!("at most {MAX_RULES} rules"));
    }
    for (number, rule) in rules.iter().enumerate().map(|(index, rule)| (index + 1, rule)) {
        match &rule.condition {
            RuleCondition::Keywords { keywords } if keywords.is_empty() => {
                return Err(format!("rule {number}: list at least one keyword"));
            }
            RuleCondition::Keywords { keywords } if keywords.len() > MAX_KEYWORDS => {
                return Err(format!("rule {number}: at most {MAX_KEYWORDS} keywords"));
            }
            RuleCondition::Keywords { keywords } if keywords.iter().any(|keyword| keyword.chars().count() > 100) => {
                return Err(format!("rule {number}: a keyword is longer than 100 characters"));
            }
            RuleCondition::Category { category } if category.trim().is_empty() => {
                return Err(format!("rule {number}: name the category"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keywords(words: &[&str], team: u64) -> RoutingRule {
        let keywords = words.iter().map(|word| (*word).to_owned()).collect();
        RoutingRule { condition: RuleCondition::Keywords { keywords }, team }
    }

    #[test]
    fn the_first_rule_that_holds_wins() {
        let rules = vec![
            keywords(&["refund", "退款"], 1),
            RoutingRule { condition: RuleCondition::Category { category: "Shipping".into() }, team: 2 },
            keywords(&["invoice"], 3),
        ];
        let compiled = CompiledRules::new(&rules, Some(9));
        assert_eq!(compiled.team_for("I want a REFUND please", None), Some(1));
        assert_eq!(compiled.team_for("我要退款谢谢", None), Some(1));
        assert_eq!(compiled.team_for("where is my parcel", Some("shipping")), Some(2));
        assert_eq!(compiled.team_for("invoice and refund", None), Some(1));
        assert_eq!(compiled.team_for("an invoice please", Some("Shipping")), Some(2));
        assert_eq!(compiled.team_for("hello", None), Some(9));
        assert_eq!(CompiledRules::new(&rules, None).team_for("hello", None), None);
        assert!(compiled.needs_category());
    }

    #[test]
    fn invalid_rules_are_named() {
        let empty = vec![keywords(&[], 1)];
        assert_eq!(validate(&empty).unwrap_err(), "rule 1: list at least one keyword");
        let nameless = vec![RoutingRule { condition: RuleCondition::Category { category: " ".into() }, team: 1 }];
        assert_eq!(validate(&nameless).unwrap_err(), "rule 1: name the category");
    }
}
