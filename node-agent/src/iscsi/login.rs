//! The login phase (RFC 7143 §6.3, §11.12, §11.13) as a state machine: feed it each Login
//! Request, send the Login Response it returns, and act on the outcome.
//!
//! Stages: security negotiation (AuthMethod None or CHAP) → operational negotiation → full
//! feature phase, with the T/CSG/NSG rules, C-bit continuation, ISID/TSIH handling, the
//! TargetName lookup and ACL through [`TargetDirectory`]. ErrorRecoveryLevel 0, one connection
//! per session: a login with a non-zero TSIH (adding a connection) is refused.
//!
//! Session reinstatement (a new login with the ISID and InitiatorName of a live session) is the
//! engine's to do when it gets [`LoginOutcome::FullFeature`]: it must close the old session.

mod auth;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use tracing::debug;

use self::auth::{AuthError, Authenticator, is_security_key};
use super::chap::ChapSecrets;
use super::negotiate::Negotiator;
use super::params::{SessionParams, SessionType, TargetLimits};
use super::pdu::{LoginRequest, LoginResponse, Sns, Stage, login_status};
use super::text::{self, Pairs, TextAssembler};

/// The only iSCSI version there is (RFC 7143 §11.12.4).
pub const ISCSI_VERSION: u8 = 0x00;

/// Who may log in to a target.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AclPolicy {
    AllowAll,
    /// These initiator names only (compared without regard to ASCII case); empty means nobody.
    Only(Vec<String>),
}

impl AclPolicy {
    /// Whether `initiator` may log in.
    pub fn allows(&self, initiator: &str) -> bool {
        match self {
            Self::AllowAll => true,
            Self::Only(names) => names.iter().any(|n| n.eq_ignore_ascii_case(initiator)),
        }
    }
}

/// What login needs to know about one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetAuth {
    pub acl: AclPolicy,
    /// Some: CHAP is required.
    pub chap: Option<ChapSecrets>,
    pub limits: TargetLimits,
}

/// The engine's view of its targets, as login needs it.
pub trait TargetDirectory {
    /// The target named `iqn` (as the initiator wrote it), if it exists.
    fn lookup(&self, iqn: &str) -> Option<TargetAuth>;

    /// Whether a session with this TSIH exists (a login naming it wants to add a connection).
    fn session_exists(&self, _tsih: u16) -> bool {
        false
    }
}

/// Login settings of one portal that do not depend on the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginConfig {
    /// Limits of discovery sessions.
    pub discovery_limits: TargetLimits,
    /// Some: discovery sessions need CHAP with these secrets.
    pub discovery_chap: Option<ChapSecrets>,
    /// Commands the initiator may have outstanding (MaxCmdSN - ExpCmdSN + 1), at least 1.
    pub cmd_window: u32,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            discovery_limits: TargetLimits::default(),
            discovery_chap: None,
            cmd_window: 64,
        }
    }
}

/// A login that reached the full feature phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Established {
    pub session_type: SessionType,
    /// The target (None for discovery sessions).
    pub target_iqn: Option<String>,
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    pub isid: [u8; 6],
    /// The TSIH this login assigned.
    pub tsih: u16,
    pub cid: u16,
    pub params: SessionParams,
    /// ExpCmdSN to start the full feature phase with (the login's CmdSN; login is immediate).
    pub exp_cmd_sn: u32,
    /// StatSN of the next response on this connection.
    pub next_stat_sn: u32,
}

/// What to do after sending the Login Response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Wait for the next Login Request.
    Continue,
    /// Login is complete: hand the connection to the target's session (digests start now).
    FullFeature(Box<Established>),
    /// Login failed with this status; close the connection after sending the response.
    Fail { status: u16, reason: String },
}

/// A Login Response to send and what follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginReply {
    pub response: LoginResponse,
    pub outcome: LoginOutcome,
}

/// Who is logging in, known from the first request.
#[derive(Debug)]
struct Identity {
    initiator_name: String,
    initiator_alias: Option<String>,
    session_type: SessionType,
    target_name: Option<String>,
}

/// Failure of one request: status and reason.
struct Failure(u16, String);

impl Failure {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self(status, reason.into())
    }
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Failed(r) => Self(login_status::AUTHENTICATION_FAILURE, r),
            AuthError::Protocol(r) => Self(login_status::INITIATOR_ERROR, r),
        }
    }
}

