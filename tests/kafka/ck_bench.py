"""Throughput and acknowledgement latency of confluent-kafka (librdkafka
2.16) producing to a Kafka listener, with its defaults (acks=all) and
enable.idempotence: the measurement for docs/KAFKA.md, run by hand.

    target/kafka-venv/bin/python tests/kafka/ck_bench.py BOOTSTRAP TOPIC RECORDS VALUE_BYTES [RATE]

RATE (records/s) paces the producer (open loop, checked every 100 records);
without it, as fast as librdkafka takes them, so the latency then includes
the time records queue in librdkafka.

Latency is from produce() to the delivery report (which librdkafka gives
once the broker acknowledged the batch holding the record), so it includes
librdkafka's own batching wait (linger.ms, 5 ms by default). One record is
delivered first, so the start (connection, metadata, producer id) is not
measured.
"""
import sys
import time

from confluent_kafka import Producer


def main(bootstrap, topic, records, value_bytes, rate=None):
    records, value_bytes = int(records), int(value_bytes)
    rate = float(rate) if rate else None
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    value = b"x" * value_bytes
    lat_us = []
    failed = [0]

    def report(err, msg, sent_ns):
        if err is not None:
            failed[0] += 1
        else:
            lat_us.append((time.perf_counter_ns() - sent_ns) / 1000)

    # Warm-up: the first delivery waits for the connection, metadata and
    # the producer id (InitProducerId); not what is measured.
    p.produce(topic, value)
    p.flush(60)
    start = time.perf_counter()
    for i in range(records):
        if rate and i % 100 == 0:
            due = start + i / rate
            while time.perf_counter() < due:
                p.poll(0.0005)
        sent_ns = time.perf_counter_ns()
        while True:
            try:
                p.produce(topic, value, on_delivery=lambda err, msg, t=sent_ns: report(err, msg, t))
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(120)
    secs = time.perf_counter() - start
    lat_us.sort()
    pick = lambda q: lat_us[min(len(lat_us) - 1, int(q * len(lat_us)))]
    print("confluent-kafka %s%s: %d records of %d B in %.2f s: %.0f records/s, %.1f MB/s; ack latency p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us; %d failed"
          % ("idempotent acks=all", " at %.0f records/s offered" % rate if rate else "", len(lat_us), value_bytes, secs, len(lat_us) / secs, len(lat_us) * value_bytes / secs / 1e6,
             pick(0.5), pick(0.99), pick(0.999), lat_us[-1], failed[0]))


if __name__ == "__main__":
    main(*sys.argv[1:])
