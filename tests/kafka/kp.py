"""kafka-python 3.0 against Strom's Kafka listener, with the client's default
settings (acks=all, idempotence on; a consumer's only change is
auto_offset_reset='earliest', to read what was produced before it joined).

Run by tests/kafka_clients.rs: `python kp.py COMMAND BOOTSTRAP ARGS...`.
Each command prints what it saw on stdout, one fact a line, and the Rust test
checks it; a failure is an exception (exit status 1, the traceback on stderr).
"""
import json
import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError

# Every wait below ends as soon as its condition holds; this only bounds a
# hang so that the script reports one instead of waiting for the test's.
DEADLINE_S = 120


def produce(bootstrap, topic, count):
    """COUNT records keyed k{i} with value v{i}; prints the producer's
    effective settings, then `PARTITION OFFSET KEY VALUE` per record."""
    count = int(count)
    p = KafkaProducer(bootstrap_servers=bootstrap)
    print("config acks=%s enable_idempotence=%s api_version=%s"
          % (p.config["acks"], p.config["enable_idempotence"], ".".join(map(str, p.config["api_version"]))))
    futures = [(i, p.send(topic, key=b"k%d" % i, value=b"v%d" % i)) for i in range(count)]
    p.flush(timeout=DEADLINE_S)
    for i, f in futures:
        md = f.get(timeout=DEADLINE_S)
        print("%d %d k%d v%d" % (md.partition, md.offset, i, i))
    p.close()


def consumer(bootstrap, topic, group):
    return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest")


def group(bootstrap, topic, group_id, total):
    """Two members of GROUP in two threads read TOPIC until together they
    have seen TOTAL records and hold disjoint assignments; both commit and
    leave. Prints one JSON line: each member's partitions and values."""
    total = int(total)
    members = [consumer(bootstrap, topic, group_id) for _ in range(2)]
    seen = [[], []]
    lock = threading.Lock()
    stop = threading.Event()

    def run(m):
        c = members[m]
        while not stop.is_set():
            for records in c.poll(timeout_ms=200).values():
                with lock:
                    seen[m].extend(r.value.decode() for r in records)

    threads = [threading.Thread(target=run, args=(m,)) for m in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        with lock:
            union = set(seen[0]) | set(seen[1])
        a, b = (set(c.assignment()) for c in members)
        if len(union) >= total and a and b and not (a & b):
            break
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    out = []
    for m, c in enumerate(members):
        out.append({"partitions": sorted(tp.partition for tp in c.assignment()), "values": seen[m]})
        c.commit()
        c.close()
    print(json.dumps(out))


def resume(bootstrap, topic, group_id, count):
    """A later member of GROUP: reads COUNT records (from the group's
    commits), commits and leaves; prints each value."""
    count = int(count)
    c = consumer(bootstrap, topic, group_id)
    got = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < count and time.monotonic() < deadline:
        for records in c.poll(timeout_ms=200).values():
            got.extend(r.value.decode() for r in records)
    c.commit()
    c.close()
    for v in got:
        print(v)


def times(bootstrap, topic, base_ms):
    """100 records to partition 0 stamped BASE+10*i, then offsets_for_times
    for a few instants: prints `QUERY_MS OFFSET TIMESTAMP` (or `QUERY_MS none`)."""
    base_ms = int(base_ms)
    p = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(100):
        p.send(topic, value=b"t%d" % i, partition=0, timestamp_ms=base_ms + 10 * i)
    p.flush(timeout=DEADLINE_S)
    p.close()
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    tp = TopicPartition(topic, 0)
    for q in (base_ms - 1, base_ms, base_ms + 55, base_ms + 990, base_ms + 10_000):
        r = c.offsets_for_times({tp: q})[tp]
        print("%d %s" % (q, "none" if r is None else "%d %d" % (r.offset, r.timestamp)))
    print("beginning %d end %d" % (c.beginning_offsets([tp])[tp], c.end_offsets([tp])[tp]))
    c.close()


def admin(bootstrap, topic):
    """create_topics (twice: the second is refused), list_topics,
    describe_configs, delete_topics, list_topics: prints each step."""
    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    print("created")
    try:
        a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        print("created twice")
    except TopicAlreadyExistsError:
        print("exists")
    print("listed %s" % (topic in a.list_topics()))
    described = a.describe_topics([topic])
    print("partitions %d" % len(described[0]["partitions"]))
    # {resource type: {resource name: {config key: data}}}
    configs = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    named = [byname[topic] for byname in configs.values() if topic in byname]
    print("configs %s" % bool(named))
    print("keys %s" % ",".join(sorted(k for c in named for k in c)), file=sys.stderr)
    a.delete_topics([topic])
    print("deleted")
    print("listed %s" % (topic in a.list_topics()))
    a.close()


if __name__ == "__main__":
    {"produce": produce, "group": group, "resume": resume, "times": times, "admin": admin}[sys.argv[1]](*sys.argv[2:])
