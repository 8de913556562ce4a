//! ejabberd's admin API as a presence snapshot.
//!
//! ejabberd sends no presence snapshot when a component (re)connects (README, "Servers"), so a
//! user online before herald connected stays unknown until they change presence. When
//! `[presence.ejabberd_api]` is set, the presence service reads the connected sessions
//! (`connected_users_info` of `mod_admin_extra`, over `mod_http_api`) after each privilege
//! advertisement that grants presence, and treats every session as a snapshot presence: the
//! same `snapshot` / `resync` events and end-of-snapshot removals as Prosody's burst.
//!
//! What ejabberd 23.01 answers (one object per session; `status` is `available` or the show;
//! a session that sent no presence yet is absent):
//! `[{"jid":"alice@localhost/phone","connection":"c2s","ip":"127.0.0.1","port":54380,
//! "priority":0,"node":"ejabberd@localhost","uptime":1,"status":"available","resource":"phone",
//! "statustext":"hi"}]`

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

use crate::config::EjabberdApiSettings;
use crate::xmpp::inbound::PresenceStanza;

/// Longest answer read, in bytes (about 200 bytes per session: 5 million sessions).
const MAX_ANSWER_BYTES: usize = 1 << 30;

/// One session as `connected_users_info` describes it (other fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    pub jid: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub statustext: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
}

impl Session {
    /// The session as the presence its client last sent, marked delayed (a snapshot presence);
    /// `None` for one that is not available.
    pub fn presence(&self) -> Option<PresenceStanza> {
        let show = match self.status.as_deref() {
            None | Some("available") | Some("") => None,
            Some("unavailable") => return None,
            Some(show) => Some(show.to_owned()),
        };
        Some(PresenceStanza {
            from: Some(self.jid.clone()),
            kind: None,
            show,
            status: self.statustext.clone().filter(|s| !s.is_empty()),
            priority: self
                .priority
                .map(|p| p.clamp(i64::from(i8::MIN), i64::from(i8::MAX)).to_string()),
            delayed: true,
            muc_user: false,
            muc: None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the answer is not a list of sessions: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("herald is stopping")]
    Stopped,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The outcome of one read, for the connection (`epoch`) it was made for.
#[derive(Debug)]
pub struct ApiAnswer {
    pub epoch: u64,
    pub sessions: Result<Vec<Session>, ApiError>,
}

pub type ApiFuture = Pin<Box<dyn Future<Output = ApiAnswer> + Send>>;

/// The HTTP client of the API (one per presence service).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Reads the connected sessions, within `timeout`, on `runtime` (the presence service's own
/// runtime has no I/O driver).
pub fn read_sessions(
    runtime: &tokio::runtime::Handle,
    client: reqwest::Client,
    api: EjabberdApiSettings,
    epoch: u64,
    timeout: Duration,
) -> ApiFuture {
    let task = runtime.spawn(async move {
        match tokio::time::timeout(timeout, fetch(&client, &api)).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout(timeout)),
        }
    });
    Box::pin(async move {
        let sessions = match task.await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Stopped),
        };
        ApiAnswer { epoch, sessions }
    })
}

async fn fetch(
    client: &reqwest::Client,
    api: &EjabberdApiSettings,
) -> Result<Vec<Session>, ApiError> {
    let mut request = client
        .post(format!("{}/connected_users_info", api.url))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}");
    if let Some(token) = &api.token {
        request = request.bearer_auth(token.expose());
    }
    let mut response = request.send().await?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ApiError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(ApiError::Status {
            status: status.as_u16(),
            body: crate::presence::sanitize::cap_text(&text, 200).to_owned(),
        });
    }
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_become_delayed_presences() {
        let answer = r#"[{"jid":"carol@localhost/phone","connection":"c2s","ip":"127.0.0.1","port":54392,"priority":0,"node":"nonode@nohost","uptime":0,"status":"available","resource":"phone","statustext":"hi"},{"jid":"bob@localhost/pc","connection":"c2s","ip":"127.0.0.1","port":1,"priority":-200,"node":"n","uptime":3,"status":"dnd","resource":"pc","statustext":""}]"#;
        let sessions: Vec<Session> = serde_json::from_str(answer).unwrap();
        let carol = sessions[0].presence().unwrap();
        assert_eq!(carol.from.as_deref(), Some("carol@localhost/phone"));
        assert_eq!((carol.show, carol.status.as_deref()), (None, Some("hi")));
        assert!(carol.delayed && carol.kind.is_none());
        let bob = sessions[1].presence().unwrap();
        assert_eq!(bob.show.as_deref(), Some("dnd"));
        assert_eq!(bob.status, None);
        assert_eq!(bob.priority.as_deref(), Some("-128"));
        let idle: Session =
            serde_json::from_str(r#"{"jid":"a@localhost/x","status":"unavailable"}"#).unwrap();
        assert!(idle.presence().is_none());
        assert!(serde_json::from_str::<Vec<Session>>(r#"{"status":"error"}"#).is_err());
    }
}
