//! Certificate rules: issuing, CSR signing, registration and chain validation against a second
//! CA made here, the status state machine, deletion conflicts, paging and persistence.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fleetcore_core::{AccountContext, RedbStore, StoreError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::{Duration, OffsetDateTime};

use super::*;
use crate::registry::{NewThing, ThingPrincipalType};
use crate::service::{AttachmentCheck, ConnectRefusal, IdentityService};

/// A service over a fresh data dir (PKI and store); keep the tempdir alive.
fn service() -> (tempfile::TempDir, IdentityService) {
    let dir = tempfile::tempdir().unwrap();
    let svc = open_service(dir.path());
    (dir, svc)
}

fn open_service(dir: &std::path::Path) -> IdentityService {
    let pki = Pki::load_or_create(&dir.join("data"), &["localhost".to_owned()]).unwrap();
    let kv = RedbStore::open(&dir.join("store.redb")).unwrap();
    IdentityService::new(
        Arc::new(kv),
        Arc::new(pki),
        AccountContext::new("eu-west-1", "123456789012"),
    )
}

/// A CA made outside fleetcore, as a customer's own.
struct OtherCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn other_ca(name: &str) -> OtherCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    OtherCa {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn leaf_from(
    ca: &OtherCa,
    cn: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = not_before;
    params.not_after = not_after;
    params.signed_by(&key, &ca.issuer).unwrap().pem()
}

fn leaf(ca: &OtherCa, cn: &str) -> String {
    let now = OffsetDateTime::now_utc();
    leaf_from(ca, cn, now - Duration::days(1), now + Duration::days(30))
}

fn register_ca(svc: &IdentityService, ca: &OtherCa, active: bool) -> CaCertificateRecord {
    svc.certificates()
        .register_ca_certificate(NewCaCertificate {
            ca_certificate_pem: ca.pem.clone(),
            set_as_active: active,
            ..NewCaCertificate::default()
        })
        .unwrap()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn create_keys_and_certificate_issues_from_the_built_in_ca() {
    let (_dir, svc) = service();
    let made = svc
        .certificates()
        .create_keys_and_certificate(true)
        .unwrap();
    let cert = &made.certificate;
    assert_eq!(cert.status, CertificateStatus::Active);
    assert_eq!(cert.id, crate::certificate_id(&der_of(&cert.pem)));
    assert_eq!(cert.ca_certificate_id, None);
    assert_eq!(cert.mode, CertificateMode::Default);
    assert_eq!(cert.common_name.as_deref(), Some("AWS IoT Certificate"));
    assert!(made.private_key_pem.contains("PRIVATE KEY"));
    assert!(made.public_key_pem.contains("PUBLIC KEY"));
    assert!(!format!("{made:?}").contains("PRIVATE KEY"));

    let der = der_of(&cert.pem);
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(svc.pki().ca_cert_der()).unwrap();
    parsed.verify_signature(Some(ca.public_key())).unwrap();
    // Valid until (about) the CA's end.
    let gap = svc.pki().ca_not_after() - parsed.validity().not_after.to_datetime();
    assert!(gap < Duration::days(2), "{gap}");
    let key = KeyPair::from_pem(&made.private_key_pem).unwrap();
    assert_eq!(
        parsed.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );

    assert_eq!(
        svc.certificates().describe_certificate(&cert.id).unwrap(),
        *cert
    );
    assert_eq!(
        svc.certificates().certificate_arn(&cert.id),
        format!("arn:aws:iot:eu-west-1:123456789012:cert/{}", cert.id)
    );
    let inactive = svc
        .certificates()
        .create_keys_and_certificate(false)
        .unwrap();
    assert_eq!(inactive.certificate.status, CertificateStatus::Inactive);
}

#[test]
fn certificate_ids_are_validated_and_normalised() {
    let (_dir, svc) = service();
    let made = svc
        .certificates()
        .create_keys_and_certificate(false)
        .unwrap();
    let upper = made.certificate.id.to_ascii_uppercase();
    assert_eq!(
        svc.certificates().describe_certificate(&upper).unwrap().id,
        made.certificate.id
    );
    assert!(matches!(
        svc.certificates().describe_certificate("abc"),
        Err(RegistryError::InvalidRequest(_))
    ));
    assert!(matches!(
        svc.certificates().describe_certificate(&"0".repeat(64)),
        Err(RegistryError::NotFound(_))
    ));
    assert_eq!(svc.certificates().certificate("abc").unwrap(), None);
}

#[test]
fn csrs_are_signed_by_the_built_in_ca_keeping_subject_and_key() {
    let (_dir, svc) = service();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["device-7.example".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "device-7");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let cert = svc
        .certificates()
        .create_certificate_from_csr(&csr, true)
        .unwrap();
    assert_eq!(cert.status, CertificateStatus::Active);
    assert_eq!(cert.common_name.as_deref(), Some("device-7"));
    let der = der_of(&cert.pem);
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        parsed.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    assert!(!parsed.is_ca());
    let (_, ca) = x509_parser::parse_x509_certificate(svc.pki().ca_cert_der()).unwrap();
    parsed.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(parsed.issuer(), ca.subject());

    for bad in ["", "not a csr", &cert.pem] {
        let err = svc
            .certificates()
            .create_certificate_from_csr(bad, false)
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
    }
}

#[test]
fn registered_certificates_must_chain_to_a_registered_active_ca() {
    let (_dir, svc) = service();
    let certs = svc.certificates();
    let ca = other_ca("customer CA");
    let stranger = other_ca("someone else's CA");
    let device = leaf(&ca, "device-1");

    // CA not registered yet: both with and without caCertificatePem.
    let err = certs
        .register_certificate(&device, Some(&ca.pem), None)
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CertificateValidation(_)),
        "{err:?}"
    );
    let err = certs.register_certificate(&device, None, None).unwrap_err();
    assert!(
        matches!(err, RegistryError::CertificateValidation(_)),
        "{err:?}"
    );

