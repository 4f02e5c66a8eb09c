"""kafka-python and confluent-kafka over SASL/PLAIN against Strom's Kafka
listener with authentication on (issue 16). Run by tests/auth.rs:
`python sasl.py COMMAND BOOTSTRAP USER PASSWORD TOPIC [COUNT]`. Prints what
it saw, one fact a line; the Rust test checks it.
"""
import sys

DEADLINE_S = 60


def kp_conf(bootstrap, user, password):
    return dict(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                sasl_plain_username=user, sasl_plain_password=password)


def kp_produce(bootstrap, user, password, topic, count):
    """COUNT records v{i}; prints `produced N`, or `error NAME` for the
    first failure (a refused login or a missing permission)."""
    from kafka import KafkaProducer
    try:
        p = KafkaProducer(request_timeout_ms=20000, max_block_ms=20000, **kp_conf(bootstrap, user, password))
        futures = [p.send(topic, value=b"v%d" % i) for i in range(int(count))]
        p.flush(timeout=DEADLINE_S)
        for f in futures:
            f.get(timeout=DEADLINE_S)
        p.close()
        print("produced %d" % int(count))
    except Exception as e:  # the test checks which
        print("error %s" % type(e).__name__)


def kp_consume(bootstrap, user, password, topic, count):
    """Reads COUNT records from the start of partition 0; prints each value."""
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(auto_offset_reset="earliest", consumer_timeout_ms=20000, **kp_conf(bootstrap, user, password))
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    seen = 0
    for m in c:
        print("value %s" % m.value.decode())
        seen += 1
        if seen == int(count):
            break
    c.close()


def ck_produce(bootstrap, user, password, topic, count):
    """confluent-kafka (librdkafka 2.16), idempotent: COUNT records v{i};
    prints `delivered N`, then `error NAME` per failed delivery kind."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
                  "sasl.username": user, "sasl.password": password, "enable.idempotence": True,
                  "message.timeout.ms": 30000})
    delivered = [0]
    errors = set()

    def done(err, _msg):
        if err is None:
            delivered[0] += 1
        else:
            errors.add(err.name())

    for i in range(int(count)):
        p.produce(topic, value=b"v%d" % i, on_delivery=done)
        p.poll(0)
    p.flush(DEADLINE_S)
    print("delivered %d" % delivered[0])
    for e in sorted(errors):
        print("error %s" % e)


if __name__ == "__main__":
    {"kp-produce": kp_produce, "kp-consume": kp_consume, "ck-produce": ck_produce}[sys.argv[1]](*sys.argv[2:])
