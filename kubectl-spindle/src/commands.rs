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
use crate::{Output, drain, events, nodes, scrape, why, why_target};

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
pub async fn nodes(r: &Reader, out: Output) -> anyhow::Result<String> {
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
    emit(out, &rows, |r| nodes::render(r, out == Output::Wide))
}

/// `kubectl spindle describe device`.
pub async fn describe_device(
    r: &Reader,
    namespace: Option<String>,
    name: &str,
    out: Output,
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
    emit(out, &view, |v| describe::render(v, now))
}

/// `kubectl spindle why device`.
pub async fn why_device(
    r: &Reader,
    namespace: Option<String>,
    name: &str,
    out: Output,
) -> anyhow::Result<String> {
    let found = find_device(r, namespace, name).await?;
    let diagnosis = delete_diagnosis(r, &found).await?;
    emit(out, &diagnosis, |d| {
        why::render(&format!("{}/{name}", found.ns), d)
    })
}

/// `kubectl spindle why target`.
pub async fn why_target(
    r: &Reader,
    namespace: Option<String>,
    name: &str,
    out: Output,
) -> anyhow::Result<String> {
    let ns = namespace.unwrap_or_else(|| r.client.default_namespace().to_owned());
    r.check_crds().await?;
    let now = Timestamp::now();
    let target = r.target(&ns, name).await?;
    let devices = r.devices(Some(&ns)).await?;
    let mut diagnosis = why_target::diagnose(&target, &devices, None);
    if let Some(node) = diagnosis.node.clone() {
        let agent = r
            .agent_lease(&node)
            .await?
            .map(|l| AgentInfo::from_lease(&l, now));
        diagnosis = why_target::diagnose(&target, &devices, agent.as_ref());
    }
    emit(out, &diagnosis, |d| {
        why_target::render(&format!("{ns}/{name}"), d)
    })
}

/// `kubectl spindle drain device`.
pub async fn drain_device(
    r: &Reader,
    namespace: Option<String>,
    name: &str,
    agent_metrics: Option<&str>,
    out: Output,
) -> anyhow::Result<String> {
    let found = find_device(r, namespace, name).await?;
    let delete = delete_diagnosis(r, &found).await?;
    let device = &found.device;
    let targets = describe::targets_of(device, &r.targets(Some(&found.ns)).await?);
    // A failed scrape is not fatal: the rest of the picture comes from the API.
    let scraped = match agent_metrics {
        Some(addr) => scrape::get(addr)
            .map(|text| (addr, scrape::parse(&text)))
            .map_err(|e| format!("no live figures: {e}")),
        None => Err("live figures need --agent-metrics HOST:PORT".to_owned()),
    };
    let live = scraped
        .as_ref()
        .map(|(a, s)| (*a, s.as_slice()))
        .map_err(Clone::clone);
    let view = drain::view(device, &targets, live, delete);
    emit(out, &view, drain::render)
}

/// What the delete of the Device in `f` waits on (`why device`).
async fn delete_diagnosis(r: &Reader, f: &Found) -> anyhow::Result<why::Diagnosis> {
    let node_exists = r.node_exists(&f.device.spec.node_name).await?;
    Ok(why::diagnose(
        &f.device,
        f.agent.as_ref(),
        node_exists,
        f.now,
    ))
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

/// `value` as JSON (`-o json`) or as `text` renders it.
fn emit<T: Serialize>(
    out: Output,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<String> {
    if out != Output::Json {
        return Ok(text(value));
    }
    let mut json = serde_json::to_string_pretty(value).context("writing JSON")?;
    json.push('\n');
    Ok(json)
}
