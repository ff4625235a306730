//! Identity: who a signed-in user is, as made by `saml` (and completed by `provision`) and read
//! by everything downstream (sessions, headers, access rules).

use serde::{Deserialize, Serialize};

/// A verified user: what the IdP asserted plus what the dashboard's admin API holds for them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The SAML NameID (trimmed), the subject the IdP vouched for.
    pub subject: String,
    /// The NameID Format URI, when the IdP sent one (needed again for single logout).
    pub name_id_format: Option<String>,
    /// The AuthnStatement's SessionIndex, when sent (single logout).
    pub session_index: Option<String>,
    /// Email from the mapped attribute, else an email-format NameID.
    pub email: Option<String>,
    /// Given name from the mapped attribute.
    pub first_name: Option<String>,
    /// Family name from the mapped attribute.
    pub last_name: Option<String>,
    /// Group memberships from the mapped multi-valued attribute, in IdP order, deduplicated.
    pub groups: Vec<String>,
    /// The dashboard's user id (the SCIM `id`) once provisioning resolved the user.
    pub user_id: Option<String>,
    /// The workspace the dashboard holds for this user (or the one used to create them).
    pub workspace: Option<String>,
    /// The permission set the dashboard holds for this user (or the one used to create them).
    pub permission_set: Option<String>,
}

impl Identity {
    /// "First Last", or whichever part exists, or `None`.
    pub fn display_name(&self) -> Option<String> {
        match (self.first_name.as_deref(), self.last_name.as_deref()) {
            (Some(f), Some(l)) if !f.is_empty() && !l.is_empty() => Some(format!("{f} {l}")),
            (Some(f), _) if !f.is_empty() => Some(f.to_string()),
            (_, Some(l)) if !l.is_empty() => Some(l.to_string()),
            _ => None,
        }
    }

    /// The user id sent upstream: the dashboard's id when provisioning resolved one, else the NameID.
    pub fn upstream_user(&self) -> &str {
        self.user_id.as_deref().unwrap_or(&self.subject)
    }
}