/// The state of one connection's login.
#[derive(Debug)]
pub struct LoginMachine {
    config: LoginConfig,
    tsih: u16,
    stage: Option<Stage>,
    isid: [u8; 6],
    cid: u16,
    cmd_sn: u32,
    stat_sn: u32,
    text: TextAssembler,
    identity: Option<Identity>,
    auth: Option<Authenticator>,
    negotiator: Option<Negotiator>,
    finished: bool,
}

const LOGIN_KEYS: [&str; 4] = [
    "InitiatorName",
    "InitiatorAlias",
    "TargetName",
    "SessionType",
];

impl LoginMachine {
    /// A login on a new connection. `tsih` is the non-zero, unused session handle the session
    /// gets if this login creates one.
    pub fn new(config: LoginConfig, tsih: u16) -> Self {
        Self {
            config,
            tsih,
            stage: None,
            isid: [0; 6],
            cid: 0,
            cmd_sn: 0,
            stat_sn: 0,
            text: TextAssembler::default(),
            identity: None,
            auth: None,
            negotiator: None,
            finished: false,
        }
    }

    /// Handles one Login Request and builds its response.
    pub fn handle(&mut self, req: &LoginRequest, dir: &dyn TargetDirectory) -> LoginReply {
        if self.finished {
            return self.fail(
                req,
                Failure::new(login_status::INITIATOR_ERROR, "login is over"),
            );
        }
        match self.step(req, dir) {
            Ok(reply) => reply,
            Err(failure) => {
                self.finished = true;
                self.fail(req, failure)
            }
        }
    }

