//! Rights requests carried out on one customer (export, erasure) and retention expiry:
//! resolve forgets the identity graph's part, then profile is handed the request.

use std::collections::BTreeMap;

use crate::engine::gdpr;
use crate::engine::handoff::{ProfileCommand, RequestKind};
use crate::engine::resolve::Resolver;
use crate::engine::{Engine, EngineError, DAY_MS};
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
    /// `now` (ms): at most `sweep_batch` of each per call, found through the time
    /// indexes (no scan). Each expiry gets a receipt of kind `retention`. Call it between
    /// batches; what it changes is committed with the next [`Engine::commit`].
    pub fn sweep_retention(&mut self, now: i64) -> Result<Vec<OutputRecord>, EngineError> {
        let mut out = self.expire_inactive_customers(now)?;
        out.extend(self.expire_behavioural_source_profiles(now)?);
        if !out.is_empty() {
            self.pending += 1;
        }
        self.finish(&mut out)?;
        Ok(out)
    }

    fn expire_inactive_customers(&mut self, now: i64) -> Result<Vec<OutputRecord>, EngineError> {
        let r = self.config.gdpr.retention.clone();
        let mut out = Vec::new();
        if r.inactive_customer_days == 0 {
            return Ok(out);
        }
        let cutoff = now - i64::from(r.inactive_customer_days) * DAY_MS;
        for (index_key, customer_id) in
            self.profiler
                .inactive_before(&self.store, cutoff, r.sweep_batch)?
        {
            let request_id = retention_request_id(&customer_id, now);
            out.extend(self.run_request(&customer_id, &request_id, RequestKind::Retention, now)?);
            // Gone with the profile; removed here too in case the index was stale.
            self.store.remove(index_key);
        }
        Ok(out)
    }

    fn expire_behavioural_source_profiles(
        &mut self,
        now: i64,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let r = self.config.gdpr.retention.clone();
        let mut out = Vec::new();
        if r.behavioural_days == 0 {
            return Ok(out);
        }
        let cutoff = now - i64::from(r.behavioural_days) * DAY_MS;
        let mut by_customer: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (index_key, customer_id, sp) in
            self.profiler
                .behavioural_before(&self.store, cutoff, r.sweep_batch)?
        {
            self.store.remove(index_key);
            by_customer.entry(customer_id).or_default().push(sp);
        }
        for (customer_id, sps) in by_customer {
            out.extend(self.expire_source_profiles(&customer_id, sps, now)?);
        }
        Ok(out)
    }

    /// Detaches expired source profiles from a customer, or erases the customer when
    /// they are all it has.
    fn expire_source_profiles(
        &mut self,
        customer_id: &str,
        sps: Vec<u64>,
        now: i64,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let Some(all) = self.resolver.source_profiles_of(&self.store, customer_id)? else {
            return Ok(Vec::new());
        };
        let request_id = retention_request_id(customer_id, now);
        if all.iter().all(|sp| sps.contains(sp)) {
            return self.run_request(customer_id, &request_id, RequestKind::Retention, now);
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
            request_id: &request_id,
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

/// The id of a retention expiry: one per customer and day.
fn retention_request_id(customer_id: &str, now: i64) -> String {
    format!("retention-{customer_id}-{}", now / DAY_MS)
}
