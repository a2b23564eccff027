//! An account's place in the migration, where the router sends its users, and which changes of
//! state are allowed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an account is in its migration.
///
/// ```text
/// pending ──enroll──▶ syncing ──snapshot applied──▶ live ──cutover──▶ cut-over ──complete──▶ done
///                        │  ▲                        │  ▲                 │
///                      pause│resume              pause│resume          rollback
///                        ▼  │                        ▼  │                 ▼
///                        paused                      paused           rolled-back ──cutover──▶ cut-over
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Known, not enrolled: nothing is published for it.
    Pending,
    /// Enrolled; its snapshot is being published and applied.
    Syncing,
    /// Its snapshot was applied; it follows every change.
    Live,
    /// Changes are detected and published but held by the consumer, not applied.
    Paused,
    /// Routed to the cloud; legacy is no longer followed.
    CutOver,
    /// Routed to legacy again after a cutover, and followed again.
    RolledBack,
    /// Moved for good: the consumer's bookkeeping for it is gone, its history kept.
    Done,
}

/// Where the router sends an account's users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Legacy,
    Cloud,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Syncing,
        State::Live,
        State::Paused,
        State::CutOver,
        State::RolledBack,
        State::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Syncing => "syncing",
            State::Live => "live",
            State::Paused => "paused",
            State::CutOver => "cut-over",
            State::RolledBack => "rolled-back",
            State::Done => "done",
        }
    }

    /// Whether the producer detects and publishes the account's changes.
    pub fn is_followed(self) -> bool {
        match self {
            State::Syncing | State::Live | State::Paused | State::RolledBack => true,
            State::Pending | State::CutOver | State::Done => false,
        }
    }

    /// Where the router sends the account's users.
    pub fn route(self) -> Route {
        match self {
            State::CutOver | State::Done => Route::Cloud,
            State::Pending | State::Syncing | State::Live | State::Paused | State::RolledBack => {
                Route::Legacy
            }
        }
    }

    /// The states an account may come to from this one.
    pub fn next(self) -> &'static [State] {
        match self {
            State::Pending => &[State::Syncing],
            State::Syncing => &[State::Live, State::Paused],
            State::Live => &[State::Paused, State::CutOver],
            State::Paused => &[State::Syncing, State::Live],
            State::CutOver => &[State::RolledBack, State::Done],
            State::RolledBack => &[State::CutOver, State::Paused],
            State::Done => &[],
        }
    }

    pub fn can_become(self, next: State) -> bool {
        self.next().contains(&next)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::Legacy => "legacy",
            Route::Cloud => "cloud",
        })
    }
}

/// A state name that is not one of [`State::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{0:?} is not a migration state (pending, syncing, live, paused, cut-over, rolled-back, done)"
)]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownState(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>().ok(), Some(state));
            let json = serde_json::to_string(&state).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert!("cutover".parse::<State>().is_err());
    }

    #[test]
    fn only_a_cut_over_account_is_routed_to_the_cloud_and_no_longer_followed() {
        for state in State::ALL {
            let cloud = matches!(state, State::CutOver | State::Done);
            assert_eq!(state.route() == Route::Cloud, cloud, "{state}");
            assert_eq!(
                state.is_followed(),
                !cloud && state != State::Pending,
                "{state}"
            );
        }
    }

    #[test]
    fn the_cloud_is_reached_only_through_a_live_account() {
        // Every path from pending to cut-over passes through live: a cutover needs the
        // snapshot applied.
        let mut seen = vec![State::Pending];
        let mut frontier = vec![State::Pending];
        while let Some(state) = frontier.pop() {
            for &next in state.next() {
                if next == State::CutOver {
                    assert!(
                        matches!(state, State::Live | State::RolledBack),
                        "{state} → cut-over"
                    );
                }
                if !seen.contains(&next) && next != State::Live {
                    seen.push(next);
                    frontier.push(next);
                }
            }
        }
        assert!(!seen.contains(&State::CutOver));
        assert!(!State::Done.can_become(State::Pending));
    }
}
