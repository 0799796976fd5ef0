//! Each command: read what it needs (`fetch`), then hand it to its pure formatter.

use std::path::Path;

use anyhow::Context;
use k8s_openapi::jiff::Timestamp;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde::Serialize;
use spindle_crds::Device;

use crate::agent::AgentInfo;
use crate::describe::{self, DeviceView};
use crate::fetch::Reader;
use crate::{events, nodes, why};

/// How many Events `describe` shows (the newest).
const EVENTS_SHOWN: usize = 15;

/// A reader of the cluster the kubeconfig (or `$KUBECONFIG`, or in-cluster config) names.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    agent_namespace: &str,
) -> anyhow::Result<Reader> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .context("loading the kubeconfig")?
        }
        None if context.is_some() => Config::from_kubeconfig(&options)
            .await
            .context("loading the kubeconfig")?,
        None => Config::infer()
            .await
            .context("finding a kubeconfig ($KUBECONFIG, ~/.kube/config or in-cluster)")?,
    };
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    Ok(Reader {
        client,
        agent_namespace: agent_namespace.to_owned(),
    })
}

/// `kubectl spindle nodes`.
pub async fn nodes(r: &Reader, json: bool) -> anyhow::Result<String> {
    r.check_crds().await?;
    let now = Timestamp::now();
    let agents: Vec<AgentInfo> = r
        .agent_leases()
        .await?
        .iter()
        .map(|l| AgentInfo::from_lease(l, now))
        .collect();
    let rows = nodes::rows(
        &agents,
        &r.node_names().await?,
        &r.devices(None).await?,
        &r.targets(None).await?,
    );
    if json {
        return to_json(&rows);
    }
    Ok(nodes::render(&rows))
}

/// `kubectl spindle describe device`.
pub async fn describe_device(
    r: &Reader,
    namespace: Option<String>,
    name: &str,
    json: bool,
) -> anyhow::Result<String> {
    let Found {
        ns,
        now,
        mut device,
        agent,
    } = find_device(r, namespace, name).await?;
    // Bookkeeping of who wrote which field: noise in a description.
    device.metadata.managed_fields = None;
    let targets = describe::targets_of(&device, &r.targets(Some(&ns)).await?);
    let events = events::about(
        &r.events(&ns).await?,
        "Device",
        name,
        device.uid().as_deref(),
        now,
        EVENTS_SHOWN,
    );
    let view = DeviceView {
        last_drain: describe::last_drain(&device),
        device,
        agent,
        targets,
        events,
    };
    if json {
        return to_json(&view);
    }
    Ok(describe::render(&view, now))
}

/// `kubectl spindle why device`.
pub async fn why_device(
    r: &Reader,
    namespace: Option<String>,
    name: &str,
    json: bool,
) -> anyhow::Result<String> {
    let Found {
        ns,
        now,
        device,
        agent,
    } = find_device(r, namespace, name).await?;
    let node_exists = r.node_exists(&device.spec.node_name).await?;
    let diagnosis = why::diagnose(&device, agent.as_ref(), node_exists, now);
    if json {
        return to_json(&diagnosis);
    }
    Ok(why::render(&format!("{ns}/{name}"), &diagnosis))
}

/// A Device named on the command line and its node's agent, read at `now`.
struct Found {
    ns: String,
    now: Timestamp,
    device: Device,
    agent: Option<AgentInfo>,
}

/// Reads Device `name` (in `namespace`, else the kubeconfig context's) and its node's Lease.
async fn find_device(r: &Reader, namespace: Option<String>, name: &str) -> anyhow::Result<Found> {
    let ns = namespace.unwrap_or_else(|| r.client.default_namespace().to_owned());
    r.check_crds().await?;
    let now = Timestamp::now();
    let device = r.device(&ns, name).await?;
    let agent = r
        .agent_lease(&device.spec.node_name)
        .await?
        .map(|l| AgentInfo::from_lease(&l, now));
    Ok(Found {
        ns,
        now,
        device,
        agent,
    })
}

fn to_json(value: &impl Serialize) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("writing JSON")?;
    text.push('\n');
    Ok(text)
}