    let ca_record = register_ca(&svc, &ca, false);
    assert_eq!(ca_record.status, CaCertificateStatus::Inactive);
    assert_eq!(ca_record.id, crate::certificate_id(&der_of(&ca.pem)));
    // Registered but INACTIVE.
    let err = certs
        .register_certificate(&device, Some(&ca.pem), None)
        .unwrap_err();
    assert!(matches!(err, RegistryError::CertificateState(_)), "{err:?}");

    certs
        .update_ca_certificate(
            &ca_record.id,
            CaCertificateUpdate {
                new_status: Some(CaCertificateStatus::Active),
                ..CaCertificateUpdate::default()
            },
        )
        .unwrap();
    let registered = certs
        .register_certificate(&device, Some(&ca.pem), None)
        .unwrap();
    assert_eq!(registered.status, CertificateStatus::Inactive);
    assert_eq!(
        registered.ca_certificate_id.as_deref(),
        Some(ca_record.id.as_str())
    );

    // The same certificate again.
    let err = certs
        .register_certificate(&device, None, Some(CertificateStatus::Active))
        .unwrap_err();
    match err {
        RegistryError::AlreadyExists { id, arn, .. } => {
            assert_eq!(id, registered.id);
            assert!(arn.ends_with(&format!(":cert/{id}")));
        }
        other => panic!("{other:?}"),
    }

    // Found without caCertificatePem; status honoured.
    let second = certs
        .register_certificate(
            &leaf(&ca, "device-2"),
            None,
            Some(CertificateStatus::Active),
        )
        .unwrap();
    assert_eq!(second.status, CertificateStatus::Active);
    assert_eq!(
        second.ca_certificate_id.as_deref(),
        Some(ca_record.id.as_str())
    );

    // Signed by another CA, while naming ours.
    let err = certs
        .register_certificate(&leaf(&stranger, "x"), Some(&ca.pem), None)
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CertificateValidation(_)),
        "{err:?}"
    );

    // Expired and not yet valid.
    let now = OffsetDateTime::now_utc();
    for (from, to) in [
        (now - Duration::days(10), now - Duration::days(1)),
        (now + Duration::days(1), now + Duration::days(10)),
    ] {
        let err = certs
            .register_certificate(&leaf_from(&ca, "old", from, to), None, None)
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::CertificateValidation(_)),
            "{err:?}"
        );
    }
    let err = certs
        .register_certificate(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            None,
            None,
        )
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CertificateValidation(_)),
        "{err:?}"
    );
    let err = certs
        .register_certificate(
            &leaf(&ca, "p"),
            None,
            Some(CertificateStatus::PendingTransfer),
        )
        .unwrap_err();
    assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");

    let by_ca: Vec<String> = certs
        .list_certificates(Some(&ca_record.id), true, &PageRequest::default())
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(by_ca, [registered.id.clone(), second.id.clone()]);
}

