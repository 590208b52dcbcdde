//! Certificates: CreateKeysAndCertificate, CreateCertificateFromCsr, RegisterCertificate,
//! RegisterCertificateWithoutCA, DescribeCertificate, UpdateCertificate, ListCertificates,
//! ListCertificatesByCA, DeleteCertificate; and CA registration: GetRegistrationCode,
//! RegisterCACertificate, DescribeCACertificate, ListCACertificates, UpdateCACertificate,
//! DeleteCACertificate.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use fleetcore_identity::IdentityService;
use fleetcore_identity::certificates::{
    AutoRegistrationStatus, CaCertificateRecord, CaCertificateStatus, CaCertificateUpdate,
    CertificateMode, CertificateRecord, CertificateStatus, NewCaCertificate, RegistrationConfig,
};
use fleetcore_identity::registry::PageRequest;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::IotState;
use super::thing_types::{TagBody, tags};
use super::things::{Identity, epoch};
use crate::error::ApiError;
use crate::extract::{Json, Query};

pub(super) fn routes() -> Router<IotState> {
    Router::new()
        .route("/keys-and-certificate", post(create_keys_and_certificate))
        .route(
            "/certificates",
            post(create_certificate_from_csr).get(list_certificates),
        )
        .route(
            "/certificates/{certificateId}",
            get(describe_certificate)
                .put(update_certificate)
                .delete(delete_certificate),
        )
        .route(
            "/certificates-by-ca/{caCertificateId}",
            get(list_certificates_by_ca),
        )
        .route("/certificate/register", post(register_certificate))
        .route(
            "/certificate/register-no-ca",
            post(register_certificate_without_ca),
        )
        .route("/registrationcode", get(get_registration_code))
        .route("/cacertificate", post(register_ca_certificate))
        .route("/cacertificates", get(list_ca_certificates))
        .route(
            "/cacertificate/{caCertificateId}",
            get(describe_ca_certificate)
                .put(update_ca_certificate)
                .delete(delete_ca_certificate),
        )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SetAsActiveQuery {
    set_as_active: bool,
}

fn active_if(set_as_active: bool) -> CertificateStatus {
    if set_as_active {
        CertificateStatus::Active
    } else {
        CertificateStatus::Inactive
    }
}

/// `{certificateArn, certificateId}` of a created or registered certificate.
fn created(svc: &IdentityService, id: &str) -> Value {
    json!({
        "certificateArn": svc.certificates().certificate_arn(id),
        "certificateId": id,
    })
}

/// POST `/keys-and-certificate?setAsActive`.
async fn create_keys_and_certificate(
    identity: Identity,
    Query(query): Query<SetAsActiveQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let made = svc
                .certificates()
                .create_keys_and_certificate(query.set_as_active)?;
            let mut body = created(svc, &made.certificate.id);
            if let Some(map) = body.as_object_mut() {
                map.insert("certificatePem".into(), json!(made.certificate.pem));
                map.insert(
                    "keyPair".into(),
                    json!({"PublicKey": made.public_key_pem, "PrivateKey": made.private_key_pem}),
                );
            }
            Ok(body)
        })
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct CsrBody {
    certificate_signing_request: Option<String>,
}

