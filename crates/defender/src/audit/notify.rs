//! Audit notifications: when the configuration's `auditNotificationTargetConfigurations.SNS`
//! is enabled, every finished audit task (on demand or scheduled) is published to its
//! `targetArn` through core's `TopicPublisher`, as AWS's audit SNS message (`taskId`,
//! `taskStatus`, `taskType`, `scheduledAuditName`, the check counts and `auditDetails`). They
//! pass through a bounded queue of [`QUEUE`]: when full, the notification is dropped, counted
//! in `fleetcore_defender_audit_notifications_dropped_total` and logged; the task is stored
//! either way.

use std::sync::Arc;

use fleetcore_core::{Notification, TopicPublisher};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AuditTask;

/// Notifications waiting to be published.
pub const QUEUE: usize = 256;

/// Where audit notifications go.
pub struct AuditNotifier {
    queue: mpsc::Sender<(String, String)>,
}

impl AuditNotifier {
    /// Publishes through `sns` from a task of its own (call inside the runtime).
    pub fn new(sns: Arc<dyn TopicPublisher>) -> AuditNotifier {
        let (queue, mut rx) = mpsc::channel::<(String, String)>(QUEUE);
        tokio::spawn(async move {
            while let Some((topic, message)) = rx.recv().await {
                let notification = Notification {
                    message,
                    subject: Some("Device Defender audit".into()),
                    ..Notification::default()
                };
                if let Err(e) = sns.publish(&topic, notification).await {
                    tracing::warn!(topic, error = %e, "could not publish an audit notification to SNS");
                }
            }
        });
        AuditNotifier { queue }
    }

    /// Queues the notification of `task` for `topic`.
    pub fn send(&self, topic: &str, account_id: &str, task: &AuditTask) {
        if self
            .queue
            .try_send((topic.to_string(), message(account_id, task)))
            .is_err()
        {
            metrics::counter!("fleetcore_defender_audit_notifications_dropped_total").increment(1);
            tracing::warn!(
                topic,
                task = %task.task_id,
                "the audit notification queue is full: notification dropped"
            );
        }
    }
}

/// AWS's audit SNS message for `task`.
pub fn message(account_id: &str, task: &AuditTask) -> String {
    let count = |status: &str| {
        task.details
            .values()
            .filter(|d| d["checkRunStatus"] == status)
            .count()
    };
    let details: Vec<Value> = task
        .details
        .iter()
        .map(|(name, d)| {
            json!({
                "checkName": name,
                "checkRunStatus": d["checkRunStatus"],
                "nonCompliantResourcesCount": d["nonCompliantResourcesCount"],
                "suppressedNonCompliantResourceCount": d["suppressedNonCompliantResourcesCount"],
                "totalResourcesCount": d["totalResourcesCount"],
            })
        })
        .collect();
    json!({
        "accountId": account_id,
        "taskId": task.task_id,
        "taskStatus": task.status,
        "taskType": task.task_type,
        "scheduledAuditName": task.scheduled_audit_name,
        "customerAccountTaskStartTime": (task.start_time * 1000.0) as u64,
        "failedChecksCount": count("FAILED"),
        "canceledChecksCount": 0,
        "nonCompliantChecksCount": count("COMPLETED_NON_COMPLIANT"),
        "compliantChecksCount": count("COMPLETED_COMPLIANT"),
        "totalChecksCount": task.details.len(),
        "auditDetails": details,
    })
    .to_string()
}
