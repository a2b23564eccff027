//! `tandem router`: where each account's users go, answered from the migration store.

use tandem_migration::router::Router;

use crate::args::RouterArgs;
use crate::shutdown_on_signal;

pub(super) async fn run_router(args: RouterArgs) -> anyhow::Result<i32> {
    let store = args.migration.open_existing().await?;
    let router = Router::new(store).await?;
    tracing::info!(listen = %args.listen, refresh = %humantime::format_duration(args.refresh), "router serving GET /v1/route/{{account}}");
    router
        .serve(args.listen, args.refresh, shutdown_on_signal())
        .await?;
    Ok(0)
}