/// POST `/certificates?setAsActive` with `certificateSigningRequest`.
async fn create_certificate_from_csr(
    identity: Identity,
    Query(query): Query<SetAsActiveQuery>,
    Json(body): Json<CsrBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let csr = body
        .certificate_signing_request
        .ok_or_else(|| ApiError::invalid_request("certificateSigningRequest is required"))?;
    let body = identity
        .run(move |svc| {
            let cert = svc
                .certificates()
                .create_certificate_from_csr(&csr, query.set_as_active)?;
            let mut body = created(svc, &cert.id);
            if let Some(map) = body.as_object_mut() {
                map.insert("certificatePem".into(), json!(cert.pem));
            }
            Ok(body)
        })
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RegisterBody {
    certificate_pem: Option<String>,
    ca_certificate_pem: Option<String>,
    status: Option<String>,
}

impl RegisterBody {
    /// The PEM and the status asked for: `status` wins over the deprecated `setAsActive`.
    fn parts(
        self,
        set_as_active: bool,
    ) -> Result<(String, Option<String>, CertificateStatus), ApiError> {
        let pem = self
            .certificate_pem
            .ok_or_else(|| ApiError::invalid_request("certificatePem is required"))?;
        let status = match self.status {
            Some(status) => CertificateStatus::parse(&status)?,
            None => active_if(set_as_active),
        };
        Ok((pem, self.ca_certificate_pem, status))
    }
}

/// POST `/certificate/register?setAsActive` with `certificatePem`, `caCertificatePem`, `status`.
async fn register_certificate(
    identity: Identity,
    Query(query): Query<SetAsActiveQuery>,
    Json(body): Json<RegisterBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let (pem, ca_pem, status) = body.parts(query.set_as_active)?;
    let body = identity
        .run(move |svc| {
            let cert =
                svc.certificates()
                    .register_certificate(&pem, ca_pem.as_deref(), Some(status))?;
            Ok(created(svc, &cert.id))
        })
        .await?;
    Ok(axum::Json(body))
}

/// POST `/certificate/register-no-ca` with `certificatePem`, `status`.
async fn register_certificate_without_ca(
    identity: Identity,
    Json(body): Json<RegisterBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let (pem, _, status) = body.parts(false)?;
    let body = identity
        .run(move |svc| {
            let cert = svc
                .certificates()
                .register_certificate_without_ca(&pem, Some(status))?;
            Ok(created(svc, &cert.id))
        })
        .await?;
    Ok(axum::Json(body))
}

fn validity(v: &fleetcore_identity::certificates::Validity) -> Value {
    json!({"notBefore": epoch(v.not_before), "notAfter": epoch(v.not_after)})
}

fn certificate_description(svc: &IdentityService, cert: &CertificateRecord) -> Value {
    let mut d = Map::new();
    d.insert(
        "certificateArn".into(),
        json!(svc.certificates().certificate_arn(&cert.id)),
    );
    d.insert("certificateId".into(), json!(cert.id));
    if let Some(ca) = &cert.ca_certificate_id {
        d.insert("caCertificateId".into(), json!(ca));
    }
    d.insert("status".into(), json!(cert.status.as_str()));
    d.insert("certificatePem".into(), json!(cert.pem));
    d.insert("ownedBy".into(), json!(svc.certificates().owner()));
    d.insert("creationDate".into(), epoch(cert.creation_date));
    d.insert("lastModifiedDate".into(), epoch(cert.last_modified_date));
    d.insert("customerVersion".into(), json!(cert.customer_version));
    d.insert("generationId".into(), json!(cert.generation_id));
    d.insert("validity".into(), validity(&cert.validity));
    d.insert("certificateMode".into(), json!(cert.mode.as_str()));
    Value::Object(d)
}

/// GET `/certificates/{certificateId}`.
async fn describe_certificate(
    identity: Identity,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let cert = svc.certificates().describe_certificate(&id)?;
            Ok(json!({ "certificateDescription": certificate_description(svc, &cert) }))
        })
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UpdateCertificateQuery {
    new_status: Option<String>,
}

