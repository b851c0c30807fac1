//! The runtime's side of the lookup API: served beside the stream over the engine's
//! store, with a producer for the split requests it sends to `identity.commands`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{kafka, producer_config, RuntimeError};
use crate::api::{self, CommandSink};
use crate::settings::Settings;
use crate::store::Store;
use crate::telemetry::metrics::Telemetry;

/// How long a split request waits for the broker's acknowledgement.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the API over `reader` (a reader of the engine's store) if `[api] listen` is
/// set; lookups answer 503 until `ready` turns true
/// (the store restored and the outbox re-sent).
pub async fn serve(
    settings: &Settings,
    reader: Store,
    ready: Arc<AtomicBool>,
    telemetry: Arc<Telemetry>,
) -> Result<Option<api::Server>, RuntimeError> {
    if settings.api.listen.is_none() {
        return Ok(None);
    }
    let producer: FutureProducer = producer_config(settings)
        .create()
        .map_err(kafka("creating the producer of the API's commands"))?;
    let topic = settings.kafka.commands_topic();
    let commands: CommandSink = Arc::new(move |key: String, value: Vec<u8>| {
        let (producer, topic) = (producer.clone(), topic.clone());
        Box::pin(async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&value),
                    COMMAND_TIMEOUT,
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e.to_string())
        })
    });
    let server = api::serve(
        &settings.api,
        &settings.engine,
        reader,
        ready,
        Some(commands),
        Some(telemetry),
    )
    .await?;
    Ok(Some(server))
}
