//! CloudWatch export. Rounds are summed per flush period (`period`), turned into datums
//! within `PutMetricData`'s limits (`encode`, `datum`) or into Embedded Metric Format lines
//! (`emf`), and published in the background (`publish`) from a bounded buffer (`buffer`)
//! that survives outages and counts what it had to drop.

pub mod buffer;
pub mod datum;
pub mod emf;
pub mod encode;
pub mod period;
pub mod publish;
pub mod stats;

use crate::wire::Identity;

/// True when some dimension value is read from ECS task metadata (`"ecs:availability_zone"`).
pub fn needs_identity(dimensions: &[(String, String)]) -> bool {
    dimensions.iter().any(|(_, v)| v.starts_with("ecs:"))
}

/// Replaces `ecs:` dimension values with what task metadata said. A field the metadata did not
/// give becomes `unknown`, with a warning: dropping the dimension would silently move the data
/// to another metric.
pub fn resolve_dimensions(
    dimensions: &[(String, String)],
    identity: &Identity,
) -> Vec<(String, String)> {
    dimensions
        .iter()
        .map(|(name, value)| {
            let Some(field) = value.strip_prefix("ecs:") else {
                return (name.clone(), value.clone());
            };
            let found = match field {
                "availability_zone" => identity.availability_zone.clone(),
                "cluster" => identity.cluster.clone(),
                "task_arn" => identity.task_arn.clone(),
                _ => None,
            };
            let value = found.unwrap_or_else(|| {
                tracing::warn!(dimension = %name, field, "ECS task metadata did not give this field (not on ECS?); using \"unknown\"");
                "unknown".to_string()
            });
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_fields_are_substituted() {
        let dims = vec![
            ("AZ".to_string(), "ecs:availability_zone".to_string()),
            ("Cluster".to_string(), "ecs:cluster".to_string()),
            ("Team".to_string(), "payments".to_string()),
        ];
        assert!(needs_identity(&dims));
        let identity = Identity {
            availability_zone: Some("eu-west-1b".into()),
            ..Identity::default()
        };
        assert_eq!(
            resolve_dimensions(&dims, &identity),
            [
                ("AZ".to_string(), "eu-west-1b".to_string()),
                ("Cluster".to_string(), "unknown".to_string()),
                ("Team".to_string(), "payments".to_string()),
            ]
        );
        assert!(!needs_identity(&dims[2..]));
    }
}
