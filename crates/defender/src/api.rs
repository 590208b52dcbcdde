//! The Device Defender operations of the `iot` service, contributed to it with
//! `ControlPlane::service_routes("iot", defender::api::routes(...))`: security profiles and
//! their targets, custom metrics, active violations and violation events.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use fleetcore_api::ApiError;
use fleetcore_api::extract::{Json, Query};
use fleetcore_core::Arn;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::DefenderError;
use crate::metric::CustomMetricType;
use crate::profile::{self, AlertTarget, Behavior, compile_behaviors, validate_alert_targets};
use crate::service::Defender;
use crate::store::{CustomMetricRecord, ProfileRecord, Target, now};

type Answer = Result<axum::Json<Value>, ApiError>;

/// The routes; register with `ControlPlane::service_routes("iot", routes(defender))`.
pub fn routes(defender: Arc<Defender>) -> Router {
    Router::new()
        .route("/security-profiles", get(list_profiles))
        .route(
            "/security-profiles/{securityProfileName}",
            post(create_profile)
                .get(describe_profile)
                .patch(update_profile)
                .delete(delete_profile),
        )
        .route(
            "/security-profiles/{securityProfileName}/targets",
            get(list_targets).put(attach).delete(detach),
        )
        .route("/security-profiles-for-target", get(profiles_for_target))
        .route("/custom-metrics", get(list_custom_metrics))
        .route(
            "/custom-metric/{metricName}",
            post(create_custom_metric)
                .get(describe_custom_metric)
                .patch(update_custom_metric)
                .delete(delete_custom_metric),
        )
        .route("/active-violations", get(list_active_violations))
        .route("/violation-events", get(list_violation_events))
        .route(
            "/behavior-model-training/summaries",
            get(training_summaries),
        )
        .with_state(defender)
}

