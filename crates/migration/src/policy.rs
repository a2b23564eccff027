//! The migration's policy, from the `[migration]` section of the sources file.
//!
//! ```toml
//! [migration]
//! enroll = "slices"           # "all" (default): every account found is enrolled, as before
//! new_accounts = "cloud"      # "cloud" | "enroll" | "ignore" (default)
//! new_accounts_slice = "late" # the slice "enroll" adds new accounts to
//! freeze = "UPDATE accounts SET read_only = true WHERE id = :account"
//! unfreeze = "UPDATE accounts SET read_only = false WHERE id = :account"
//! ```

use serde::{Deserialize, Serialize};

/// Which accounts the producer follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enroll {
    /// Every account found is enrolled as soon as it is found.
    #[default]
    All,
    /// Accounts are enrolled by slice (or one by one); the others wait, pending.
    Slices,
}

/// What happens to an account that appears in legacy after the migration started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewAccounts {
    /// Routed to the cloud from the start; legacy is never followed for it.
    Cloud,
    /// Enrolled into the slice `new_accounts_slice`.
    Enroll,
    /// Left pending until someone enrols it.
    #[default]
    Ignore,
}

/// The `[migration]` section of the sources file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub enroll: Enroll,
    #[serde(default)]
    pub new_accounts: NewAccounts,
    pub new_accounts_slice: Option<String>,
    /// A statement run against the legacy database before a cutover, with `:account` standing
    /// for the account: it makes the account read-only there.
    pub freeze: Option<String>,
    /// Undoes `freeze`: run when a cutover is refused and on rollback.
    pub unfreeze: Option<String>,
}

impl Enroll {
    pub fn as_str(self) -> &'static str {
        match self {
            Enroll::All => "all",
            Enroll::Slices => "slices",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Enroll::All, Enroll::Slices]
            .into_iter()
            .find(|e| e.as_str() == name)
    }
}

impl NewAccounts {
    pub fn as_str(self) -> &'static str {
        match self {
            NewAccounts::Cloud => "cloud",
            NewAccounts::Enroll => "enroll",
            NewAccounts::Ignore => "ignore",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [NewAccounts::Cloud, NewAccounts::Enroll, NewAccounts::Ignore]
            .into_iter()
            .find(|e| e.as_str() == name)
    }
}

impl Policy {
    /// What is wrong with the policy, as (key, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.new_accounts == NewAccounts::Enroll && self.new_accounts_slice.is_none() {
            return Err((
                "new_accounts_slice",
                "new_accounts = \"enroll\" needs the slice to enrol them into".into(),
            ));
        }
        for (key, statement) in [("freeze", &self.freeze), ("unfreeze", &self.unfreeze)] {
            if let Some(statement) = statement {
                if !statement.contains(":account") {
                    return Err((key, "must name the account as :account".into()));
                }
            }
        }
        if self.freeze.is_some() != self.unfreeze.is_some() {
            return Err((
                "unfreeze",
                "freeze and unfreeze go together: a refused cutover must undo its freeze".into(),
            ));
        }
        Ok(())
    }
}
