//! AWS IoT policies: documents, their evaluation, their storage with versions and attachments,
//! and the per-connection grant the broker asks.
//!
//! - [`PolicyDocument`] parses and validates the JSON users write ([`DocumentError`] says what to
//!   fix; the API maps it to `MalformedPolicyException`).
//! - [`CompiledPolicy`], [`BoundPolicies`] and [`evaluate`] decide requests: explicit Deny wins,
//!   default deny, policy variables substituted, IAM `*`/`?` wildcards matched in linear time.
//! - [`Policies`] keeps named, versioned policies and their attachments to certificates and thing
//!   groups in the shared store, and tells listeners when anything changes.
//! - [`PolicyGrant`] implements [`fleetcore_core::access::ConnectionGrant`] for one connection.

mod document;
mod engine;
mod glob;
mod grant;
mod store;

pub use document::{
    Condition, ConditionOperator, DocumentError, Effect, MAX_DOCUMENT_CHARS,
    POLICY_LANGUAGE_VERSION, PolicyDocument, Statement, StatementProblem, StatementRef, Template,
    TemplatePart, Variable, counted_chars,
};
pub use engine::{
    BoundPolicies, CompiledPolicy, Decision, IotAction, PolicyVariables, ResourceArns, decide_mqtt,
    evaluate,
};
pub use grant::{DECISION_CACHE_CAPACITY, GrantError, GrantSubject, PolicyGrant, SubjectResolver};
pub use store::{
    MAX_POLICIES_PER_TARGET, MAX_POLICY_NAME_LEN, MAX_POLICY_VERSIONS, Page, PageSpec, Policies,
    PolicyChangeListener, PolicyError, PolicyInfo, PolicyVersionInfo, PolicyVersionSummary,
};
