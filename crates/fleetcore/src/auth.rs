//! Who a connecting MQTT client is and what it may do.
//!
//! With a certificate (the TLS listeners): the certificate must be registered and ACTIVE (and
//! its CA, if registered, ACTIVE); its attached policies, and those of its thing's groups,
//! decide CONNECT and everything after it. Without one (plain listeners, only with
//! `--allow-anonymous`): the policy named by `--anonymous-policy` decides, or, without that
//! flag, everything is allowed.

use std::sync::{Arc, LazyLock, OnceLock};

use fleetcore_api::iotdata::DeviceCaller;
use fleetcore_core::access::{AllowAll, ConnectionGrant};
use fleetcore_core::auth::{AuthOutcome, Authenticator, ClientCredentials, Refusal};
use fleetcore_identity::policy::{
    GrantSubject, Policies, PolicyGrant, PolicyVariables, ResourceArns,
};
use fleetcore_identity::{ConnectRefusal, IdentityService, certificate_id, peer_identity};
use fleetcore_provisioning::jit::{FirstConnection, JustInTime};

/// The principal given to clients without a certificate when anonymous access is allowed.
pub const ANONYMOUS: &str = "anonymous";

/// Authenticates by registered client certificate, authorizes by IoT policies.
pub struct IdentityAuthenticator {
    /// The registry and certificates.
    pub identity: Arc<IdentityService>,
    /// The policies.
    pub policies: Arc<Policies>,
    /// ARNs of this account and region, for policy resources.
    pub arns: ResourceArns,
    /// Accept clients without a certificate (plain TCP and WebSocket listeners).
    pub allow_anonymous: bool,
    /// The policy that governs anonymous clients; `None` allows them everything.
    pub anonymous_policy: Option<String>,
    /// Just-in-time provisioning and registration of unregistered certificates from
    /// registered CAs (set once the broker, which it announces through, is running).
    pub just_in_time: OnceLock<Arc<JustInTime>>,
}

/// The grant of anonymous clients when no policy governs them. It holds nothing per
/// connection, so every such connection shares this one instead of allocating its own.
fn allow_all() -> Arc<dyn ConnectionGrant> {
    static ALLOW_ALL: LazyLock<Arc<AllowAll>> = LazyLock::new(|| Arc::new(AllowAll));
    Arc::clone(&*ALLOW_ALL) as Arc<dyn ConnectionGrant>
}

fn refused(why: impl Into<String>) -> AuthOutcome {
    AuthOutcome::Refused(Refusal::NotAuthorized(why.into()))
}

/// Resolves what applies to a certificate's connection, now and on every revalidation: the
/// certificate must still be allowed to connect, and the thing (named by the client id and
/// attached to the certificate), its groups and its attributes feed the policy variables.
fn certificate_subject(
    identity: &IdentityService,
    certificate: &str,
    client_id: &str,
    common_name: Option<&str>,
) -> Result<GrantSubject, String> {
    identity
        .certificate_for_connect(certificate)
        .map_err(|e| e.to_string())?;
    let things = identity
        .things_for_certificate(certificate)
        .map_err(|e| e.to_string())?;
    let mut variables = PolicyVariables {
        client_id: Some(client_id.to_string()),
        thing_is_attached: Some(false),
        certificate_common_name: common_name.map(str::to_string),
        ..PolicyVariables::default()
    };
    let mut targets = vec![identity.certificate_arn(certificate)];
    // AWS binds the connection to a thing only when the client id is the name of a thing
    // attached to the certificate.
    if things.iter().any(|t| t == client_id)
        && let Some(thing) = identity.thing(client_id).map_err(|e| e.to_string())?
    {
        variables.thing_name = Some(thing.name.clone());
        variables.thing_type_name = thing.thing_type_name.clone();
        variables.thing_attributes = thing.attributes.clone();
        variables.thing_is_attached = Some(true);
        for group in identity
            .thing_groups_for_thing(&thing.name)
            .map_err(|e| e.to_string())?
        {
            targets.push(identity.thing_group_arn(&group));
        }
    }
    Ok(GrantSubject {
        targets,
        policy_names: Vec::new(),
        variables,
    })
}