    fn fail(&mut self, req: &LoginRequest, Failure(status, reason): Failure) -> LoginReply {
        debug!(status = format_args!("{status:#06x}"), %reason, "login refused");
        let response = self.response(
            req,
            false,
            req.csg,
            Stage::Security,
            0,
            status,
            Pairs::new(),
        );
        LoginReply {
            response,
            outcome: LoginOutcome::Fail { status, reason },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn response(
        &mut self,
        req: &LoginRequest,
        transit: bool,
        csg: Stage,
        nsg: Stage,
        tsih: u16,
        status: u16,
        keys: Pairs,
    ) -> LoginResponse {
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        LoginResponse {
            transit,
            cont: false,
            csg,
            nsg: if transit { nsg } else { Stage::Security },
            version_max: ISCSI_VERSION,
            version_active: ISCSI_VERSION,
            isid: req.isid,
            tsih,
            itt: req.itt,
            sns: Sns {
                stat_sn,
                exp_cmd_sn: self.cmd_sn,
                max_cmd_sn: self
                    .cmd_sn
                    .wrapping_add(self.config.cmd_window.max(1))
                    .wrapping_sub(1),
            },
            status,
            data: if keys.is_empty() {
                Bytes::new()
            } else {
                text::encode(&keys)
            },
        }
    }

    fn step(
        &mut self,
        req: &LoginRequest,
        dir: &dyn TargetDirectory,
    ) -> Result<LoginReply, Failure> {
        let stage = self.check_header(req, dir)?;
        let Some(pairs) = self
            .text
            .push(&req.data, req.cont)
            .map_err(|e| Failure::new(login_status::INITIATOR_ERROR, e.to_string()))?
        else {
            // Partial text: acknowledge with an empty response and wait for the rest.
            let response = self.response(req, false, stage, stage, 0, 0, Pairs::new());
            return Ok(LoginReply {
                response,
                outcome: LoginOutcome::Continue,
            });
        };
        check_unique(&pairs)?;
        let (login_keys, rest): (Pairs, Pairs) = pairs
            .into_iter()
            .partition(|(k, _)| LOGIN_KEYS.contains(&k.as_str()));
        let (security_keys, operational_keys): (Pairs, Pairs) =
            rest.into_iter().partition(|(k, _)| is_security_key(k));

        let mut keys = self.identify(&login_keys, dir)?;
        let auth = self.auth.as_mut().ok_or_else(|| {
            Failure::new(
                login_status::TARGET_ERROR,
                "no authenticator after identification",
            )
        })?;
        let negotiator = self.negotiator.as_mut().ok_or_else(|| {
            Failure::new(
                login_status::TARGET_ERROR,
                "no negotiator after identification",
            )
        })?;

        let mut ready = req.transit;
        match stage {
            Stage::Security => {
                keys.extend(auth.step(&security_keys, &mut rand::rng())?);
                keys.extend(
                    negotiator
                        .respond(&operational_keys)
                        .map_err(|e| Failure::new(login_status::INITIATOR_ERROR, e.to_string()))?,
                );
                if req.transit && !auth.is_done() {
                    if security_keys.is_empty() {
                        // Leaving security without any exchange.
                        auth.skip()?;
                    } else {
                        // The exchange is still under way: stay in this stage.
                        ready = false;
                    }
                }
            }
            _ => {
                if !security_keys.is_empty() {
                    return Err(Failure::new(
                        login_status::INITIATOR_ERROR,
                        "security keys outside the security stage",
                    ));
                }
                auth.skip()?;
                keys.extend(
                    negotiator
                        .respond(&operational_keys)
                        .map_err(|e| Failure::new(login_status::INITIATOR_ERROR, e.to_string()))?,
                );
                keys.extend(negotiator.declarations());
            }
        }

        if ready && req.nsg == Stage::FullFeature {
            let offers = negotiator.offers();
            if !offers.is_empty() || negotiator.awaiting_answers() {
                keys.extend(offers);
                ready = false;
            }
        }
        if !ready {
            let response = self.response(req, false, stage, stage, 0, 0, keys);
            return Ok(LoginReply {
                response,
                outcome: LoginOutcome::Continue,
            });
        }
        if req.nsg != Stage::FullFeature {
            self.stage = Some(req.nsg);
            let response = self.response(req, true, stage, req.nsg, 0, 0, keys);
            return Ok(LoginReply {
                response,
                outcome: LoginOutcome::Continue,
            });
        }
        self.established(req, stage, keys)
    }

    fn established(
        &mut self,
        req: &LoginRequest,
        stage: Stage,
        keys: Pairs,
    ) -> Result<LoginReply, Failure> {
        let negotiator = self
            .negotiator
            .take()
            .ok_or_else(|| Failure::new(login_status::TARGET_ERROR, "no negotiator"))?;
        let identity = self
            .identity
            .take()
            .ok_or_else(|| Failure::new(login_status::TARGET_ERROR, "no identity"))?;
        let mut params = negotiator
            .finish()
            .map_err(|e| Failure::new(login_status::INITIATOR_ERROR, e.to_string()))?;
        params.initiator_name = identity.initiator_name.clone();
        params.initiator_alias = identity.initiator_alias.clone();
        params.target_name = identity.target_name.clone().unwrap_or_default();
        self.finished = true;
        let response = self.response(req, true, stage, Stage::FullFeature, self.tsih, 0, keys);
        let established = Established {
            session_type: identity.session_type,
            target_iqn: identity.target_name,
            initiator_name: identity.initiator_name,
            initiator_alias: identity.initiator_alias,
            isid: self.isid,
            tsih: self.tsih,
            cid: self.cid,
            params,
            exp_cmd_sn: self.cmd_sn,
            next_stat_sn: self.stat_sn,
        };
        Ok(LoginReply {
            response,
            outcome: LoginOutcome::FullFeature(Box::new(established)),
        })
    }

    /// Checks version, ISID/TSIH and stage flags; returns the request's (current) stage.
    fn check_header(
        &mut self,
        req: &LoginRequest,
        dir: &dyn TargetDirectory,
    ) -> Result<Stage, Failure> {
        let initiator_error = |r: &str| Failure::new(login_status::INITIATOR_ERROR, r);
        if !matches!(req.csg, Stage::Security | Stage::Operational) {
            return Err(initiator_error("CSG must be security or operational"));
        }
        if req.transit && (req.nsg <= req.csg || req.nsg == Stage::Reserved) {
            return Err(initiator_error("T bit with an invalid NSG"));
        }
        if req.transit && req.cont {
            return Err(initiator_error("T and C bits both set"));
        }
        match self.stage {
            None => {
                if req.version_min > ISCSI_VERSION {
                    return Err(Failure::new(
                        login_status::UNSUPPORTED_VERSION,
                        format!("version {}..{}", req.version_min, req.version_max),
                    ));
                }
                if req.tsih != 0 {
                    let status = if dir.session_exists(req.tsih) {
                        login_status::TOO_MANY_CONNECTIONS
                    } else {
                        login_status::SESSION_DOES_NOT_EXIST
                    };
                    return Err(Failure::new(status, "one connection per session"));
                }
                self.isid = req.isid;
                self.cid = req.cid;
                self.cmd_sn = req.cmd_sn;
                self.stat_sn = req.exp_stat_sn;
                self.stage = Some(req.csg);
                Ok(req.csg)
            }
            Some(stage) => {
                if req.isid != self.isid || req.tsih != 0 || req.cid != self.cid {
                    return Err(initiator_error("ISID, TSIH or CID changed during login"));
                }
                if req.csg != stage {
                    return Err(initiator_error("CSG does not match the login stage"));
                }
                Ok(stage)
            }
        }
    }

    /// Handles InitiatorName, InitiatorAlias, SessionType and TargetName: on the first complete
    /// request they identify the initiator and the target (lookup, ACL); later they may only
    /// repeat the same values. Returns the keys the target declares once (TargetPortalGroupTag,
    /// TargetAlias).
    fn identify(&mut self, keys: &Pairs, dir: &dyn TargetDirectory) -> Result<Pairs, Failure> {
        let get = |k: &str| text::get(keys, k);
        if let Some(id) = &self.identity {
            let same = get("InitiatorName").is_none_or(|v| v == id.initiator_name)
                && get("TargetName").is_none_or(|v| Some(v) == id.target_name.as_deref())
                && get("InitiatorAlias").is_none_or(|v| Some(v) == id.initiator_alias.as_deref())
                && get("SessionType")
                    .is_none_or(|v| parse_session_type(v) == Some(id.session_type));
            return if same {
                Ok(Pairs::new())
            } else {
                Err(Failure::new(
                    login_status::INITIATOR_ERROR,
                    "login keys changed during login",
                ))
            };
        }
        let initiator_name = get("InitiatorName")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Failure::new(login_status::MISSING_PARAMETER, "no InitiatorName"))?;
        let session_type = match get("SessionType") {
            None => SessionType::Normal,
            Some(v) => parse_session_type(v).ok_or_else(|| {
                Failure::new(
                    login_status::SESSION_TYPE_NOT_SUPPORTED,
                    format!("SessionType={v}"),
                )
            })?,
        };
        let mut declared = Pairs::new();
        let (target_name, chap, limits) = match session_type {
            SessionType::Discovery => (
                None,
                self.config.discovery_chap.clone(),
                self.config.discovery_limits.clone(),
            ),
            SessionType::Normal => {
                let name = get("TargetName").filter(|v| !v.is_empty()).ok_or_else(|| {
                    Failure::new(login_status::MISSING_PARAMETER, "no TargetName")
                })?;
                let target = dir.lookup(name).ok_or_else(|| {
                    Failure::new(login_status::NOT_FOUND, format!("no target {name}"))
                })?;
                if !target.acl.allows(initiator_name) {
                    return Err(Failure::new(
                        login_status::AUTHORIZATION_FAILURE,
                        format!("{initiator_name} may not access {name}"),
                    ));
                }
                declared.push((
                    "TargetPortalGroupTag".to_owned(),
                    target.limits.portal_group_tag.to_string(),
                ));
                if let Some(alias) = &target.limits.alias {
                    declared.push(("TargetAlias".to_owned(), alias.clone()));
                }
                (Some(name.to_owned()), target.chap, target.limits)
            }
        };
        self.auth = Some(Authenticator::new(chap));
        self.negotiator = Some(Negotiator::new(limits, session_type));
        self.identity = Some(Identity {
            initiator_name: initiator_name.to_owned(),
            initiator_alias: get("InitiatorAlias").map(str::to_owned),
            session_type,
            target_name,
        });
        Ok(declared)
    }
}

fn parse_session_type(v: &str) -> Option<SessionType> {
    match v {
        "Normal" => Some(SessionType::Normal),
        "Discovery" => Some(SessionType::Discovery),
        _ => None,
    }
}

/// A key may appear once per request.
fn check_unique(pairs: &Pairs) -> Result<(), Failure> {
    let mut seen = std::collections::HashSet::new();
    match pairs.iter().find(|(k, _)| !seen.insert(k.as_str())) {
        Some((key, _)) => Err(Failure::new(
            login_status::INITIATOR_ERROR,
            format!("{key} sent twice"),
        )),
        None => Ok(()),
    }
}
