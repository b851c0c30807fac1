//! Rights requests carried out on one customer (export, erasure) and the retention
//! requests profile states: resolve does the identity graph's part, then profile its own.

use crate::engine::gdpr;
use crate::engine::handoff::{ProfileCommand, RequestKind, RetentionRequest};
use crate::engine::resolve::Resolver;
use crate::engine::{Engine, EngineError};
use crate::model::output::{rfc3339, to_json, OutputRecord, Topic};
use crate::model::records::EngineReceipt;

impl Engine {
    /// Runs an export, erasure or retention expiry of one existing customer.
    pub(crate) fn run_request(
        &mut self,
        customer_id: &str,
        request_id: &str,
        kind: RequestKind,
        at: i64,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let facts = match kind {
            RequestKind::Export => {
                let identity = self.resolver.export_identity(&self.store, customer_id)?;
                Resolver::request_facts(request_id, kind, at, None, identity.as_ref())
            }
            RequestKind::Erase | RequestKind::Retention => {
                let Some(forgotten) = self.resolver.forget(&mut self.store, customer_id)? else {
                    return Ok(Vec::new());
                };
                let mut facts =
                    Resolver::request_facts(request_id, kind, at, Some(&forgotten), None);
                let suppressed = if kind == RequestKind::Erase {
                    gdpr::suppress(
                        &mut self.store,
                        &self.config,
                        &forgotten.exclusive_identifiers,
                    )?
                } else {
                    0
                };
                facts
                    .erased
                    .push(("suppressed_identifiers".into(), suppressed));
                facts
            }
        };
        *self.stats.requests.entry(kind.as_str()).or_default() += 1;
        let commands = [ProfileCommand::Request {
            customer_id: customer_id.to_string(),
            facts: Box::new(facts),
        }];
        self.profile(&commands)
    }

    /// Erases the customers inactive beyond `gdpr.retention.inactive_customer_days` and
    /// detaches the behavioural source profiles unseen beyond `behavioural_days`, as of
    /// `now` (ms): at most `sweep_batch` of each per call. Profile finds them in its time
    /// indexes (no scan) and states each as a [`RetentionRequest`]; resolve carries it
    /// out like any request, then profile is handed its part. Each expiry gets a receipt
    /// of kind `retention`. Call it between batches; what it changes is committed with
    /// the next [`Engine::commit`].
    pub fn sweep_retention(&mut self, now: i64) -> Result<Vec<OutputRecord>, EngineError> {
        let mut out = Vec::new();
        // Inactive customers first: their erasure also takes their behavioural entries.
        for request in self.profiler.inactive_expired(&mut self.store, now)? {
            out.extend(self.retention(request)?);
        }
        for request in self.profiler.behavioural_expired(&mut self.store, now)? {
            out.extend(self.retention(request)?);
        }
        if !out.is_empty() {
            self.pending += 1;
        }
        self.finish(&mut out)?;
        Ok(out)
    }

    /// Carries out one retention request from profile.
    fn retention(&mut self, request: RetentionRequest) -> Result<Vec<OutputRecord>, EngineError> {
        let request_id = request.request_id();
        match request {
            RetentionRequest::Customer { customer_id, at } => {
                self.run_request(&customer_id, &request_id, RequestKind::Retention, at)
            }
            RetentionRequest::SourceProfiles {
                customer_id,
                source_profiles,
                at,
            } => self.expire_source_profiles(&customer_id, &request_id, source_profiles, at),
        }
    }

    /// Detaches expired source profiles from a customer, or erases the customer when
    /// they are all it has.
    fn expire_source_profiles(
        &mut self,
        customer_id: &str,
        request_id: &str,
        sps: Vec<u64>,
        now: i64,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let Some(all) = self.resolver.source_profiles_of(&self.store, customer_id)? else {
            return Ok(Vec::new());
        };
        if all.iter().all(|sp| sps.contains(sp)) {
            return self.run_request(customer_id, request_id, RequestKind::Retention, now);
        }
        let Some(forgotten) = self.resolver.detach(&mut self.store, customer_id, &sps)? else {
            return Ok(Vec::new());
        };
        self.stats.detached_source_profiles += forgotten.source_profiles;
        let commands = [ProfileCommand::Detach {
            customer_id: customer_id.to_string(),
            source_profiles: sps,
            at: now,
        }];
        let mut out = self.profile(&commands)?;
        let receipt = EngineReceipt {
            request_id,
            customer_id: Some(customer_id),
            kind: "retention",
            scope: Some("behavioural_source_profiles"),
            status: "done",
            done_at: rfc3339(now),
            erased: forgotten
                .counts()
                .into_iter()
                .filter(|(k, _)| k != "customer_ids")
                .collect(),
        };
        out.push(OutputRecord::json(
            Topic::GdprReceipts,
            customer_id.to_string(),
            to_json(&receipt),
        ));
        Ok(out)
    }
}
