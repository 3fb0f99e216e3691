//! Reading the stored map back on start, so a restart loses nothing.

use kube::api::ListParams;
use kube::{Api, Client};
use trafficmap_api::ObservedTraffic;

/// Lists every ObservedTraffic (paged).
pub async fn list_observed(client: &Client) -> Result<Vec<ObservedTraffic>, kube::Error> {
    let api = Api::<ObservedTraffic>::all(client.clone());
    let mut params = ListParams::default().limit(500);
    let mut all = Vec::new();
    loop {
        let page = api.list(&params).await?;
        all.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(all),
        }
    }
}
