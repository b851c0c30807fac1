//! What unicus tells its operators: Prometheus metrics, health and readiness over HTTP,
//! and logs (no personal data at info level).
pub mod logging;
pub mod metrics;