#[test]
fn certificates_without_a_ca_are_sni_only() {
    let (_dir, svc) = service();
    let ca = other_ca("unregistered");
    let cert = svc
        .certificates()
        .register_certificate_without_ca(&leaf(&ca, "d"), Some(CertificateStatus::Active))
        .unwrap();
    assert_eq!(cert.mode, CertificateMode::SniOnly);
    assert_eq!(cert.ca_certificate_id, None);
    assert_eq!(cert.status, CertificateStatus::Active);
}

#[test]
fn ca_registration_rules_and_verification_certificates() {
    let (_dir, svc) = service();
    let certs = svc.certificates();
    let ca = other_ca("customer CA");

    // A leaf is not a CA.
    let err = certs
        .register_ca_certificate(NewCaCertificate {
            ca_certificate_pem: leaf(&ca, "leaf"),
            ..NewCaCertificate::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CertificateValidation(_)),
        "{err:?}"
    );

    let code = certs.registration_code().unwrap();
    assert_eq!(code.len(), 64);
    assert_eq!(certs.registration_code().unwrap(), code);

    // Wrong common name.
    let err = certs
        .register_ca_certificate(NewCaCertificate {
            ca_certificate_pem: ca.pem.clone(),
            verification_certificate_pem: Some(leaf(&ca, "not-the-code")),
            ..NewCaCertificate::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::RegistrationCodeValidation(_)),
        "{err:?}"
    );
    // Right name, wrong signer.
    let err = certs
        .register_ca_certificate(NewCaCertificate {
            ca_certificate_pem: ca.pem.clone(),
            verification_certificate_pem: Some(leaf(&other_ca("x"), &code)),
            ..NewCaCertificate::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::CertificateValidation(_)),
        "{err:?}"
    );

    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    svc.on_change(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let record = certs
        .register_ca_certificate(NewCaCertificate {
            ca_certificate_pem: ca.pem.clone(),
            verification_certificate_pem: Some(leaf(&ca, &code)),
            set_as_active: true,
            allow_auto_registration: true,
            registration_config: Some(RegistrationConfig {
                template_name: Some("jitp".into()),
                ..RegistrationConfig::default()
            }),
            ..NewCaCertificate::default()
        })
        .unwrap();
    assert_eq!(record.status, CaCertificateStatus::Active);
    assert_eq!(record.auto_registration, AutoRegistrationStatus::Enable);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        certs.active_ca_certificates().unwrap(),
        std::slice::from_ref(&record)
    );

    let err = certs
        .register_ca_certificate(NewCaCertificate {
            ca_certificate_pem: ca.pem.clone(),
            ..NewCaCertificate::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::AlreadyExists { .. }),
        "{err:?}"
    );

    let listed = certs
        .list_ca_certificates(false, Some("jitp"), &PageRequest::default())
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(
        certs
            .list_ca_certificates(false, Some("other"), &PageRequest::default())
            .unwrap()
            .items
            .is_empty()
    );

    // ACTIVE CAs cannot be deleted.
    let err = certs.delete_ca_certificate(&record.id).unwrap_err();
    assert!(matches!(err, RegistryError::CertificateState(_)), "{err:?}");
    let updated = certs
        .update_ca_certificate(
            &record.id,
            CaCertificateUpdate {
                new_status: Some(CaCertificateStatus::Inactive),
                new_auto_registration_status: Some(AutoRegistrationStatus::Disable),
                remove_auto_registration: true,
                ..CaCertificateUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(updated.status, CaCertificateStatus::Inactive);
    assert_eq!(updated.customer_version, 2);
    assert_eq!(updated.registration_config, None);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(certs.active_ca_certificates().unwrap().is_empty());
    certs.delete_ca_certificate(&record.id).unwrap();
    assert!(matches!(
        certs.describe_ca_certificate(&record.id),
        Err(RegistryError::NotFound(_))
    ));
}

#[test]
fn status_state_machine() {
    let (_dir, svc) = service();
    let certs = svc.certificates();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    svc.on_change(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let id = certs
        .create_keys_and_certificate(false)
        .unwrap()
        .certificate
        .id;
    let active = certs
        .update_certificate(&id, CertificateStatus::Active)
        .unwrap();
    assert_eq!(active.status, CertificateStatus::Active);
    assert_eq!(active.customer_version, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Same status: nothing changes, nobody is told.
    let same = certs
        .update_certificate(&id, CertificateStatus::Active)
        .unwrap();
    assert_eq!(same.customer_version, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    certs
        .update_certificate(&id, CertificateStatus::Inactive)
        .unwrap();
    certs
        .update_certificate(&id, CertificateStatus::Revoked)
        .unwrap();
    for next in [CertificateStatus::Active, CertificateStatus::Inactive] {
        let err = certs.update_certificate(&id, next).unwrap_err();
        assert!(matches!(err, RegistryError::CertificateState(_)), "{err:?}");
    }
    for next in [
        CertificateStatus::PendingTransfer,
        CertificateStatus::PendingActivation,
        CertificateStatus::RegisterInactive,
    ] {
        let err = certs.update_certificate(&id, next).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest(_)), "{err:?}");
    }
    assert!(matches!(
        certs.update_certificate(&"1".repeat(64), CertificateStatus::Active),
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        CertificateStatus::parse("BOGUS"),
        Err(RegistryError::InvalidRequest(_))
    ));
}

/// A stand-in for the policy module.
#[derive(Default)]
struct FakePolicies {
    attached: Mutex<BTreeMap<String, Vec<String>>>,
}

impl AttachmentCheck for FakePolicies {
    fn attached_policies(&self, target: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .attached
            .lock()
            .unwrap()
            .get(target)
            .cloned()
            .unwrap_or_default())
    }

    fn detach_all(&self, target: &str) -> Result<(), StoreError> {
        self.attached.lock().unwrap().remove(target);
        Ok(())
    }
}

#[test]
fn deletion_requires_inactive_and_detached() {
    let (_dir, svc) = service();
    let policies = Arc::new(FakePolicies::default());
    assert!(svc.set_attachment_check(Arc::clone(&policies) as Arc<dyn AttachmentCheck>));
    assert!(!svc.set_attachment_check(Arc::new(FakePolicies::default())));
    let certs = svc.certificates();
    let id = certs
        .create_keys_and_certificate(true)
        .unwrap()
        .certificate
        .id;
    let arn = certs.certificate_arn(&id);

    let err = certs.delete_certificate(&id, true).unwrap_err();
    assert!(matches!(err, RegistryError::CertificateState(_)), "{err:?}");
    certs
        .update_certificate(&id, CertificateStatus::Inactive)
        .unwrap();

    svc.registry()
        .create_thing("t1", NewThing::default())
        .unwrap();
    svc.registry()
        .attach_thing_principal("t1", &arn, ThingPrincipalType::NonExclusive)
        .unwrap();
    // A thing attachment is a conflict even with forceDelete.
    for force in [false, true] {
        let err = certs.delete_certificate(&id, force).unwrap_err();
        assert!(matches!(err, RegistryError::DeleteConflict(_)), "{err:?}");
    }
    svc.registry().detach_thing_principal("t1", &arn).unwrap();

    policies
        .attached
        .lock()
        .unwrap()
        .insert(arn.clone(), vec!["p1".into()]);
    let err = certs.delete_certificate(&id, false).unwrap_err();
    assert!(matches!(err, RegistryError::DeleteConflict(_)), "{err:?}");
    certs.delete_certificate(&id, true).unwrap();
    assert!(policies.attached.lock().unwrap().is_empty());
    assert_eq!(certs.certificate(&id).unwrap(), None);
    assert!(matches!(
        certs.delete_certificate(&id, false),
        Err(RegistryError::NotFound(_))
    ));

    // A revoked certificate can be deleted too.
    let revoked = certs
        .create_keys_and_certificate(false)
        .unwrap()
        .certificate
        .id;
    certs
        .update_certificate(&revoked, CertificateStatus::Revoked)
        .unwrap();
    certs.delete_certificate(&revoked, false).unwrap();
}

#[test]
fn deleting_a_group_detaches_its_policies() {
    let (_dir, svc) = service();
    let policies = Arc::new(FakePolicies::default());
    svc.set_attachment_check(Arc::clone(&policies) as Arc<dyn AttachmentCheck>);
    svc.registry()
        .create_thing_group("g", Default::default(), None, vec![])
        .unwrap();
    let arn = svc.thing_group_arn("g");
    policies
        .attached
        .lock()
        .unwrap()
        .insert(arn.clone(), vec!["p".into()]);
    svc.registry().delete_thing_group("g", None).unwrap();
    assert!(policies.attached.lock().unwrap().is_empty());
}

#[test]
fn list_pages_by_creation_date_both_ways() {
    let (_dir, svc) = service();
    let certs = svc.certificates();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            certs
                .create_keys_and_certificate(false)
                .unwrap()
                .certificate
                .id,
        );
        // Creation dates have millisecond resolution; keep them distinct.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    for ascending in [true, false] {
        let mut seen = Vec::new();
        let mut page = PageRequest::first(2);
        loop {
            let result = certs.list_certificates(None, ascending, &page).unwrap();
            assert!(result.items.len() <= 2);
            seen.extend(result.items.into_iter().map(|c| c.id));
            match result.next_token {
                Some(marker) => page = PageRequest::after(marker, 2),
                None => break,
            }
        }
        let mut expected = ids.clone();
        if !ascending {
            expected.reverse();
        }
        assert_eq!(seen, expected, "ascending: {ascending}");
    }
    let default_page = certs
        .list_certificates(None, false, &PageRequest::default())
        .unwrap();
    assert_eq!(default_page.items.len(), 5);
}

