//! Tiers: what a plan allows, and the rank that orders plans for classification.
//!
//! A tier's `features` are on/off switches (`voice`, `sla_timers`, …) and its `limits` are counts
//! (`leads`, `voice`, …, where `None` means unlimited). The rank alone decides whether moving
//! between two tiers is an upgrade, a downgrade or a lateral move; the category (`free`, `paid`,
//! `enterprise`) is descriptive.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::TierId;

/// A tier's commercial category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TierCategory {
    Free,
    Paid,
    Enterprise,
}

impl TierCategory {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Paid => "paid",
            Self::Enterprise => "enterprise",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "free" => Some(Self::Free),
            "paid" => Some(Self::Paid),
            "enterprise" => Some(Self::Enterprise),
            _ => None,
        }
    }
}

/// Feature switches of a tier, by feature name.
pub type Features = BTreeMap<String, bool>;
/// Limits of a tier, by limit name; `None` is unlimited.
pub type Limits = BTreeMap<String, Option<i64>>;

/// A tier as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tier {
    pub tier_id: TierId,
    #[schema(example = "Professional")]
    pub name: String,
    pub category: TierCategory,
    /// Orders tiers: higher is more. Equal ranks are lateral moves.
    pub rank: i32,
    /// Inactive tiers keep their tenants but accept no new transitions.
    pub active: bool,
    /// Feature switches by name.
    #[schema(value_type = BTreeMap<String, bool>, example = json!({"voice": true, "sla_timers": true, "api_access": true}))]
    pub features: Features,
    /// Limits by name; `null` is unlimited.
    #[schema(value_type = BTreeMap<String, Option<i64>>, example = json!({"leads": 10000, "voice": 1000, "api": null}))]
    pub limits: Limits,
    /// Free-form JSON for the operator (tierflow does not read it).
    pub metadata: serde_json::Value,
}

/// The feature names tierflow itself switches off under restrictions (see [`crate::restriction`]).
pub mod feature {
    pub const VOICE: &str = "voice";
    pub const SLA_TIMERS: &str = "sla_timers";
    pub const ESCALATION: &str = "escalation";
    pub const PRIORITY_ROUTING: &str = "priority_routing";
    pub const API_ACCESS: &str = "api_access";
    pub const LEAD_SCORING: &str = "lead_scoring";
}

/// The canonical tiers that `tierflow tiers seed` (and `migrate`) write when missing.
///
/// Ranks leave gaps of 10 so an operator can add a tier between two without renumbering.
pub fn canonical_tiers() -> Vec<Tier> {
    use feature::*;
    let tier =
        |id: &str, name: &str, category, rank, on: &[&str], limits: [Option<i64>; 5]| -> Tier {
            let all = [
                VOICE,
                SLA_TIMERS,
                ESCALATION,
                PRIORITY_ROUTING,
                API_ACCESS,
                LEAD_SCORING,
            ];
            let names = ["leads", "scoring", "routing", "voice", "api"];
            Tier {
                // The canonical ids are constants that parse by construction.
                tier_id: TierId::parse(id).unwrap_or_else(|e| panic!("canonical tier id: {e}")),
                name: name.to_owned(),
                category,
                rank,
                active: true,
                features: all
                    .iter()
                    .map(|f| (f.to_string(), on.contains(f)))
                    .collect(),
                limits: names
                    .iter()
                    .zip(limits)
                    .map(|(n, l)| (n.to_string(), l))
                    .collect(),
                metadata: serde_json::json!({ "canonical": true }),
            }
        };
    vec![
        tier(
            "free",
            "Free",
            TierCategory::Free,
            0,
            &[],
            [Some(100), Some(0), Some(1), Some(0), Some(1_000)],
        ),
        tier(
            "starter",
            "Starter",
            TierCategory::Paid,
            10,
            &[API_ACCESS, LEAD_SCORING],
            [Some(1_000), Some(1_000), Some(5), Some(0), Some(10_000)],
        ),
        tier(
            "professional",
            "Professional",
            TierCategory::Paid,
            20,
            &[
                VOICE,
                SLA_TIMERS,
                ESCALATION,
                PRIORITY_ROUTING,
                API_ACCESS,
                LEAD_SCORING,
            ],
            [
                Some(10_000),
                Some(10_000),
                Some(25),
                Some(1_000),
                Some(100_000),
            ],
        ),
        tier(
            "enterprise",
            "Enterprise",
            TierCategory::Enterprise,
            30,
            &[
                VOICE,
                SLA_TIMERS,
                ESCALATION,
                PRIORITY_ROUTING,
                API_ACCESS,
                LEAD_SCORING,
            ],
            [None, None, None, None, None],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_tiers_cover_every_category_in_rank_order() {
        let tiers = canonical_tiers();
        let ids: Vec<_> = tiers.iter().map(|t| t.tier_id.as_str()).collect();
        assert_eq!(ids, ["free", "starter", "professional", "enterprise"]);
        assert!(tiers.windows(2).all(|w| w[0].rank < w[1].rank));
        for cat in [
            TierCategory::Free,
            TierCategory::Paid,
            TierCategory::Enterprise,
        ] {
            assert!(tiers.iter().any(|t| t.category == cat));
        }
        // The downgrade story needs voice on professional and off on starter.
        assert!(tiers[2].features["voice"]);
        assert!(!tiers[1].features["voice"]);
    }
}
