//! What every request handler shares. It has a module of its own because the `/v1` routes,
//! the admin routes and the server all need it, and none of them should depend on another
//! just to reach it.

use crate::auth::SharedTokens;
use crate::faults::SharedFaults;
use crate::registry::SharedRegistry;
use crate::store::Store;

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) faults: SharedFaults,
    /// Issued tokens, when the simulator requires credentials.
    pub(crate) tokens: Option<SharedTokens>,
    /// The schema registry's schemas and subjects.
    pub(crate) registry: SharedRegistry,
}
