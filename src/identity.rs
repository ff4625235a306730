//! Identity: who a signed-in user is, as made by `saml` (and completed by `provision`) and read
//! by everything downstream (sessions, headers, access rules).
//!
//! Every session holds one, so its shape is chosen for memory: strings are boxed slices (no
//! spare capacity), and the values many users share (NameID format, names, workspace,
//! permission set, group lists) are `Arc<str>` that [`Identity::interned`] points at one copy.

use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

/// A list of group names, shared between the sessions that hold the same list.
pub type Groups = Arc<[Arc<str>]>;

/// A verified user: what the IdP asserted plus what the dashboard's admin API holds for them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The SAML NameID (trimmed), the subject the IdP vouched for.
    pub subject: Box<str>,
    /// The NameID Format URI, when the IdP sent one (needed again for single logout).
    pub name_id_format: Option<Arc<str>>,
    /// The NameID's `NameQualifier` and `SPNameQualifier`, when the IdP sent them: our
    /// LogoutRequest names the subject exactly as the IdP did (SAML core §2.2.2), which IdPs
    /// issuing qualified persistent identifiers (Shibboleth, ADFS) require.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_qualifier: Option<Arc<str>>,
    /// See `name_qualifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_name_qualifier: Option<Arc<str>>,
    /// The AuthnStatement's SessionIndex, when sent (single logout).
    pub session_index: Option<Box<str>>,
    /// Email from the mapped attribute, else an email-format NameID.
    pub email: Option<Box<str>>,
    /// Given name from the mapped attribute.
    pub first_name: Option<Arc<str>>,
    /// Family name from the mapped attribute.
    pub last_name: Option<Arc<str>>,
    /// Group memberships from the mapped multi-valued attribute, in IdP order, deduplicated.
    pub groups: Groups,
    /// The dashboard's user id (the SCIM `id`) once provisioning resolved the user.
    pub user_id: Option<Box<str>>,
    /// The workspace the dashboard holds for this user (or the one used to create them).
    pub workspace: Option<Arc<str>>,
    /// The permission set the dashboard holds for this user (or the one used to create them).
    pub permission_set: Option<Arc<str>>,
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

    /// The same identity with its shareable values pointing at the copies other sessions
    /// already hold (see [`intern`]); what is unique to the user is left alone.
    pub fn interned(mut self) -> Self {
        for field in [
            &mut self.name_id_format,
            &mut self.name_qualifier,
            &mut self.sp_name_qualifier,
            &mut self.first_name,
            &mut self.last_name,
            &mut self.workspace,
            &mut self.permission_set,
        ]
        .into_iter()
        .flatten()
        {
            *field = intern(field);
        }
        self.groups = intern_groups(&self.groups);
        self
    }
}

/// Whether `s` has the shape of an email address: `local@domain.tld`, one `@`, no whitespace,
/// and a domain of at least two labels none of which is empty (so no leading or trailing dot
/// and no `..`: `bob@.corp.example.org` is not an email, and would otherwise match
/// `*.corp.example.org`).
pub fn looks_like_email(s: &str) -> bool {
    s.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.contains('@')
            && domain.split('.').all(|label| !label.is_empty())
    }) && !s.contains(char::is_whitespace)
}

/// Group names from plain strings, in order.
pub fn groups<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Groups {
    names.into_iter().map(|n| Arc::from(n.as_ref())).collect()
}

/// Bytes of text the interners keep at most. Past it, moka's admission policy keeps the values
/// seen most often; a value it does not keep is simply not shared.
const INTERNED_BYTES: u64 = 1 << 20;

static STRINGS: LazyLock<moka::sync::Cache<Arc<str>, Arc<str>>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(INTERNED_BYTES)
        .weigher(|k: &Arc<str>, _| u32::try_from(k.len() + 64).unwrap_or(u32::MAX))
        .build()
});

static GROUP_LISTS: LazyLock<moka::sync::Cache<Groups, Groups>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(INTERNED_BYTES)
        .weigher(|k: &Groups, _| {
            let bytes: usize = k.iter().map(|g| g.len() + 16).sum();
            u32::try_from(bytes + 64).unwrap_or(u32::MAX)
        })
        .build()
});

/// The one shared copy of `value` (NameID formats, names, workspaces: values that repeat
/// across users), so that a million sessions do not hold a million copies.
fn intern(value: &Arc<str>) -> Arc<str> {
    if let Some(shared) = STRINGS.get(&**value) {
        return shared;
    }
    STRINGS.insert(value.clone(), value.clone());
    value.clone()
}

/// The one shared copy of a group list (its names interned too).
fn intern_groups(list: &Groups) -> Groups {
    if list.is_empty() {
        return list.clone();
    }
    if let Some(shared) = GROUP_LISTS.get(&**list) {
        return shared;
    }
    let list: Groups = list.iter().map(intern).collect();
    GROUP_LISTS.insert(list.clone(), list.clone());
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_domain_has_no_empty_label() {
        for ok in ["bob@corp.example.org", "a.b@x.io", "o\"d@example.com"] {
            assert!(looks_like_email(ok), "{ok}");
        }
        for bad in [
            "bob@.corp.example.org",
            "bob@corp.example.org.",
            "bob@corp..example.org",
            "bob@.",
            "bob@..",
            "bob@example",
            "@example.com",
            "bob@ex@ample.com",
            "bo b@example.com",
        ] {
            assert!(!looks_like_email(bad), "{bad}");
        }
    }

    #[test]
    fn interning_shares_equal_values_and_keeps_unique_ones() {
        let make = |subject: &str| Identity {
            subject: subject.into(),
            email: Some(subject.into()),
            workspace: Some(Arc::from(String::from("Production"))),
            groups: groups(["analysts", "admins"]),
            ..Identity::default()
        };
        let a = make("a@example.com").interned();
        let b = make("b@example.com").interned();
        assert_eq!(a.workspace, b.workspace);
        assert!(Arc::ptr_eq(
            a.workspace.as_ref().unwrap(),
            b.workspace.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(&a.groups, &b.groups));
        assert_eq!(&*b.groups[1], "admins");
        assert_eq!(&*a.subject, "a@example.com");
        assert_eq!(&*b.subject, "b@example.com");
        // Interning changes no value.
        assert_eq!(make("c@example.com").interned(), make("c@example.com"));
    }
}