impl From<DefenderError> for ApiError {
    fn from(error: DefenderError) -> ApiError {
        let message = error.to_string();
        match error {
            DefenderError::NotFound(_) => ApiError::not_found(message),
            DefenderError::AlreadyExists(_) => ApiError::new(
                "ResourceAlreadyExistsException",
                StatusCode::CONFLICT,
                message,
            ),
            DefenderError::Invalid(_) => ApiError::invalid_request(message),
            DefenderError::VersionConflict(_) => {
                ApiError::new("VersionConflictException", StatusCode::CONFLICT, message)
            }
            DefenderError::LimitExceeded(_) => {
                ApiError::new("LimitExceededException", StatusCode::GONE, message)
            }
            DefenderError::Store(_) | DefenderError::Registry(_) => {
                tracing::error!(error = %message, "Defender operation failed");
                ApiError::internal("An unexpected error has occurred")
            }
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    DefenderError::Invalid(message.into()).into()
}

/// One page of `items` from `nextToken` (an offset this server issued).
pub(crate) fn page<T>(
    items: Vec<T>,
    token: Option<&str>,
    max: Option<usize>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let max = match max {
        None => 100,
        Some(m @ 1..=250) => m,
        Some(m) => {
            return Err(invalid(format!(
                "maxResults must be between 1 and 250, not {m}"
            )));
        }
    };
    let start = match token {
        None | Some("") => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| invalid(format!("nextToken {t:?} is not a token this server issued")))?,
    };
    let total = items.len();
    let end = start.saturating_add(max).min(total);
    let next = (end < total).then(|| end.to_string());
    Ok((items.into_iter().skip(start).take(max).collect(), next))
}

fn with_token(mut body: Value, next: Option<String>) -> axum::Json<Value> {
    if let (Some(next), Some(object)) = (next, body.as_object_mut()) {
        object.insert("nextToken".into(), json!(next));
    }
    axum::Json(body)
}

fn check_description(d: &Option<String>) -> Result<(), ApiError> {
    if d.as_ref().is_some_and(|d| d.chars().count() > 1000) {
        return Err(invalid(
            "securityProfileDescription is longer than 1000 characters",
        ));
    }
    Ok(())
}

/// Refuses fields that ask for something this server does not do.
fn refuse_unbuilt(fields: &[(&str, bool)]) -> Result<(), ApiError> {
    match fields.iter().find(|(_, present)| *present) {
        Some((name, _)) => Err(invalid(format!("{name} is not supported by this server"))),
        None => Ok(()),
    }
}

fn non_empty(v: &Option<Vec<Value>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

fn profile_json(d: &Defender, r: &ProfileRecord) -> Value {
    let mut out = json!({
        "securityProfileName": r.name,
        "securityProfileArn": d.profile_arn(&r.name),
        "behaviors": r.behaviors,
        "alertTargets": r.alert_targets,
        "version": r.version,
        "creationDate": r.creation_date,
        "lastModifiedDate": r.last_modified_date,
    });
    if let (Some(desc), Some(o)) = (&r.description, out.as_object_mut()) {
        o.insert("securityProfileDescription".into(), json!(desc));
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileBody {
    #[serde(default)]
    security_profile_description: Option<String>,
    #[serde(default)]
    behaviors: Option<Vec<Behavior>>,
    #[serde(default)]
    alert_targets: Option<BTreeMap<String, AlertTarget>>,
    #[serde(default)]
    additional_metrics_to_retain: Option<Vec<Value>>,
    #[serde(default)]
    additional_metrics_to_retain_v2: Option<Vec<Value>>,
    #[serde(default)]
    metrics_export_config: Option<Value>,
    #[serde(default)]
    tags: Option<Vec<Value>>,
    #[serde(default)]
    delete_behaviors: Option<bool>,
    #[serde(default)]
    delete_alert_targets: Option<bool>,
    #[serde(default)]
    delete_additional_metrics_to_retain: Option<bool>,
    #[serde(default)]
    delete_metrics_export_config: Option<bool>,
}

impl ProfileBody {
    fn check(&self, d: &Defender) -> Result<(), ApiError> {
        check_description(&self.security_profile_description)?;
        refuse_unbuilt(&[
            (
                "additionalMetricsToRetain",
                non_empty(&self.additional_metrics_to_retain),
            ),
            (
                "additionalMetricsToRetainV2",
                non_empty(&self.additional_metrics_to_retain_v2),
            ),
            ("metricsExportConfig", self.metrics_export_config.is_some()),
            ("tags", non_empty(&self.tags)),
        ])?;
        if let Some(b) = &self.behaviors {
            compile_behaviors(b, d.store())?;
        }
        if let Some(t) = &self.alert_targets {
            validate_alert_targets(t)?;
        }
        Ok(())
    }
}

async fn create_profile(
    State(d): State<Arc<Defender>>,
    Path(name): Path<String>,
    Json(body): Json<ProfileBody>,
) -> Answer {
    profile::validate_name("securityProfileName", &name)?;
    body.check(&d)?;
    let _writing = d.write_lock();
    if d.store().profile(&name)?.is_some() {
        return Err(DefenderError::AlreadyExists(format!(
            "security profile {name} already exists"
        ))
        .into());
    }
    let at = now();
    let record = ProfileRecord {
        name: name.clone(),
        description: body.security_profile_description,
        behaviors: body.behaviors.unwrap_or_default(),
        alert_targets: body.alert_targets.unwrap_or_default(),
        version: 1,
        creation_date: at,
        last_modified_date: at,
    };
    d.store().put_profile(&record)?;
    d.reload()?;
    Ok(axum::Json(json!({
        "securityProfileName": name,
        "securityProfileArn": d.profile_arn(&name),
    })))
}

fn existing(d: &Defender, name: &str) -> Result<ProfileRecord, ApiError> {
    d.store().profile(name)?.ok_or_else(|| {
        DefenderError::NotFound(format!("security profile {name} does not exist")).into()
    })
}

async fn describe_profile(State(d): State<Arc<Defender>>, Path(name): Path<String>) -> Answer {
    Ok(axum::Json(profile_json(&d, &existing(&d, &name)?)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionQuery {
    #[serde(default)]
    expected_version: Option<u64>,
}

fn check_version(r: &ProfileRecord, expected: Option<u64>) -> Result<(), ApiError> {
    match expected {
        Some(v) if v != r.version => Err(DefenderError::VersionConflict(format!(
            "security profile {} is at version {}, not {v}",
            r.name, r.version
        ))
        .into()),
        _ => Ok(()),
    }
}

async fn update_profile(
    State(d): State<Arc<Defender>>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
    Json(body): Json<ProfileBody>,
) -> Answer {
    body.check(&d)?;
    if body.delete_behaviors == Some(true) && body.behaviors.is_some() {
        return Err(invalid(
            "behaviors and deleteBehaviors cannot both be given",
        ));
    }
    if body.delete_alert_targets == Some(true) && body.alert_targets.is_some() {
        return Err(invalid(
            "alertTargets and deleteAlertTargets cannot both be given",
        ));
    }
    let _ = (
        body.delete_additional_metrics_to_retain,
        body.delete_metrics_export_config,
    );
    let _writing = d.write_lock();
    let mut r = existing(&d, &name)?;
    check_version(&r, q.expected_version)?;
    if let Some(desc) = body.security_profile_description {
        r.description = Some(desc);
    }
    if let Some(b) = body.behaviors {
        r.behaviors = b;
    }
    if body.delete_behaviors == Some(true) {
        r.behaviors.clear();
    }
    if let Some(t) = body.alert_targets {
        r.alert_targets = t;
    }
    if body.delete_alert_targets == Some(true) {
        r.alert_targets.clear();
    }
    r.version += 1;
    r.last_modified_date = now();
    d.store().put_profile(&r)?;
    d.reload()?;
    Ok(axum::Json(profile_json(&d, &r)))
}

async fn delete_profile(
    State(d): State<Arc<Defender>>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Answer {
    let _writing = d.write_lock();
    // As on AWS, deleting a profile that does not exist succeeds.
    if let Some(r) = d.store().profile(&name)? {
        check_version(&r, q.expected_version)?;
        d.store().delete_profile(&name)?;
        d.reload()?;
    }
    Ok(axum::Json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
    #[serde(default)]
    dimension_name: Option<String>,
    #[serde(default)]
    metric_name: Option<String>,
}

async fn list_profiles(State(d): State<Arc<Defender>>, Query(q): Query<ListQuery>) -> Answer {
    if q.dimension_name.is_some() {
        return Err(invalid("dimensions are not supported by this server"));
    }
    let names: Vec<Value> = d
        .store()
        .profiles()?
        .into_iter()
        .filter(|p| {
            q.metric_name
                .as_deref()
                .is_none_or(|m| p.behaviors.iter().any(|b| b.metric.as_deref() == Some(m)))
        })
        .map(|p| json!({"name": p.name, "arn": d.profile_arn(&p.name)}))
        .collect();
    let (items, next) = page(names, q.next_token.as_deref(), q.max_results)?;
    Ok(with_token(
        json!({"securityProfileIdentifiers": items}),
        next,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetQuery {
    security_profile_target_arn: String,
}

/// The target named by `arn`, which must be of this account and region, and (for a group)
/// exist.
fn parse_target(d: &Defender, arn: &str) -> Result<Target, ApiError> {
    let bad = || {
        invalid(format!(
            "securityProfileTargetArn {arn:?} is not a security profile target ARN (…:all/things, …:all/registered-things, …:all/unregistered-things or …:thinggroup/<name>)"
        ))
    };
    let parsed = Arn::parse(arn).map_err(|_| bad())?;
    let target = Target::from_resource(&parsed.resource).ok_or_else(bad)?;
    if parsed.service != "iot"
        || parsed.region != d.account().region
        || parsed.account_id != d.account().account_id
    {
        return Err(bad());
    }
    if let Target::ThingGroup(g) = &target
        && !d.directory().group_exists(g)
    {
        return Err(DefenderError::NotFound(format!("thing group {g} does not exist")).into());
    }
    Ok(target)
}

async fn attach(
    State(d): State<Arc<Defender>>,
    Path(name): Path<String>,
    Query(q): Query<TargetQuery>,
) -> Answer {
    let target = parse_target(&d, &q.security_profile_target_arn)?;
    let _writing = d.write_lock();
    existing(&d, &name)?;
    d.store().attach(&name, &target)?;
    d.reload()?;
    Ok(axum::Json(json!({})))
}

async fn detach(
    State(d): State<Arc<Defender>>,
    Path(name): Path<String>,
    Query(q): Query<TargetQuery>,
) -> Answer {
    let target = Target::from_resource(
        &Arn::parse(&q.security_profile_target_arn)
            .map(|a| a.resource)
            .unwrap_or_default(),
    )
    .ok_or_else(|| {
        invalid(format!(
            "securityProfileTargetArn {:?} is not a security profile target ARN",
            q.security_profile_target_arn
        ))
    })?;
    let _writing = d.write_lock();
    existing(&d, &name)?;
    if !d.store().detach(&name, &target)? {
        return Err(DefenderError::NotFound(format!(
            "security profile {name} is not attached to {}",
            q.security_profile_target_arn
        ))
        .into());
    }
    d.reload()?;
    Ok(axum::Json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageQuery {
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
}

async fn list_targets(
    State(d): State<Arc<Defender>>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Answer {
    existing(&d, &name)?;
    let targets: Vec<Value> = d
        .store()
        .attachments()?
        .into_iter()
        .filter(|(p, _)| *p == name)
        .map(|(_, t)| json!({"arn": d.target_arn(&t)}))
        .collect();
    let (items, next) = page(targets, q.next_token.as_deref(), q.max_results)?;
    Ok(with_token(json!({"securityProfileTargets": items}), next))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ForTargetQuery {
    security_profile_target_arn: String,
    #[serde(default)]
    recursive: Option<bool>,
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
}

async fn profiles_for_target(
    State(d): State<Arc<Defender>>,
    Query(q): Query<ForTargetQuery>,
) -> Answer {
    let target = parse_target(&d, &q.security_profile_target_arn)?;
    // `recursive`: a group's profiles include those of the account-wide targets that cover it.
    let covers = |t: &Target| {
        *t == target
            || (q.recursive == Some(true)
                && matches!(target, Target::ThingGroup(_))
                && matches!(t, Target::AllThings | Target::RegisteredThings))
    };
    let mappings: Vec<Value> = d
        .store()
        .attachments()?
        .into_iter()
        .filter(|(_, t)| covers(t))
        .map(|(p, t)| {
            json!({
                "securityProfileIdentifier": {"name": p, "arn": d.profile_arn(&p)},
                "target": {"arn": d.target_arn(&t)},
            })
        })
        .collect();
    let (items, next) = page(mappings, q.next_token.as_deref(), q.max_results)?;
    Ok(with_token(
        json!({"securityProfileTargetMappings": items}),
        next,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomMetricBody {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    metric_type: Option<String>,
    #[serde(default)]
    tags: Option<Vec<Value>>,
    #[serde(default)]
    client_request_token: Option<String>,
}

fn custom_metric_json(d: &Defender, r: &CustomMetricRecord) -> Value {
    let mut out = json!({
        "metricName": r.name,
        "metricArn": d.custom_metric_arn(&r.name),
        "metricType": r.metric_type,
        "creationDate": r.creation_date,
        "lastModifiedDate": r.last_modified_date,
    });
    if let (Some(n), Some(o)) = (&r.display_name, out.as_object_mut()) {
        o.insert("displayName".into(), json!(n));
    }
    out
}

fn check_display_name(n: &Option<String>) -> Result<(), ApiError> {
    if n.as_ref().is_some_and(|n| n.chars().count() > 128) {
        return Err(invalid("displayName is longer than 128 characters"));
    }
    Ok(())
}

async fn create_custom_metric(
    State(d): State<Arc<Defender>>,
    Path(name): Path<String>,
    Json(body): Json<CustomMetricBody>,
) -> Answer {
    profile::validate_name("metricName", &name)?;
    if name.starts_with("aws:") {
        return Err(invalid("custom metric names cannot start with aws:"));
    }
    check_display_name(&body.display_name)?;
    refuse_unbuilt(&[("tags", non_empty(&body.tags))])?;
    let metric_type = body.metric_type.as_deref().unwrap_or_default();
    let metric_type = CustomMetricType::parse(metric_type).ok_or_else(|| {
        invalid(format!(
            "metricType {metric_type:?} must be one of string-list, ip-address-list, number-list, number"
        ))
    })?;
    match body.client_request_token.as_deref() {
        Some(t) if !t.is_empty() && t.len() <= 64 => {}
        _ => {
            return Err(invalid(
                "clientRequestToken is required (1 to 64 characters)",
            ));
        }
    }
    let _writing = d.write_lock();
    if d.store().custom_metric(&name)?.is_some() {
        return Err(
            DefenderError::AlreadyExists(format!("custom metric {name} already exists")).into(),
        );
    }
    let at = now();
    d.store().put_custom_metric(&CustomMetricRecord {
        name: name.clone(),
        display_name: body.display_name,
        metric_type: metric_type.as_str().into(),
        creation_date: at,
        last_modified_date: at,
    })?;
    Ok(axum::Json(
        json!({"metricName": name, "metricArn": d.custom_metric_arn(&name)}),
    ))
}

fn existing_metric(d: &Defender, name: &str) -> Result<CustomMetricRecord, ApiError> {
    d.store().custom_metric(name)?.ok_or_else(|| {
        DefenderError::NotFound(format!("custom metric {name} does not exist")).into()
    })
}

async fn describe_custom_metric(
    State(d): State<Arc<Defender>>,
    Path(name): Path<String>,
) -> Answer {
    Ok(axum::Json(custom_metric_json(
        &d,
        &existing_metric(&d, &name)?,
    )))
}

async fn update_custom_metric(
    State(d): State<Arc<Defender>>,
    Path(name): Path<String>,
    Json(body): Json<CustomMetricBody>,
) -> Answer {
    check_display_name(&body.display_name)?;
    let display_name = body
        .display_name
        .ok_or_else(|| invalid("displayName is required"))?;
    let _writing = d.write_lock();
    let mut r = existing_metric(&d, &name)?;
    r.display_name = Some(display_name);
    r.last_modified_date = now();
    d.store().put_custom_metric(&r)?;
    Ok(axum::Json(custom_metric_json(&d, &r)))
}

async fn delete_custom_metric(State(d): State<Arc<Defender>>, Path(name): Path<String>) -> Answer {
    let _writing = d.write_lock();
    let metric = format!("cmet:{name}");
    if let Some(p) = d.store().profiles()?.into_iter().find(|p| {
        p.behaviors
            .iter()
            .any(|b| b.metric.as_deref() == Some(&metric))
    }) {
        return Err(invalid(format!(
            "custom metric {name} is used by security profile {}; remove it from the profile first",
            p.name
        )));
    }
    d.store().delete_custom_metric(&name)?;
    Ok(axum::Json(json!({})))
}

async fn list_custom_metrics(State(d): State<Arc<Defender>>, Query(q): Query<PageQuery>) -> Answer {
    let names: Vec<Value> = d
        .store()
        .custom_metrics()?
        .into_iter()
        .map(|m| json!(m.name))
        .collect();
    let (items, next) = page(names, q.next_token.as_deref(), q.max_results)?;
    Ok(with_token(json!({"metricNames": items}), next))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ViolationQuery {
    #[serde(default)]
    thing_name: Option<String>,
    #[serde(default)]
    security_profile_name: Option<String>,
    #[serde(default)]
    behavior_criteria_type: Option<String>,
    #[serde(default)]
    list_suppressed_alerts: Option<bool>,
    #[serde(default)]
    verification_state: Option<String>,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
}

impl ViolationQuery {
    fn check(&self) -> Result<(), ApiError> {
        if let Some(t) = &self.behavior_criteria_type
            && !matches!(t.as_str(), "STATIC" | "STATISTICAL" | "MACHINE_LEARNING")
        {
            return Err(invalid(format!(
                "behaviorCriteriaType {t:?} must be STATIC, STATISTICAL or MACHINE_LEARNING"
            )));
        }
        if self.verification_state.is_some() {
            return Err(invalid("verificationState is not supported by this server"));
        }
        Ok(())
    }

    fn keeps(&self, thing: &str, profile: &str, criteria_type: &str, behavior: &Behavior) -> bool {
        self.thing_name.as_deref().is_none_or(|t| t == thing)
            && self
                .security_profile_name
                .as_deref()
                .is_none_or(|p| p == profile)
            && self
                .behavior_criteria_type
                .as_deref()
                .is_none_or(|c| c == criteria_type)
            && (self.list_suppressed_alerts == Some(true) || behavior.suppress_alerts != Some(true))
    }
}

async fn list_active_violations(
    State(d): State<Arc<Defender>>,
    Query(q): Query<ViolationQuery>,
) -> Answer {
    q.check()?;
    let active: Vec<Value> = d
        .violations()
        .active_where(|v| {
            q.keeps(
                &v.thing_name,
                &v.security_profile_name,
                &v.criteria_type,
                &v.behavior,
            )
        })
        .iter()
        .map(|v| v.to_json())
        .collect();
    let (items, next) = page(active, q.next_token.as_deref(), q.max_results)?;
    Ok(with_token(json!({"activeViolations": items}), next))
}

/// An ISO 8601 timestamp (as botocore writes query timestamps) or epoch seconds.
pub(crate) fn parse_time(field: &str, text: Option<&str>) -> Result<f64, ApiError> {
    let text = text.ok_or_else(|| invalid(format!("{field} is required")))?;
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok(seconds);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
        .map_err(|_| invalid(format!("{field} {text:?} is not a timestamp")))
}

async fn list_violation_events(
    State(d): State<Arc<Defender>>,
    Query(q): Query<ViolationQuery>,
) -> Answer {
    q.check()?;
    let start = parse_time("startTime", q.start_time.as_deref())?;
    let end = parse_time("endTime", q.end_time.as_deref())?;
    let events: Vec<Value> = d
        .violations()
        .events_where(|e| {
            e.time >= start
                && e.time <= end
                && q.keeps(
                    &e.thing_name,
                    &e.security_profile_name,
                    &e.criteria_type,
                    &e.behavior,
                )
        })
        .iter()
        .map(|e| e.to_json())
        .collect();
    let (items, next) = page(events, q.next_token.as_deref(), q.max_results)?;
    Ok(with_token(json!({"violationEvents": items}), next))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SummariesQuery {
    #[serde(default)]
    security_profile_name: Option<String>,
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
}

async fn training_summaries(
    State(d): State<Arc<Defender>>,
    Query(q): Query<SummariesQuery>,
) -> Answer {
    let items = d
        .training_summaries()
        .of(q.security_profile_name.as_deref());
    let (items, next) = page(items, q.next_token.as_deref(), q.max_results)?;
    Ok(with_token(json!({"summaries": items}), next))
}
