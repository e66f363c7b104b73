"""A Cyclone DDS participant speaking Wallance topics, using only the IDL types.

Run by host/dds/tests/interop.rs inside its private network namespace:

    python cyclone_peer.py '<share json>' <n_votes>

1. publishes the given Share (fields as JSON, byte arrays as hex) on
   wallance_sync (member 7 of the union SyncMessage) once a Rust reader is
   matched, and again every second;
2. reads wallance_consensus until n_votes distinct votes (member 1) and a
   certificate (member 2) arrived (the Rust side sends them again every
   half second, as the protocol re-sends);
3. prints one JSON line per received sample, then DONE.
"""

import json
import os
import sys
import time

# Loopback only, before cyclonedds loads its configuration.
os.environ["CYCLONEDDS_URI"] = (
    "<CycloneDDS><Domain><General><Interfaces>"
    '<NetworkInterface name="lo" multicast="true"/>'
    "</Interfaces><AllowMulticast>true</AllowMulticast></General></Domain></CycloneDDS>"
)

from cyclonedds.core import Policy, Qos  # noqa: E402
from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402

from wallance_types import (  # noqa: E402
    Certificate,
    Consensus,
    Share,
    Sync,
    SyncMessage,
    Vote,
)


def hx(octets):
    return bytes(octets).hex()


def main():
    share_in = json.loads(sys.argv[1])
    n_votes = int(sys.argv[2])
    deadline = time.monotonic() + 30

    dp = DomainParticipant(0)
    # As the IDL says: best effort and volatile on every topic (a reader
    # asking for reliable delivery would not match the Wallance writers).
    best_effort = Policy.Reliability.BestEffort
    # The IDL says XCDR1; Cyclone's Python writers default to XCDR2.
    xcdr1 = Policy.DataRepresentation(use_cdrv0_representation=True)
    volatile = Qos(best_effort, Policy.Durability.Volatile, Policy.History.KeepAll, xcdr1)

    share_writer = DataWriter(dp, Topic(dp, "wallance_sync", Sync), qos=volatile)
    consensus_reader = DataReader(
        dp, Topic(dp, "wallance_consensus", Consensus), qos=volatile
    )

    while not share_writer.get_matched_subscriptions():
        if time.monotonic() > deadline:
            print("ERROR no Rust share reader matched", flush=True)
            return 1
        time.sleep(0.01)
    share = Sync(
        SyncMessage(
            discriminator=7,
            value=Share(
                sender=list(bytes.fromhex(share_in["sender"])),
                seq=share_in["seq"],
                time_ms=share_in["time_ms"],
                topic=share_in["topic"],
                value=share_in["value"],
                sig=list(bytes.fromhex(share_in["sig"])),
            ),
        )
    )
    share_writer.write(share)
    print(json.dumps({"kind": "share_sent"}), flush=True)
    # Wallance readers take shares best effort and repair gaps by ShareFetch,
    # which this peer does not answer: it writes the share again every
    # second instead, in case the Rust reader had not matched this writer yet.
    last_share = time.monotonic()

    # The Rust side re-sends its votes and certificate until this peer exits,
    # as the protocol does: each vote is printed once.
    votes = set()
    certs = 0
    while (len(votes) < n_votes or certs < 1) and time.monotonic() < deadline:
        taken = [s.msg.value for s in consensus_reader.take(N=1000)]
        for v in (m for m in taken if isinstance(m, Vote)):
            if v.remaining in votes:
                continue
            votes.add(v.remaining)
            print(
                json.dumps(
                    {
                        "kind": "vote",
                        "voter": hx(v.voter),
                        "request_id": hx(v.request_id),
                        "remaining": v.remaining,
                        "nonce": v.nonce,
                        "sig": hx(v.sig),
                    }
                )
            )
        for c in (m for m in taken if isinstance(m, Certificate)):
            certs += 1
            if certs > 1:
                continue
            print(
                json.dumps(
                    {
                        "kind": "certificate",
                        "requester": hx(c.request.requester),
                        "service": c.request.service,
                        "price": c.request.price,
                        "params": [[p.key, bytes(p.value).decode()] for p in c.request.params],
                        "remaining": c.remaining,
                        "votes": [[cv.voter_idx, cv.nonce, hx(cv.sig)] for cv in c.votes],
                        "provider_sig": hx(c.provider_sig),
                    }
                )
            )
        if time.monotonic() - last_share > 1:
            share_writer.write(share)
            last_share = time.monotonic()
        time.sleep(0.005)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
