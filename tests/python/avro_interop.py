"""Avro interoperability with clients nobody here wrote: confluent-kafka's
SchemaRegistryClient, AvroSerializer and AvroDeserializer.

  produce: JSON lines -> Avro touchpoints (rights requests, operator commands) on
           touchpoints.<channel> (gdpr.requests, identity.commands), schemas from
           schemas/input, registered by the serializer (subject <topic>-value).
  consume: every record of the given topics, key and value decoded with AvroDeserializer
           from the writer schema in the registry, printed as JSON lines.

Run by tests/avro_interop.rs with the Python of the test stack (.venv).
"""
import argparse
import datetime
import decimal
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer


def to_avro(value, schema, names):
    """A JSON value as fastavro wants it for `schema` (datetimes, dates, Decimals)."""
    if isinstance(schema, str) and schema in names:
        schema = names[schema]
    if isinstance(schema, list):
        if value is None:
            return None
        for branch in schema:
            if branch == "null":
                continue
            try:
                return to_avro(value, branch, names)
            except (TypeError, ValueError, KeyError, AttributeError):
                continue
        raise ValueError("no branch for %r" % (value,))
    if isinstance(schema, dict):
        kind = schema["type"]
        logical = schema.get("logicalType")
        if kind == "record":
            names[schema.get("namespace", "") + "." + schema["name"]] = schema
            names[schema["name"]] = schema
            if not isinstance(value, dict):
                raise TypeError("record")
            return {f["name"]: to_avro(value.get(f["name"]), f["type"], names) for f in schema["fields"]}
        if kind == "array":
            if not isinstance(value, list):
                raise TypeError("array")
            return [to_avro(v, schema["items"], names) for v in value]
        if kind == "map":
            if not isinstance(value, dict):
                raise TypeError("map")
            return {k: to_avro(v, schema["values"], names) for k, v in value.items()}
        if logical == "timestamp-millis":
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if logical == "date":
            return datetime.date.fromisoformat(value)
        if logical == "decimal":
            return decimal.Decimal(str(value)).quantize(decimal.Decimal(1).scaleb(-schema["scale"]))
        return to_avro(value, kind, names)
    checks = {"string": str, "boolean": bool, "double": (int, float), "long": int, "int": int}
    if schema in checks:
        if schema in ("long", "int", "double") and isinstance(value, bool):
            raise TypeError(schema)
        if schema in ("long", "int") and not isinstance(value, int):
            raise TypeError(schema)
        if not isinstance(value, checks[schema]):
            raise TypeError(schema)
        return float(value) if schema == "double" else value
    if schema == "null":
        if value is not None:
            raise TypeError("null")
        return None
    raise ValueError("unsupported schema %r" % (schema,))


def produce(args):
    registry = SchemaRegistryClient({"url": args.registry})
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True})
    serializers = {}
    keys = StringSerializer("utf_8")
    count = 0
    for line in open(args.input):
        if not line.strip():
            continue
        doc = json.loads(line)
        if "request_id" in doc:
            name = "gdpr.requests"
        elif "command_id" in doc:
            name = "identity.commands"
        else:
            name = "touchpoints." + doc["channel"]
        topic = args.prefix + name
        if name not in serializers:
            text = open("%s/input/%s.avsc" % (args.schemas, name)).read()
            schema = json.loads(text)
            serializers[name] = (schema, AvroSerializer(registry, text, lambda obj, ctx: obj))
        schema, serializer = serializers[name]
        value = serializer(to_avro(doc, schema, {}), SerializationContext(topic, MessageField.VALUE))
        key = doc.get("event_id") or doc.get("request_id") or doc.get("command_id")
        producer.produce(topic, key=keys(key), value=value)
        count += 1
    remaining = producer.flush(30)
    if remaining:
        sys.exit("%d records not delivered" % remaining)
    print(json.dumps({"produced": count}))


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def consume(args):
    registry = SchemaRegistryClient({"url": args.registry})
    values = AvroDeserializer(registry)
    keys = AvroDeserializer(registry)
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": "interop-%d" % time.time_ns(),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    for name in args.topics.split(","):
        topic = args.prefix + name
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        idle_since = time.time()
        while time.time() - idle_since < args.idle:
            m = consumer.poll(0.2)
            if m is None:
                continue
            if m.error():
                continue
            idle_since = time.time()
            ctx_key = SerializationContext(topic, MessageField.KEY)
            ctx_value = SerializationContext(topic, MessageField.VALUE)
            value = values(m.value(), ctx_value) if m.value() is not None else None
            print(json.dumps({"topic": name, "key": keys(m.key(), ctx_key), "value": plain(value)}))
        consumer.unassign()
    consumer.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["produce", "consume"])
    p.add_argument("--brokers", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--prefix", default="")
    p.add_argument("--schemas", default="schemas")
    p.add_argument("--input")
    p.add_argument("--topics", default="")
    p.add_argument("--idle", type=float, default=3.0)
    args = p.parse_args()
    produce(args) if args.mode == "produce" else consume(args)


if __name__ == "__main__":
    main()