/// PUT `/certificates/{certificateId}?newStatus` (empty response, as AWS).
async fn update_certificate(
    identity: Identity,
    Path(id): Path<String>,
    Query(query): Query<UpdateCertificateQuery>,
) -> Result<StatusCode, ApiError> {
    let status = query
        .new_status
        .ok_or_else(|| ApiError::invalid_request("newStatus is required"))?;
    let status = CertificateStatus::parse(&status)?;
    identity
        .run(move |svc| svc.certificates().update_certificate(&id, status))
        .await?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DeleteCertificateQuery {
    force_delete: bool,
}

/// DELETE `/certificates/{certificateId}?forceDelete` (empty response, as AWS).
async fn delete_certificate(
    identity: Identity,
    Path(id): Path<String>,
    Query(query): Query<DeleteCertificateQuery>,
) -> Result<StatusCode, ApiError> {
    identity
        .run(move |svc| {
            svc.certificates()
                .delete_certificate(&id, query.force_delete)
        })
        .await?;
    Ok(StatusCode::OK)
}

/// `pageSize` + `marker` + `isAscendingOrder`, as the certificate lists take them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MarkerPage {
    page_size: Option<i64>,
    marker: Option<String>,
    is_ascending_order: bool,
    template_name: Option<String>,
}

impl MarkerPage {
    fn request(&self) -> PageRequest {
        PageRequest {
            max_results: self.page_size,
            next_token: self.marker.clone(),
        }
    }
}

fn with_next_marker(mut body: Value, marker: Option<String>) -> Value {
    if let (Some(marker), Some(map)) = (marker, body.as_object_mut()) {
        map.insert("nextMarker".into(), Value::String(marker));
    }
    body
}

fn certificate_summaries(svc: &IdentityService, certs: &[CertificateRecord]) -> Vec<Value> {
    certs
        .iter()
        .map(|c| {
            json!({
                "certificateArn": svc.certificates().certificate_arn(&c.id),
                "certificateId": c.id,
                "status": c.status.as_str(),
                "certificateMode": c.mode.as_str(),
                "creationDate": epoch(c.creation_date),
            })
        })
        .collect()
}

