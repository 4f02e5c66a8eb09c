"""confluent-kafka (librdkafka 2.16) against Strom's Kafka listener.

Run by tests/kafka_clients.rs: `python ck.py COMMAND BOOTSTRAP ARGS...`.
Prints what it saw on stdout, one fact a line, flushed at once (the crash
test reads deliveries while the script runs); the Rust test checks it.
"""
import select
import sys
import time

from confluent_kafka import Consumer, Producer

# Bounds a hang only: every wait ends as soon as its condition holds. The
# producer's own bound is its default message.timeout.ms (300 s).
DEADLINE_S = 120


def produce(bootstrap, topic, count, pause_at=None):
    """COUNT records, value `SEQ` and key k{SEQ}, with enable.idempotence:
    prints `delivered SEQ PARTITION OFFSET` per successful delivery report and
    `failed SEQ ERROR` per failed one, then `done N left`. With PAUSE_AT, it
    stops handing records over after that many (serving delivery reports)
    until a line arrives on stdin: the crash test kills the server then, so
    the kill always falls in the middle of the run."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})

    def report(err, msg):
        seq = msg.value().decode()
        if err is None:
            print("delivered %s %d %d" % (seq, msg.partition(), msg.offset()), flush=True)
        else:
            print("failed %s %s" % (seq, err), flush=True)

    for i in range(int(count)):
        if pause_at is not None and i == int(pause_at):
            while not select.select([sys.stdin], [], [], 0)[0]:
                p.poll(0.1)
            sys.stdin.readline()
        while True:
            try:
                p.produce(topic, value=b"%d" % i, key=b"k%d" % i, on_delivery=report)
                break
            except BufferError:
                # The local queue is full (the broker is away): wait for reports.
                p.poll(0.1)
        p.poll(0)
    left = p.flush(300)
    print("done %d left" % left, flush=True)


def consume(bootstrap, topic, group, count):
    """A group consumer reads COUNT records (or stops at the deadline),
    commits and closes: prints each value."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < int(count) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            print("error %s" % m.error(), file=sys.stderr)
            continue
        got.append(m.value().decode())
    if got:
        # A commit with nothing consumed is refused by the client (_NO_OFFSET).
        c.commit(asynchronous=False)
    c.close()
    for v in got:
        print(v)


if __name__ == "__main__":
    {"produce": produce, "consume": consume}[sys.argv[1]](*sys.argv[2:])
