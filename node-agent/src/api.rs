//! The agent in a cluster: the gRPC API the operator calls (`server`, over mutual TLS:
//! `tls`, with a serving key of the agent's own: `identity`), the translation between API messages and the node's records (`convert`), and the
//! Lease that registers the agent (`lease`). See docs/agent-api.md for the contract.

pub mod calls;
pub mod convert;
pub mod convert_qos;
pub mod fence;
pub mod identity;
pub mod lease;
pub mod server;
pub mod tls;
