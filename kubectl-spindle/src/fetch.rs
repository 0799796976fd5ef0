//! The reads the commands make, with the user's credentials: Spindle's objects, the agents'
//! Leases, Nodes and Events. Nothing here writes, and nothing calls an agent.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use spindle_agent_api::lease::AGENT_LABEL;
use spindle_crds::{Device, Target};

use crate::error::{Error, is_not_found};

/// Reads from one cluster; `agent_namespace` is where the agents' Leases live.
pub struct Reader {
    /// The client (the user's kubeconfig).
    pub client: Client,
    /// The operator's namespace (the agents' Leases).
    pub agent_namespace: String,
}

impl Reader {
    /// Fails with [`Error::CrdsMissing`] when the cluster does not serve Devices.
    pub async fn check_crds(&self) -> Result<(), Error> {
        let api: Api<Device> = Api::all(self.client.clone());
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(Error::CrdsMissing),
            Err(e) => Err(api_error("Devices", e)),
        }
    }

    /// Devices in `ns`, or in every namespace (None).
    pub async fn devices(&self, ns: Option<&str>) -> Result<Vec<Device>, Error> {
        list(self.api(ns), "Devices").await
    }

    /// Targets in `ns`, or in every namespace (None).
    pub async fn targets(&self, ns: Option<&str>) -> Result<Vec<Target>, Error> {
        list(self.api(ns), "Targets").await
    }

    /// The agents' Leases (label `spindle.dev/agent`).
    pub async fn agent_leases(&self) -> Result<Vec<Lease>, Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.agent_namespace);
        let lp = ListParams::default().labels(AGENT_LABEL);
        api.list(&lp)
            .await
            .map(|l| l.items)
            .map_err(|e| api_error(&format!("agent Leases in {}", self.agent_namespace), e))
    }

    /// Node `name`'s agent Lease, if any.
    pub async fn agent_lease(&self, node: &str) -> Result<Option<Lease>, Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.agent_namespace);
        api.get_opt(node)
            .await
            .map_err(|e| api_error(&format!("Lease {}/{node}", self.agent_namespace), e))
    }

    /// Names of the Node objects.
    pub async fn node_names(&self) -> Result<BTreeSet<String>, Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let nodes = list(api, "Nodes").await?;
        Ok(nodes.into_iter().filter_map(|n| n.metadata.name).collect())
    }

    /// Whether Node `name` exists.
    pub async fn node_exists(&self, name: &str) -> Result<bool, Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        api.get_opt(name)
            .await
            .map(|n| n.is_some())
            .map_err(|e| api_error(&format!("Node {name}"), e))
    }

    /// Device `name` in `ns`.
    pub async fn device(&self, ns: &str, name: &str) -> Result<Device, Error> {
        self.get(ns, name, "Device", "devices").await
    }

    /// Target `name` in `ns`.
    pub async fn target(&self, ns: &str, name: &str) -> Result<Target, Error> {
        self.get(ns, name, "Target", "targets").await
    }

    /// Object `name` of `kind` in `ns`; absent is [`Error::NotFound`].
    async fn get<K>(
        &self,
        ns: &str,
        name: &str,
        kind: &'static str,
        plural: &'static str,
    ) -> Result<K, Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(Some(obj)) => Ok(obj),
            Ok(None) => Err(Error::NotFound {
                kind,
                plural,
                namespace: ns.to_owned(),
                name: name.to_owned(),
            }),
            Err(e) => Err(api_error(&format!("{kind} {ns}/{name}"), e)),
        }
    }

    /// The Events in `ns` (the caller picks those about its object).
    pub async fn events(&self, ns: &str) -> Result<Vec<Event>, Error> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        list(api, &format!("Events in {ns}")).await
    }

    fn api<K>(&self, ns: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

async fn list<K>(api: Api<K>, what: &str) -> Result<Vec<K>, Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| api_error(what, e))
}

fn api_error(what: &str, source: kube::Error) -> Error {
    Error::Api {
        what: what.to_owned(),
        source,
    }
}