impl IdentityAuthenticator {
    /// The caller a device certificate (DER, already verified by TLS) stands for on the device
    /// HTTPS listener. HTTP has no client id: the connection is bound to the certificate's
    /// thing when exactly one thing is attached to it (so `${iot:Connection.Thing.ThingName}`
    /// works as over MQTT).
    pub fn device_caller(&self, der: &[u8]) -> Result<DeviceCaller, String> {
        let id = certificate_id(der);
        let common_name = peer_identity(der)
            .map_err(|e| format!("unreadable client certificate: {e}"))?
            .common_name;
        let identity = Arc::clone(&self.identity);
        let cert = id.clone();
        let resolver = Arc::new(move || {
            let things = identity
                .things_for_certificate(&cert)
                .map_err(|e| e.to_string())?;
            let bound = match things.as_slice() {
                [only] => only.clone(),
                _ => String::new(),
            };
            let mut subject =
                certificate_subject(&identity, &cert, &bound, common_name.as_deref())?;
            subject.variables.client_id = None;
            Ok(subject)
        });
        let grant = PolicyGrant::new(Arc::clone(&self.policies), self.arns.clone(), resolver)
            .map_err(|e| e.to_string())?;
        Ok(DeviceCaller {
            certificate_id: id,
            grant: Arc::new(grant),
        })
    }

    /// Gives just-in-time provisioning its chance at a certificate that is not registered;
    /// `Some` refusal when the connection must not go on.
    fn first_connection(&self, der: &[u8], id: &str) -> Option<AuthOutcome> {
        let jit = self.just_in_time.get()?;
        if !matches!(
            self.identity.certificate_for_connect(id),
            Err(ConnectRefusal::Unregistered(_))
        ) {
            return None;
        }
        match jit.first_connection(der) {
            Ok(FirstConnection::NotEligible | FirstConnection::Provisioned) => None,
            Ok(FirstConnection::Registered { certificate_id }) => Some(refused(format!(
                "certificate {certificate_id} was registered just in time as PENDING_ACTIVATION; it may connect once activated"
            ))),
            Err(e) => {
                tracing::warn!(certificate = %id, reason = %e, "just-in-time provisioning refused a device");
                Some(refused(format!("just-in-time provisioning failed: {e}")))
            }
        }
    }

    fn certificate(&self, der: &[u8], client_id: &str) -> AuthOutcome {
        let id = certificate_id(der);
        if let Some(refusal) = self.first_connection(der, &id) {
            return refusal;
        }
        let common_name = match peer_identity(der) {
            Ok(p) => p.common_name,
            Err(e) => return refused(format!("unreadable client certificate: {e}")),
        };
        let identity = Arc::clone(&self.identity);
        let (cert, client) = (id.clone(), client_id.to_string());
        let resolver = Arc::new(move || {
            certificate_subject(&identity, &cert, &client, common_name.as_deref())
        });
        let grant = match PolicyGrant::new(Arc::clone(&self.policies), self.arns.clone(), resolver)
        {
            Ok(g) => g,
            Err(e) => return refused(e.to_string()),
        };
        if !grant.allows_connect(client_id) {
            return refused(format!(
                "the policies of certificate {id} do not allow iot:Connect as client id {client_id}"
            ));
        }
        AuthOutcome::Allowed {
            principal: id,
            grant: Arc::new(grant),
        }
    }

    fn anonymous(&self, client_id: &str) -> AuthOutcome {
        let Some(policy) = &self.anonymous_policy else {
            return AuthOutcome::Allowed {
                principal: ANONYMOUS.to_string(),
                grant: allow_all(),
            };
        };
        let subject = GrantSubject {
            targets: Vec::new(),
            policy_names: vec![policy.clone()],
            variables: PolicyVariables {
                client_id: Some(client_id.to_string()),
                ..PolicyVariables::default()
            },
        };
        let grant =
            match PolicyGrant::with_subject(Arc::clone(&self.policies), self.arns.clone(), subject)
            {
                Ok(g) => g,
                Err(e) => return refused(format!("anonymous policy {policy}: {e}")),
            };
        if !grant.allows_connect(client_id) {
            return refused(format!(
                "the anonymous policy {policy} does not allow iot:Connect as client id {client_id}"
            ));
        }
        let grant: Arc<dyn ConnectionGrant> = Arc::new(grant);
        AuthOutcome::Allowed {
            principal: ANONYMOUS.to_string(),
            grant,
        }
    }
}

impl Authenticator for IdentityAuthenticator {
    fn authenticate(&self, credentials: &ClientCredentials<'_>) -> AuthOutcome {
        match credentials.peer_certificate {
            Some(der) => self.certificate(der, credentials.client_id),
            None if self.allow_anonymous => self.anonymous(credentials.client_id),
            None => refused(
                "a client certificate is required (start with --allow-anonymous to accept clients without one)",
            ),
        }
    }
}
