//! Output records the engine writes itself (the resolution of a touchpoint, operator
//! splits and merges, receipts of requests that found nobody), typed and serialised by
//! serde. Keys come out sorted: `serde_json` here keeps objects in key order.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::ident::Ident;

/// How a touchpoint was resolved: the `resolution` field of `touchpoints.resolved`.
#[derive(Debug, Clone, Serialize)]
pub struct ResolutionSummary<'a> {
    pub method: &'static str,
    pub matched_on: &'a [String],
    pub score: Option<f64>,
}

/// An `identity.changes` record of type `split` (an operator command).
#[derive(Debug, Clone, Serialize)]
pub struct SplitChange<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub customer_id: &'a str,
    pub new_customer_id: &'a str,
    pub identifiers: [&'a Ident; 1],
    pub source_profiles: usize,
    pub reason: &'a str,
    pub command_id: &'a str,
    pub at: String,
}

/// An `identity.changes` record of type `merge` made by an operator command.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorMerge<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub customer_id: &'a str,
    pub merged_ids: [&'a str; 1],
    pub rule: &'static str,
    pub matched_on: [&'a str; 0],
    pub identifiers: [&'a str; 0],
    pub score: Option<f64>,
    pub reason: &'a str,
    pub splits_lifted: usize,
    pub command_id: &'a str,
    pub event_id: Option<&'a str>,
    pub at: String,
}

/// A `gdpr.receipts` record written by the engine itself: a request that found nobody,
/// or the retention of a customer's behavioural source profiles.
#[derive(Debug, Clone, Serialize)]
pub struct EngineReceipt<'a> {
    pub request_id: &'a str,
    pub customer_id: Option<&'a str>,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'static str>,
    pub status: &'static str,
    pub done_at: String,
    pub erased: BTreeMap<String, u64>,
}
