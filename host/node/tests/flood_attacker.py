"""A replaying, mutating non-member on every Wallance topic (Eclipse Cyclone DDS).

Run by host/node/tests/flood.rs inside its private network namespace:

    python flood_attacker.py <domain> <flood_seconds> <target_rate_per_s>

1. joins the domain with a reader and a writer on both topics (types from
   host/dds/idl/wallance.idl only: interop/wallance_types.py) and prints
   {"event": "ready"};
2. records every sample it sees until a line "flood" arrives on stdin (at
   most 300 per message kind, at most 120 s);
3. builds its replay set: each recorded sample as is, and mutated copies
   (a flipped signature byte, a changed integer field - version, remaining,
   price, seq, time -, fetch ranges with first > last or 0..2^64-1, `to_id`
   pointing at another member), serializes them once, and prints
   {"event": "recorded", ...};
4. writes them round-robin (shuffled, fixed seed) at `target_rate_per_s` for
   `flood_seconds`, one {"event": "tick"} line per second, then
   {"event": "done", ...} with the achieved rate, and exits.

It never signs anything: it holds no key. Every loop is bounded in time.
"""

import copy
import json
import os
import random
import sys
import threading
import time

# Loopback only, before cyclonedds loads its configuration.
os.environ["CYCLONEDDS_URI"] = (
    "<CycloneDDS><Domain><General><Interfaces>"
    '<NetworkInterface name="lo" multicast="true"/>'
    "</Interfaces><AllowMulticast>true</AllowMulticast></General></Domain></CycloneDDS>"
)

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../dds/interop")
)

from cyclonedds.core import DDSException, Policy, Qos  # noqa: E402
from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402
from cyclonedds.util import duration  # noqa: E402

from wallance_types import (  # noqa: E402
    Announce,
    CertFetch,
    Certificate,
    Consensus,
    ConsensusMessage,
    Heads,
    HeadsRequest,
    Outcome,
    Request,
    Share,
    ShareFetch,
    Sync,
    SyncDigest,
    SyncMessage,
    Vote,
)

try:  # write pre-serialized samples: the flood measures the node, not Python
    from cyclonedds._clayer import ddspy_write
except ImportError:  # pragma: no cover
    ddspy_write = None


U64_MAX = 2**64 - 1

# (topic, type, reliable, transient_local) as in the IDL's QoS table: every
# topic best effort and volatile (a reliable reader would not match).
TOPICS = [
    ("wallance_consensus", Consensus, False, False),
    ("wallance_sync", Sync, False, False),
]

MAX_RECORDED_PER_KIND = 300
MAX_RECORD_SECONDS = 120


def emit(obj):
    print(json.dumps(obj), flush=True)


def flip(octets, at=7):
    b = list(octets)
    b[at % len(b)] ^= 0x40
    return b


def changed(sample, **fields):
    c = copy.deepcopy(sample)
    for k, v in fields.items():
        setattr(c, k, v)
    return c


def changed_request(cert, **fields):
    c = copy.deepcopy(cert)
    for k, v in fields.items():
        setattr(c.request, k, v)
    return c


def other(ids, mine):
    """Another member's ID than `mine` (a `to` field pointing elsewhere)."""
    for i in ids:
        if list(i) != list(mine):
            return list(i)
    return flip(mine, 0)