#[test]
fn connect_checks_status_validity_and_ca() {
    let (_dir, svc) = service();
    let certs = svc.certificates();
    let id = certs
        .create_keys_and_certificate(false)
        .unwrap()
        .certificate
        .id;
    assert!(matches!(
        svc.certificate_for_connect(&id),
        Err(ConnectRefusal::NotActive { .. })
    ));
    certs
        .update_certificate(&id, CertificateStatus::Active)
        .unwrap();
    assert_eq!(svc.certificate_for_connect(&id).unwrap().id, id);
    assert!(
        svc.certificate_status_by_id(&id)
            .unwrap()
            .unwrap()
            .is_usable_now()
    );
    assert!(matches!(
        svc.certificate_for_connect(&"2".repeat(64)),
        Err(ConnectRefusal::Unregistered(_))
    ));

    let ca = other_ca("customer CA");
    let ca_id = register_ca(&svc, &ca, true).id;
    let device = certs
        .register_certificate(&leaf(&ca, "d"), None, Some(CertificateStatus::Active))
        .unwrap();
    svc.certificate_for_connect(&device.id).unwrap();
    certs
        .update_ca_certificate(
            &ca_id,
            CaCertificateUpdate {
                new_status: Some(CaCertificateStatus::Inactive),
                ..CaCertificateUpdate::default()
            },
        )
        .unwrap();
    assert!(matches!(
        svc.certificate_for_connect(&device.id),
        Err(ConnectRefusal::CaNotActive { .. })
    ));
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_id, ca_id, thing_id) = {
        let svc = open_service(dir.path());
        let registry = svc.registry();
        registry
            .create_thing_type("sensor", Default::default(), vec![])
            .unwrap();
        let thing = registry
            .create_thing(
                "t1",
                NewThing {
                    thing_type_name: Some("sensor".into()),
                    attributes: BTreeMap::from([("site".to_owned(), "lab".to_owned())]),
                },
            )
            .unwrap();
        registry
            .create_thing_group("g", Default::default(), None, vec![])
            .unwrap();
        registry.add_thing_to_thing_group("g", "t1").unwrap();
        let cert = svc
            .certificates()
            .create_keys_and_certificate(true)
            .unwrap()
            .certificate;
        registry
            .attach_thing_principal(
                "t1",
                &svc.certificate_arn(&cert.id),
                ThingPrincipalType::NonExclusive,
            )
            .unwrap();
        let ca = register_ca(&svc, &other_ca("customer CA"), true);
        (cert.id, ca.id, thing.id)
    };
    let svc = open_service(dir.path());
    let thing = svc.thing("t1").unwrap().unwrap();
    assert_eq!(thing.id, thing_id);
    assert_eq!(thing.thing_type_name.as_deref(), Some("sensor"));
    assert_eq!(thing.attributes["site"], "lab");
    assert_eq!(
        svc.things_for_principal(&svc.certificate_arn(&cert_id))
            .unwrap(),
        ["t1"]
    );
    assert_eq!(svc.thing_groups_for_thing("t1").unwrap(), ["g"]);
    assert_eq!(
        svc.certificate_status_by_id(&cert_id)
            .unwrap()
            .unwrap()
            .status,
        CertificateStatus::Active
    );
    assert_eq!(svc.ca_certificate(&ca_id).unwrap().unwrap().id, ca_id);
    svc.certificate_for_connect(&cert_id).unwrap();
}
