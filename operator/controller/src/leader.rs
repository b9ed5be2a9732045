//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas never both
//! write. The holder renews the Lease every `renew_every`; another replica takes it over once
//! `renewTime + leaseDuration` has passed, or at once when the holder releases it on shutdown.
//! Updates carry the `resourceVersion` read, so two candidates cannot both win a round.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's name in `holderIdentity` (the pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// Lease `nsh-operator` in `namespace`, 15 s long, renewed every 5 s.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: "nsh-operator".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    /// `$POD_NAME`, else `<hostname>-<pid>-<random>`.
    pub fn default_identity() -> String {
        std::env::var("POD_NAME").unwrap_or_else(|_| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "nsh".into());
            format!(
                "{host}-{}-{:04x}",
                std::process::id(),
                rand::random::<u16>()
            )
        })
    }
}

/// How a leadership term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `shutdown` resolved (the Lease was released for a successor).
    Shutdown,
    /// Renewals failed for a whole lease duration: another replica may lead now.
    LostLeadership,
}

#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// One round: acquires the Lease if it is free or expired, renews it if ours.
    /// `Ok(true)` while this replica holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let me = &self.config.identity;
        let seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_loss(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(me.as_str());
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let duration = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(seconds),
            ));
            renewed
                .0
                .checked_add(duration)
                .is_ok_and(|until| until < now)
        });
        if !ours && spec.holder_identity.is_some() && !expired {
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(me.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(MicroTime(now));
        // `replace` sends the resourceVersion we read: a concurrent winner makes this a 409.
        conflict_is_loss(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Gives the Lease up if this replica holds it, so a successor need not wait for expiry.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(err) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(%err, "could not release the lease");
        }
    }

    /// Waits to lead, then runs `work` with a signal that fires on shutdown or lost leadership.
    pub async fn lead<W, Fut>(self, shutdown: impl Future<Output = ()> + Send, work: W) -> Ended
    where
        W: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.config.renew_every);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ended::Shutdown,
                _ = ticker.tick() => match self.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => tracing::debug!(identity = %self.config.identity, "standing by"),
                    Err(err) => tracing::warn!(%err, "leader election round failed"),
                },
            }
        }
        tracing::info!(identity = %self.config.identity, lease = %self.config.name, "leading");

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let work = work(stopped);
        tokio::pin!(work);
        let mut last_renewed = tokio::time::Instant::now();
        let ended = loop {
            tokio::select! {
                () = &mut work => break Ended::Shutdown,
                () = &mut shutdown => break Ended::Shutdown,
                _ = ticker.tick() => {
                    match self.try_acquire_or_renew().await {
                        Ok(true) => last_renewed = tokio::time::Instant::now(),
                        Ok(false) => break Ended::LostLeadership,
                        Err(err) => tracing::warn!(%err, "lease renewal failed"),
                    }
                    if last_renewed.elapsed() >= self.config.lease_duration {
                        break Ended::LostLeadership;
                    }
                }
            }
        };
        // Stop writing first, then hand the Lease over.
        let _ = stop.send(true);
        work.await;
        if ended == Ended::Shutdown {
            self.release().await;
        }
        tracing::info!(identity = %self.config.identity, ?ended, "leadership ended");
        ended
    }
}

fn conflict_is_loss(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}