def mutations(s, ids):
    """Mutated copies of one recorded sample: (name, sample)."""
    # The member's mutations, each in the same union case.
    if isinstance(s, Sync):
        return [
            (name, Sync(SyncMessage(discriminator=s.msg.discriminator, value=m)))
            for name, m in mutations(s.msg.value, ids)
        ]
    if isinstance(s, Consensus):
        return [
            (name, Consensus(ConsensusMessage(discriminator=s.msg.discriminator, value=m)))
            for name, m in mutations(s.msg.value, ids)
        ]
    if isinstance(s, Share):
        return [
            ("sig", changed(s, sig=flip(s.sig))),
            ("seq", changed(s, seq=s.seq + 1)),
            ("time", changed(s, time_ms=s.time_ms + 1)),
        ]
    if isinstance(s, Request):
        return [
            ("sig", changed(s, sig=flip(s.sig))),
            ("version", changed(s, version=s.version + 1)),
            ("price", changed(s, price=s.price * 2 + 1)),
        ]
    if isinstance(s, Vote):
        return [
            ("sig", changed(s, sig=flip(s.sig))),
            ("remaining", changed(s, remaining=s.remaining + 1)),
            ("remaining_max", changed(s, remaining=U64_MAX)),
        ]
    if isinstance(s, Certificate):
        out = [
            ("sig", changed(s, provider_sig=flip(s.provider_sig))),
            ("remaining", changed(s, remaining=s.remaining + 1)),
            ("version", changed_request(s, version=s.request.version + 1)),
            ("price", changed_request(s, price=s.request.price + 1)),
        ]
        if s.votes:
            c = copy.deepcopy(s)
            c.votes[0].sig = flip(c.votes[0].sig)
            out.append(("vote_sig", c))
        return out
    if isinstance(s, Announce):
        out = [
            ("sig", changed(s, sig=flip(s.sig))),
            ("seq", changed(s, seq=s.seq + 1)),
        ]
        if s.services:
            c = copy.deepcopy(s)
            c.services[0].price += 1
            out.append(("price", c))
        return out
    if isinstance(s, Outcome):
        return [
            ("sig", changed(s, sig=flip(s.sig))),
            ("version", changed(s, version=s.version + 1)),
            ("ok", changed(s, ok=not s.ok)),
        ]
    if isinstance(s, SyncDigest):
        return [
            ("sig", changed(s, sig=flip(s.sig))),
            ("time", changed(s, time_ms=s.time_ms + 1)),
        ]
    if isinstance(s, HeadsRequest):
        return [
            ("sig", changed(s, sig=flip(s.sig))),
            ("to", changed(s, to_id=other(ids, s.to_id))),
            ("time", changed(s, time_ms=s.time_ms + 1)),
        ]
    if isinstance(s, Heads):
        out = [
            ("sig", changed(s, sig=flip(s.sig))),
            ("to", changed(s, to_id=other(ids, s.to_id))),
        ]
        if s.heads:
            c = copy.deepcopy(s)
            c.heads[0].version += 1
            out.append(("version", c))
        return out
    if isinstance(s, CertFetch):
        return [
            ("sig", changed(s, sig=flip(s.sig))),
            ("to", changed(s, to_id=other(ids, s.to_id))),
            (
                "first_gt_last",
                changed(s, first_version=s.last_version + 1, last_version=s.first_version),
            ),
            ("huge_range", changed(s, first_version=0, last_version=U64_MAX)),
        ]
    if isinstance(s, ShareFetch):
        return [
            ("sig", changed(s, sig=flip(s.sig))),
            ("to", changed(s, to_id=other(ids, s.to_id))),
            ("first_gt_last", changed(s, first_seq=s.last_seq + 1, last_seq=s.first_seq)),
            ("huge_range", changed(s, first_seq=0, last_seq=U64_MAX)),
        ]
    return []


