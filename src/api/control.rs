//! Pause, resume, scheduled resume and status, per site or for `all` (Backbeat's paths).
//! The state lives in the compacted control topic: a change is answered once the topic has
//! acknowledged it, or 503 after [`CONTROL_WRITE_TIMEOUT`].

use std::time::Duration;

use http::StatusCode;

use super::model::{Done, ScheduleRequest, Scheduled, Schedules, SiteState, Status};
use super::{answer, ApiState, Local, Refusal, Reply};
use crate::queue::control::SiteControl;

/// How long a pause, resume or schedule waits for the control topic before answering 503.
const CONTROL_WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// The sites `site` names (every one for `all`), or 404. Under `lifecycle/`: `all`
/// (lifecycle as a whole), `*` (that and every site's), or a site's transitions.
fn sites_named(state: &ApiState, site: &str) -> Result<Vec<String>, Refusal> {
    if let Some(rest) = site.strip_prefix("lifecycle/") {
        return lifecycle_named(state, rest);
    }
    let v: Vec<String> = state
        .sites
        .keys()
        .filter(|n| site == "all" || n.as_str() == site)
        .cloned()
        .collect();
    if v.is_empty() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("no site {site}"),
        ));
    }
    Ok(v)
}

fn lifecycle_named(state: &ApiState, rest: &str) -> Result<Vec<String>, Refusal> {
    use crate::queue::control::{lifecycle_key, LIFECYCLE};
    match rest {
        "all" => Ok(vec![LIFECYCLE.to_string()]),
        "*" => {
            let sites = state.sites.keys().map(|s| lifecycle_key(s));
            Ok(std::iter::once(LIFECYCLE.to_string())
                .chain(sites)
                .collect())
        }
        s if state.sites.contains_key(s) => Ok(vec![lifecycle_key(s)]),
        s => Err(Refusal::new(StatusCode::NOT_FOUND, format!("no site {s}"))),
    }
}

/// How a control key is shown: lifecycle's as `lifecycle`, its transitions to a site by the
/// site's name, a site's replication by its name.
fn shown(key: &str) -> String {
    match key.strip_prefix("lifecycle/") {
        Some("all") => "lifecycle".into(),
        Some(site) => site.into(),
        None => key.into(),
    }
}

/// `f` of each named site's control state (sites whose state is not followed are left out).
fn per_site<T: serde::Serialize>(
    state: &ApiState,
    local: &Local,
    site: &str,
    f: impl Fn(&SiteControl) -> T,
) -> Result<std::collections::BTreeMap<String, T>, Refusal> {
    Ok(sites_named(state, site)?
        .into_iter()
        .filter_map(|n| local.control.get(&n).map(|c| (shown(&n), f(&c.borrow()))))
        .collect())
}

/// `GET /_/crr/status[/{site}]`.
pub(super) fn status(state: &ApiState, local: &Local, site: &str) -> Reply {
    let s: Result<Status, Refusal> = per_site(state, local, site, |c| {
        if c.paused {
            SiteState::Disabled
        } else {
            SiteState::Enabled
        }
    });
    answer(s)
}

/// `GET /_/crr/resume[/{site}]`: each site's scheduled resume, or `none`.
pub(super) fn schedules(state: &ApiState, local: &Local, site: &str) -> Reply {
    let s: Result<Schedules, Refusal> = per_site(state, local, site, |c| {
        c.scheduled_resume.clone().unwrap_or_else(|| "none".into())
    });
    answer(s)
}

/// Publishes `f` of a site's state, waiting at most [`CONTROL_WRITE_TIMEOUT`].
async fn set_control(
    local: &Local,
    site: &str,
    f: impl Fn(&mut SiteControl),
) -> Result<(), String> {
    let Some(cell) = local.control.get(site) else {
        return Err(format!("no site {site}"));
    };
    let mut next = cell.borrow().clone();
    f(&mut next);
    let p = local.producer.as_ref().ok_or("no Kafka producer")?;
    let publish = async {
        let r = crate::queue::control::publish(p, &local.control_topic, site, &next).await;
        Some(r.map_err(|e| e.to_string()))
    };
    let limit = async {
        glommio::timer::sleep(CONTROL_WRITE_TIMEOUT).await;
        None
    };
    match futures_lite::future::or(publish, limit).await {
        Some(r) => r?,
        None => {
            return Err(format!(
                "the control topic {} did not acknowledge the change within {} s: check the brokers (GET /_/healthcheck) and try again",
                local.control_topic,
                CONTROL_WRITE_TIMEOUT.as_secs()
            ))
        }
    }
    *cell.borrow_mut() = next;
    Ok(())
}

/// Applies `f` to the control state of every named site; `Err` is the answer on failure.
async fn control_all(
    state: &ApiState,
    local: &Local,
    site: &str,
    f: impl Fn(&mut SiteControl),
) -> Result<(), Refusal> {
    for n in sites_named(state, site)? {
        set_control(local, &n, &f)
            .await
            .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    }
    Ok(())
}

/// `POST /_/crr/pause[/{site}]` and `POST /_/crr/resume[/{site}]` (which also cancels a
/// scheduled resume).
pub(super) async fn pause(state: &ApiState, local: &Local, site: &str, pause: bool) -> Reply {
    let r = control_all(state, local, site, |c| {
        c.paused = pause;
        c.scheduled_resume = None;
    });
    answer(r.await.map(|()| Done {}))
}

/// `POST /_/crr/resume/{site}/schedule` `{"hours": H}` (6 when not given): paused now,
/// resuming by itself in H hours.
pub(super) async fn schedule(state: &ApiState, local: &Local, site: &str, body: &[u8]) -> Reply {
    answer(schedule_at(state, local, site, body).await)
}

async fn schedule_at(
    state: &ApiState,
    local: &Local,
    site: &str,
    body: &[u8],
) -> Result<Scheduled, Refusal> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let hours = serde_json::from_slice::<ScheduleRequest>(body)
        .map_err(|e| {
            let e = format!("expected {{\"hours\": H}} with H a number of hours: {e}");
            Refusal::new(StatusCode::BAD_REQUEST, e)
        })?
        .hours;
    if !(hours > 0.0 && hours <= 24.0 * 365.0) {
        let e = "hours must be a positive number";
        return Err(Refusal::new(StatusCode::BAD_REQUEST, e));
    }
    let at = crate::time::rfc3339(
        std::time::SystemTime::now() + Duration::from_secs_f64(hours * 3600.0),
    );
    control_all(state, local, site, |c| {
        c.paused = true;
        c.scheduled_resume = Some(at.clone());
    })
    .await?;
    Ok(Scheduled {
        scheduled_resume: at,
    })
}

/// `DELETE /_/crr/resume/{site}/schedule`.
pub(super) async fn cancel_schedule(state: &ApiState, local: &Local, site: &str) -> Reply {
    let r = control_all(state, local, site, |c| c.scheduled_resume = None);
    answer(r.await.map(|()| Done {}))
}