/// GET `/certificates?pageSize&marker&isAscendingOrder`.
async fn list_certificates(
    identity: Identity,
    Query(query): Query<MarkerPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let page = svc.certificates().list_certificates(
                None,
                query.is_ascending_order,
                &query.request(),
            )?;
            Ok(with_next_marker(
                json!({ "certificates": certificate_summaries(svc, &page.items) }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

/// GET `/certificates-by-ca/{caCertificateId}?pageSize&marker&isAscendingOrder`.
async fn list_certificates_by_ca(
    identity: Identity,
    Path(ca): Path<String>,
    Query(query): Query<MarkerPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let page = svc.certificates().list_certificates(
                Some(&ca),
                query.is_ascending_order,
                &query.request(),
            )?;
            Ok(with_next_marker(
                json!({ "certificates": certificate_summaries(svc, &page.items) }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

/// GET `/registrationcode`.
async fn get_registration_code(identity: Identity) -> Result<axum::Json<Value>, ApiError> {
    let code = identity
        .run(|svc| svc.certificates().registration_code())
        .await?;
    Ok(axum::Json(json!({ "registrationCode": code })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RegistrationConfigBody {
    template_body: Option<String>,
    role_arn: Option<String>,
    template_name: Option<String>,
}

impl From<RegistrationConfigBody> for RegistrationConfig {
    fn from(body: RegistrationConfigBody) -> RegistrationConfig {
        RegistrationConfig {
            template_body: body.template_body,
            role_arn: body.role_arn,
            template_name: body.template_name,
        }
    }
}

fn registration_config(config: &RegistrationConfig) -> Value {
    let mut map = Map::new();
    for (key, value) in [
        ("templateBody", &config.template_body),
        ("roleArn", &config.role_arn),
        ("templateName", &config.template_name),
    ] {
        if let Some(v) = value {
            map.insert(key.into(), json!(v));
        }
    }
    Value::Object(map)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RegisterCaQuery {
    set_as_active: bool,
    allow_auto_registration: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RegisterCaBody {
    ca_certificate: Option<String>,
    verification_certificate: Option<String>,
    registration_config: Option<RegistrationConfigBody>,
    tags: Vec<TagBody>,
    certificate_mode: Option<String>,
}

/// POST `/cacertificate?setAsActive&allowAutoRegistration`.
async fn register_ca_certificate(
    identity: Identity,
    Query(query): Query<RegisterCaQuery>,
    Json(body): Json<RegisterCaBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let ca_certificate_pem = body
        .ca_certificate
        .ok_or_else(|| ApiError::invalid_request("caCertificate is required"))?;
    let mode = body
        .certificate_mode
        .as_deref()
        .map(CertificateMode::parse)
        .transpose()?;
    let new = NewCaCertificate {
        ca_certificate_pem,
        verification_certificate_pem: body.verification_certificate,
        set_as_active: query.set_as_active,
        allow_auto_registration: query.allow_auto_registration,
        registration_config: body.registration_config.map(RegistrationConfig::from),
        mode,
        tags: tags(body.tags),
    };
    let body = identity
        .run(move |svc| {
            let ca = svc.certificates().register_ca_certificate(new)?;
            Ok(json!({
                "certificateArn": svc.certificates().ca_certificate_arn(&ca.id),
                "certificateId": ca.id,
            }))
        })
        .await?;
    Ok(axum::Json(body))
}

fn ca_description(svc: &IdentityService, ca: &CaCertificateRecord) -> Value {
    json!({
        "certificateArn": svc.certificates().ca_certificate_arn(&ca.id),
        "certificateId": ca.id,
        "status": ca.status.as_str(),
        "certificatePem": ca.pem,
        "ownedBy": svc.certificates().owner(),
        "creationDate": epoch(ca.creation_date),
        "autoRegistrationStatus": ca.auto_registration.as_str(),
        "lastModifiedDate": epoch(ca.last_modified_date),
        "customerVersion": ca.customer_version,
        "generationId": ca.generation_id,
        "validity": validity(&ca.validity),
        "certificateMode": ca.mode.as_str(),
    })
}

/// GET `/cacertificate/{caCertificateId}`.
async fn describe_ca_certificate(
    identity: Identity,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let ca = svc.certificates().describe_ca_certificate(&id)?;
            let mut body = json!({ "certificateDescription": ca_description(svc, &ca) });
            if let (Some(config), Some(map)) = (&ca.registration_config, body.as_object_mut()) {
                map.insert("registrationConfig".into(), registration_config(config));
            }
            Ok(body)
        })
        .await?;
    Ok(axum::Json(body))
}

/// GET `/cacertificates?pageSize&marker&isAscendingOrder&templateName`.
async fn list_ca_certificates(
    identity: Identity,
    Query(query): Query<MarkerPage>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = identity
        .run(move |svc| {
            let page = svc.certificates().list_ca_certificates(
                query.is_ascending_order,
                query.template_name.as_deref(),
                &query.request(),
            )?;
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|ca| {
                    json!({
                        "certificateArn": svc.certificates().ca_certificate_arn(&ca.id),
                        "certificateId": ca.id,
                        "status": ca.status.as_str(),
                        "creationDate": epoch(ca.creation_date),
                    })
                })
                .collect();
            Ok(with_next_marker(
                json!({ "certificates": items }),
                page.next_token,
            ))
        })
        .await?;
    Ok(axum::Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UpdateCaQuery {
    new_status: Option<String>,
    new_auto_registration_status: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UpdateCaBody {
    registration_config: Option<RegistrationConfigBody>,
    remove_auto_registration: bool,
}

/// PUT `/cacertificate/{caCertificateId}?newStatus&newAutoRegistrationStatus` (empty response).
async fn update_ca_certificate(
    identity: Identity,
    Path(id): Path<String>,
    Query(query): Query<UpdateCaQuery>,
    Json(body): Json<UpdateCaBody>,
) -> Result<StatusCode, ApiError> {
    let update = CaCertificateUpdate {
        new_status: query
            .new_status
            .as_deref()
            .map(CaCertificateStatus::parse)
            .transpose()?,
        new_auto_registration_status: query
            .new_auto_registration_status
            .as_deref()
            .map(AutoRegistrationStatus::parse)
            .transpose()?,
        registration_config: body.registration_config.map(RegistrationConfig::from),
        remove_auto_registration: body.remove_auto_registration,
    };
    identity
        .run(move |svc| svc.certificates().update_ca_certificate(&id, update))
        .await?;
    Ok(StatusCode::OK)
}

/// DELETE `/cacertificate/{caCertificateId}`.
async fn delete_ca_certificate(
    identity: Identity,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    identity
        .run(move |svc| svc.certificates().delete_ca_certificate(&id))
        .await?;
    Ok(axum::Json(json!({})))
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use serde_json::json;

    use crate::iot::things::tests::TestApi;

    #[tokio::test]
    async fn certificate_lifecycle_over_http() {
        let api = TestApi::new();
        let (status, _, made) = api
            .call(
                Method::POST,
                "/keys-and-certificate?setAsActive=true",
                &[],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{made}");
        let id = made["certificateId"].as_str().expect("id").to_owned();
        assert_eq!(id.len(), 64);
        assert_eq!(
            made["certificateArn"],
            format!("arn:aws:iot:us-east-1:000000000000:cert/{id}")
        );
        assert!(
            made["keyPair"]["PrivateKey"]
                .as_str()
                .is_some_and(|k| k.contains("PRIVATE KEY"))
        );
        assert!(made["keyPair"]["PublicKey"].is_string());
        assert!(made["certificatePem"].is_string());

        let (_, _, described) = api
            .call(Method::GET, &format!("/certificates/{id}"), &[], None)
            .await;
        let d = &described["certificateDescription"];
        assert_eq!(d["status"], "ACTIVE");
        assert_eq!(d["ownedBy"], "000000000000");
        assert_eq!(d["certificateMode"], "DEFAULT");
        assert_eq!(d["certificatePem"], made["certificatePem"]);
        assert!(d["validity"]["notAfter"].is_number());
        assert!(d.get("caCertificateId").is_none());

        let (status, code, _) = api
            .call(Method::DELETE, &format!("/certificates/{id}"), &[], None)
            .await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(code.as_deref(), Some("CertificateStateException"));

        let (status, _, body) = api
            .call(
                Method::PUT,
                &format!("/certificates/{id}?newStatus=REVOKED"),
                &[],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::Value::Null);
        let (status, code, _) = api
            .call(
                Method::PUT,
                &format!("/certificates/{id}?newStatus=ACTIVE"),
                &[],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(code.as_deref(), Some("CertificateStateException"));
        let (status, code, _) = api
            .call(
                Method::PUT,
                &format!("/certificates/{id}?newStatus=BOGUS"),
                &[],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("InvalidRequestException"));

        let (status, _, listed) = api
            .call(
                Method::GET,
                "/certificates?pageSize=1&isAscendingOrder=true",
                &[],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listed["certificates"][0]["certificateId"], id.as_str());
        assert_eq!(listed["certificates"][0]["status"], "REVOKED");
        assert!(listed.get("nextMarker").is_none());

        let (status, _, _) = api
            .call(Method::DELETE, &format!("/certificates/{id}"), &[], None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, code, _) = api
            .call(Method::GET, &format!("/certificates/{id}"), &[], None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code.as_deref(), Some("ResourceNotFoundException"));
    }

    #[tokio::test]
    async fn csr_and_ca_registration_over_http() {
        let api = TestApi::new();
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "dev");
        let csr = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let (status, _, made) = api
            .call(
                Method::POST,
                "/certificates?setAsActive=false",
                &[],
                Some(json!({ "certificateSigningRequest": csr })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{made}");
        assert!(made["certificatePem"].is_string());
        let (status, code, _) = api
            .call(
                Method::POST,
                "/certificates",
                &[],
                Some(json!({ "certificateSigningRequest": "nope" })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("InvalidRequestException"));

        // A CA of the customer's own.
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "customer CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).expect("ca").pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.signed_by(&key, &issuer).expect("leaf").pem()
        };

        let (_, _, code_body) = api.call(Method::GET, "/registrationcode", &[], None).await;
        let reg_code = code_body["registrationCode"]
            .as_str()
            .expect("code")
            .to_owned();
        let (status, code, _) = api
            .call(
                Method::POST,
                "/cacertificate",
                &[],
                Some(json!({"caCertificate": ca_pem, "verificationCertificate": leaf("wrong")})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("RegistrationCodeValidationException"));
        let (status, _, ca) = api
            .call(
                Method::POST,
                "/cacertificate?setAsActive=true&allowAutoRegistration=true",
                &[],
                Some(
                    json!({"caCertificate": ca_pem, "verificationCertificate": leaf(&reg_code),
                            "registrationConfig": {"templateName": "jitp"}}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{ca}");
        let ca_id = ca["certificateId"].as_str().expect("id").to_owned();
        assert!(
            ca["certificateArn"]
                .as_str()
                .is_some_and(|a| a.ends_with(&format!(":cacert/{ca_id}")))
        );
        let (_, _, described) = api
            .call(Method::GET, &format!("/cacertificate/{ca_id}"), &[], None)
            .await;
        assert_eq!(described["certificateDescription"]["status"], "ACTIVE");
        assert_eq!(
            described["certificateDescription"]["autoRegistrationStatus"],
            "ENABLE"
        );
        assert_eq!(
            described["registrationConfig"],
            json!({"templateName": "jitp"})
        );

        let (status, _, registered) = api
            .call(
                Method::POST,
                "/certificate/register",
                &[],
                Some(
                    json!({"certificatePem": leaf("device"), "caCertificatePem": ca_pem,
                            "status": "ACTIVE"}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{registered}");
        let (_, _, by_ca) = api
            .call(
                Method::GET,
                &format!("/certificates-by-ca/{ca_id}"),
                &[],
                None,
            )
            .await;
        assert_eq!(
            by_ca["certificates"][0]["certificateId"],
            registered["certificateId"]
        );

        let stranger_key = KeyPair::generate().expect("key");
        let stranger = CertificateParams::new(vec!["x".to_owned()])
            .expect("params")
            .self_signed(&stranger_key)
            .expect("cert")
            .pem();
        let (status, code, _) = api
            .call(
                Method::POST,
                "/certificate/register",
                &[],
                Some(json!({ "certificatePem": stranger })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code.as_deref(), Some("CertificateValidationException"));
        let (status, _, sni) = api
            .call(
                Method::POST,
                "/certificate/register-no-ca",
                &[],
                Some(json!({ "certificatePem": stranger })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, d) = api
            .call(
                Method::GET,
                &format!(
                    "/certificates/{}",
                    sni["certificateId"].as_str().expect("id")
                ),
                &[],
                None,
            )
            .await;
        assert_eq!(d["certificateDescription"]["certificateMode"], "SNI_ONLY");
        assert_eq!(d["certificateDescription"]["status"], "INACTIVE");

        let (status, code, _) = api
            .call(
                Method::DELETE,
                &format!("/cacertificate/{ca_id}"),
                &[],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(code.as_deref(), Some("CertificateStateException"));
        let (status, _, _) = api
            .call(
                Method::PUT,
                &format!(
                    "/cacertificate/{ca_id}?newStatus=INACTIVE&newAutoRegistrationStatus=DISABLE"
                ),
                &[],
                Some(json!({"removeAutoRegistration": true})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, listed) = api.call(Method::GET, "/cacertificates", &[], None).await;
        assert_eq!(listed["certificates"][0]["status"], "INACTIVE");
        let (status, _, _) = api
            .call(
                Method::DELETE,
                &format!("/cacertificate/{ca_id}"),
                &[],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
}
