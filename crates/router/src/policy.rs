//! Whether a tenant's request may go to an upstream. Every rule is a hard limit: a request that
//! no permitted upstream can serve is refused, never sent elsewhere.

use crate::config::{Policy, Upstream};

/// Why a policy forbids an upstream, in words for a client and for `--dry-run`.
pub fn denial(policy: &Policy, upstream: &Upstream) -> Option<String> {
    if let Some(regions) = &policy.regions {
        if !regions.contains(&upstream.region) {
            return Some(format!("region {} is not allowed (allowed: {})", upstream.region, regions.join(", ")));
        }
    }
    if let Some(allowed) = &policy.hardware {
        match &upstream.hardware {
            Some(hw) if allowed.contains(hw) => {}
            Some(hw) => return Some(format!("hardware {hw} is not allowed (allowed: {})", allowed.join(", "))),
            None => return Some("its hardware is not declared, and the tenant allows listed hardware only".into()),
        }
    }
    if let Some((set, allowed)) = &policy.classes {
        // Classes are computed at load for every rule set a tenant names; a missing entry would
        // be a bug, and refusing is the safe side of it.
        let class = upstream.classes.get(set).map_or(crate::config::UNKNOWN_CLASS, String::as_str);
        if !allowed.iter().any(|c| c == class) {
            return Some(format!("export class {class} under {set} is not allowed (allowed: {})", allowed.join(", ")));
        }
    }
    if let Some(tag) = policy.tags.iter().find(|t| !upstream.tags.contains(t)) {
        return Some(format!("it lacks the required tag {tag}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn upstream(region: &str, hardware: Option<&str>, class: &str, tags: &[&str]) -> Upstream {
        Upstream {
            name: "u".into(),
            base_url: "http://x".into(),
            models: vec!["m".into()],
            hardware: hardware.map(str::to_string),
            region: region.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            cost_per_mtok: 1.0,
            cost_basis: "given".into(),
            max_concurrency: 1,
            api_key: None,
            classes: BTreeMap::from([("us-2025-01".to_string(), class.to_string())]),
        }
    }

    #[test]
    fn each_rule_names_what_it_refuses() {
        let open = Policy::default();
        let u = upstream("us-east", Some("h100-sxm"), "3A090.a", &["gpu"]);
        assert_eq!(denial(&open, &u), None);
        let cases = [
            (Policy { regions: Some(vec!["eu-west".into()]), ..Policy::default() }, "region us-east is not allowed"),
            (Policy { hardware: Some(vec!["h20".into()]), ..Policy::default() }, "hardware h100-sxm is not allowed"),
            (
                Policy { classes: Some(("us-2025-01".into(), vec!["not-controlled".into()])), ..Policy::default() },
                "export class 3A090.a under us-2025-01 is not allowed",
            ),
            (
                Policy { classes: Some(("us-2023-10".into(), vec!["3A090.a".into()])), ..Policy::default() },
                "export class unknown under us-2023-10",
            ),
            (Policy { tags: vec!["sovereign".into()], ..Policy::default() }, "lacks the required tag sovereign"),
        ];
        for (policy, needle) in cases {
            let why = denial(&policy, &u).unwrap_or_default();
            assert!(why.contains(needle), "{why:?} should contain {needle:?}");
        }
        let undeclared = upstream("us-east", None, "unknown", &[]);
        let hw_only = Policy { hardware: Some(vec!["h20".into()]), ..Policy::default() };
        assert!(denial(&hw_only, &undeclared).unwrap().contains("not declared"));
        let allowed = Policy { classes: Some(("us-2025-01".into(), vec!["3A090.a".into()])), ..Policy::default() };
        assert_eq!(denial(&allowed, &u), None);
    }
}