def main():
    domain = int(sys.argv[1])
    flood_seconds = float(sys.argv[2])
    target_rate = float(sys.argv[3])

    dp = DomainParticipant(domain)
    xcdr1 = Policy.DataRepresentation(use_cdrv0_representation=True)
    readers, writers = {}, {}
    for name, typ, reliable, transient in TOPICS:
        rel = (
            Policy.Reliability.Reliable(duration(milliseconds=50))
            if reliable
            else Policy.Reliability.BestEffort
        )
        dur = Policy.Durability.TransientLocal if transient else Policy.Durability.Volatile
        topic = Topic(dp, name, typ)
        # The reader records and ignores this participant's own flood.
        readers[name] = DataReader(
            dp,
            topic,
            qos=Qos(rel, dur, Policy.History.KeepLast(1024), xcdr1,
                    Policy.IgnoreLocal.Participant),
        )
        # KeepLast: a writer never waits for slow readers' history.
        writers[name] = DataWriter(
            dp, topic, qos=Qos(rel, dur, Policy.History.KeepLast(64), xcdr1)
        )
    emit({"event": "ready"})

    go = threading.Event()
    gone = threading.Event()

    def control():
        for line in sys.stdin:
            if line.strip() == "flood":
                go.set()
                return
        gone.set()  # stdin closed: the test is over

    threading.Thread(target=control, daemon=True).start()

    # 1. Record.
    recorded = {name: [] for name, *_ in TOPICS}
    seen = {name: 0 for name, *_ in TOPICS}
    # Capped per message kind (union member), so shares do not crowd out
    # the rarer kinds that share their topic.
    per_member = {}
    started = time.monotonic()
    while not go.is_set():
        if gone.is_set() or time.monotonic() - started > MAX_RECORD_SECONDS:
            emit({"event": "error", "why": "no flood command"})
            return 1
        for name, reader in readers.items():
            for s in reader.take(N=256):
                seen[name] += 1
                member = type(s.msg.value).__name__
                if per_member.get(member, 0) < MAX_RECORDED_PER_KIND:
                    per_member[member] = per_member.get(member, 0) + 1
                    recorded[name].append(s)
        time.sleep(0.02)

    # 2. Build and serialize the replay set once.
    ids = []
    for s in recorded["wallance_sync"]:
        if isinstance(s.msg.value, Share) and list(s.msg.value.sender) not in ids:
            ids.append(list(s.msg.value.sender))
    entries = []  # (topic, kind, writer, CDR bytes, sample)
    for name, samples in recorded.items():
        w = writers[name]
        for s in samples:
            for kind, m in [("exact", s)] + mutations(s, ids):
                ser = m.serialize(use_version_2=False)
                ser = ser.ljust((len(ser) + 3) & ~3, b"\0")
                entries.append((name, kind, w, ser, m))
    random.Random(8).shuffle(entries)
    emit(
        {
            "event": "recorded",
            "seen": seen,
            "recorded": {k: len(v) for k, v in recorded.items()},
            "recorded_per_kind": per_member,
            "members_seen": len(ids),
            "replay_set": len(entries),
        }
    )
    if not entries:
        emit({"event": "error", "why": "nothing recorded"})
        return 1

    # 3. Flood.
    sent = failed = 0
    per_topic = {name: 0 for name, *_ in TOPICS}
    per_kind = {}
    t0 = time.monotonic()
    next_tick = 1.0
    last_sent = 0
    i = 0
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= flood_seconds:
            break
        if elapsed >= next_tick:
            emit({"event": "tick", "t": round(elapsed, 2), "sent": sent,
                  "rate": sent - last_sent, "failed": failed})
            last_sent = sent
            next_tick += 1.0
        due = min(int(elapsed * target_rate) - sent - failed, 500)
        if due <= 0:
            time.sleep(0.001)
            continue
        for _ in range(due):
            name, kind, w, ser, m = entries[i % len(entries)]
            i += 1
            try:
                if ddspy_write is not None:
                    ret = ddspy_write(w._ref, ser)
                    if ret < 0:
                        raise DDSException(ret, "write")
                else:
                    w.write(m)
                sent += 1
                per_topic[name] += 1
                per_kind[kind] = per_kind.get(kind, 0) + 1
            except DDSException:
                failed += 1  # a reliable writer waited 50 ms for acks: go on
    seconds = time.monotonic() - t0
    emit(
        {
            "event": "done",
            "seconds": round(seconds, 2),
            "sent": sent,
            "failed": failed,
            "rate": round(sent / seconds),
            "per_topic": per_topic,
            "per_kind": per_kind,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
