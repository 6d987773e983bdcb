//! Who the agent (or an echo responder) is: ECS task metadata v4 when running on ECS, else the
//! host name. Read once at start; nothing is sent anywhere off ECS.

use std::time::Duration;

use serde::Deserialize;

use crate::probe::Prober;
use crate::wire::Identity;

/// The host name, from the kernel (no extra dependency), else `$HOSTNAME`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Where an agent probes from: `configured` (`[agent] vantage`), else the task's availability
/// zone from ECS task metadata, else the host name.
pub fn vantage(configured: Option<&str>, identity: &Identity) -> String {
    configured
        .map(str::to_string)
        .or_else(|| identity.availability_zone.clone())
        .unwrap_or_else(|| identity.hostname.clone())
}

/// Reads who we are from ECS task metadata v4 when `ECS_CONTAINER_METADATA_URI_V4` is set
/// (only inside ECS: nothing is sent anywhere otherwise).
pub async fn identity(prober: &Prober) -> Identity {
    let mut identity = Identity {
        hostname: hostname(),
        ..Identity::default()
    };
    let Ok(base) = std::env::var("ECS_CONTAINER_METADATA_URI_V4") else {
        return identity;
    };
    let url = format!("{}/task", base.trim_end_matches('/'));
    let hop = match crate::config::Hop::get(
        "ecs-metadata",
        crate::config::Role::Target,
        &url,
        Duration::from_secs(2),
    ) {
        // Task metadata lists every container: allow more than a probe's default body.
        Ok(hop) => crate::config::Hop {
            max_body: 1 << 20,
            ..hop
        },
        Err(err) => {
            tracing::warn!(error = %err, "ECS_CONTAINER_METADATA_URI_V4 is not a usable URL");
            return identity;
        }
    };
    let result = prober.probe(&hop, None).await;
    if !result.outcome.is_ok() {
        tracing::warn!(result = %result.outcome, "could not read ECS task metadata");
        return identity;
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Task {
        cluster: Option<String>,
        #[serde(rename = "TaskARN")]
        task_arn: Option<String>,
        availability_zone: Option<String>,
    }
    match serde_json::from_slice::<Task>(&result.body) {
        Ok(task) => {
            identity.cluster = task.cluster;
            identity.task_arn = task.task_arn;
            identity.availability_zone = task.availability_zone;
        }
        Err(err) => tracing::warn!(error = %err, "ECS task metadata is not the expected JSON"),
    }
    identity
}
